"""The network, :class:`UFSSD` (an ``nn.Module``): backbone -> [FEM] -> [MCDM] -> [FFMM] -> heads,
returning raw tensors; :func:`build_model` builds it from a preset or config.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ufssd.config import DetectorConfig, ModelConfig
from ufssd.model.backbones import NUM_LEVELS, build_backbone, load_pretrained
from ufssd.model.heads import LevelHead
from ufssd.model.modules import FEM, FFMM, MCDM, MCDM_MODES
from ufssd.presets import resolve_config


class RawOutput(NamedTuple):
    """What :class:`UFSSD` returns; ``A = sum_l H_l * W_l``, level 0 first, cells row-major."""

    cls_logits: Tensor  # (N, A, 2): channel 0 background, 1 face
    box_deltas: Tensor  # (N, A, 4)
    mask_logits: tuple[Tensor, ...]  # one (N, 2, H_l, W_l) per level in config.model.ffmm_levels


def validate_model_config(cfg: DetectorConfig) -> None:
    """Raise ValueError for a model config the detector cannot build."""
    m: ModelConfig = cfg.model
    if len(cfg.anchors.strides) != NUM_LEVELS:
        raise ValueError(f"the detector has {NUM_LEVELS} levels, anchors.strides has {len(cfg.anchors.strides)}")
    for field in ("fem_levels", "ffmm_levels", "mcdm_levels", "separable_head_levels"):
        levels = getattr(m, field)
        bad = [l for l in levels if not 0 <= l < NUM_LEVELS]
        if bad or len(set(levels)) != len(levels):
            raise ValueError(f"ModelConfig.{field} must be distinct levels in 0..{NUM_LEVELS - 1}, got {levels!r}")
    if m.mcdm_mode not in MCDM_MODES:
        raise ValueError(f"ModelConfig.mcdm_mode must be one of {MCDM_MODES}, got {m.mcdm_mode!r}")
    if m.mcdm_mode == "gt-mask-ffmm":
        missing = [l for l in m.mcdm_levels if l not in m.ffmm_levels]
        if missing:
            raise ValueError(f"mcdm_mode 'gt-mask-ffmm' needs FFMM on its levels; no FFMM on level(s) {missing}")
    if not 0.0 < m.mask_threshold < 1.0:
        raise ValueError(f"ModelConfig.mask_threshold must be in (0, 1), got {m.mask_threshold}")
    if len(m.mean) != 3 or len(m.std) != 3 or any(s <= 0 for s in m.std):
        raise ValueError(f"ModelConfig.mean/std need 3 values (std > 0), got {m.mean!r} / {m.std!r}")


class UFSSD(nn.Module):
    """UF-SSD: six levels, one anchor per cell; FEM, MCDM and FFMM on the configured levels.

    Per level l: backbone feature -> FEM (l in ``fem_levels``) -> MCDM (training, l in
    ``mcdm_levels``, ``gt_masks`` given) -> FFMM (l in ``ffmm_levels``) -> heads. With MCDM and
    FFMM on the same level, the FFMM mask conv reads the features *before* MCDM (so the mask
    predictor sees in training what it sees at test) and the heads get ``X * B * D`` (D = MCDM's
    multiplier); in ``gt-mask-ffmm`` mode D replaces B in training (``X * D``), B alone at test.
    """

    def __init__(self, config: DetectorConfig, load_pretrained_backbone: bool = True) -> None:
        super().__init__()
        validate_model_config(config)
        self.config = config
        m = config.model
        self.backbone = build_backbone(m)
        if m.pretrained and load_pretrained_backbone:
            load_pretrained(self.backbone, m.pretrained)
        bb_channels = tuple(self.backbone.out_channels)
        self.fem = nn.ModuleDict()
        for l in m.fem_levels:
            coarse = min(l + 1, NUM_LEVELS - 1)
            self.fem[str(l)] = FEM(
                bb_channels[l], bb_channels[coarse], m.fem_channels, m.fem_dilations, m.fem_upsample, m.batch_norm
            )
        channels = tuple(m.fem_channels if l in m.fem_levels else bb_channels[l] for l in range(NUM_LEVELS))
        self.ffmm = nn.ModuleDict({str(l): FFMM(channels[l], m.mask_threshold) for l in m.ffmm_levels})
        self.mcdm = MCDM(m.mcdm_mode, m.mcdm_eta) if m.mcdm_mode != "none" and m.mcdm_levels else None
        self.heads = nn.ModuleList(
            LevelHead(
                channels[l],
                m.maxout_background if l == 0 else 1,
                separable=l in m.separable_head_levels,
                batch_norm=m.batch_norm,
            )
            for l in range(NUM_LEVELS)
        )
        self.level_channels = channels

    def _check_inputs(self, images: Tensor, gt_masks: list[Tensor] | None) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) normalised RGB, got shape {tuple(images.shape)}")
        multiple = self.config.anchors.pad_multiple
        h, w = int(images.shape[2]), int(images.shape[3])
        if h % multiple or w % multiple:
            raise ValueError(
                f"image height and width must be multiples of {multiple} (pad with "
                f"ufssd.model.pad_to_multiple), got {h}x{w}"
            )
        if gt_masks is not None:
            levels = self.config.model.mcdm_levels
            if len(gt_masks) != len(levels):
                raise ValueError(f"gt_masks needs one (N, H_l, W_l) mask per MCDM level {levels}, got {len(gt_masks)}")
            for l, g in zip(levels, gt_masks):
                s = self.config.anchors.strides[l]
                expected = (images.shape[0], h // s, w // s)
                if tuple(g.shape) != expected:
                    raise ValueError(f"gt_masks for level {l} must have shape {expected}, got {tuple(g.shape)}")

    def forward(self, images: Tensor, gt_masks: list[Tensor] | None = None) -> RawOutput:
        """images: (N, 3, H, W) float, normalised, H and W multiples of ``anchors.pad_multiple``;
        gt_masks: one (N, H_l, W_l) {0, 1} per level in ``model.mcdm_levels`` (MCDM, training).

        Returns :class:`RawOutput` (cls_logits (N, A, 2), box_deltas (N, A, 4), mask_logits).
        """
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            self._check_inputs(images, gt_masks)
        m = self.config.model
        feats = self.backbone(images)
        mcdm_masks: dict[int, Tensor] = {}
        if self.mcdm is not None and self.training and gt_masks is not None:
            mcdm_masks = {l: g for l, g in zip(m.mcdm_levels, gt_masks)}
        cls_out, box_out, mask_out = [], [], []
        for l in range(NUM_LEVELS):
            x = feats[l]
            if l in m.fem_levels:
                x = self.fem[str(l)](x, feats[min(l + 1, NUM_LEVELS - 1)])
            d = self.mcdm.multiplier(mcdm_masks[l]).to(x.dtype) if l in mcdm_masks else None
            if l in m.ffmm_levels:
                replace = d is not None and m.mcdm_mode == "gt-mask-ffmm"
                x, logits = self.ffmm[str(l)](x, mask=d if replace else None)
                mask_out.append(logits.contiguous())
                if d is not None and not replace:
                    x = x * d
            elif d is not None:
                x = x * d
            cls, box = self.heads[l](x)
            cls_out.append(cls)
            box_out.append(box)
        return RawOutput(torch.cat(cls_out, dim=1), torch.cat(box_out, dim=1), tuple(mask_out))


def build_model(name_or_config: str | DetectorConfig) -> UFSSD:
    """A :class:`UFSSD` from a preset name (``ufssd.list_presets()``) or a DetectorConfig."""
    return UFSSD(resolve_config(name_or_config))
