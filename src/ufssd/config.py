"""Typed configuration: frozen dataclasses whose defaults come from ``docs/paper-notes`` (shared).

This module is the lowest layer of the package: pure Python, no torch. Every ``[choice]`` of the
paper notes is a field here, so a user can try the alternative. A complete detector is described
by one :class:`DetectorConfig`; named presets live in :mod:`ufssd.presets`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AnchorConfig:
    """One square anchor per feature-map cell (S3FD)."""

    strides: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    sides: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
    variances: tuple[float, float] = (0.1, 0.2)
    # decode clamps the log-size term *after* the variance: 0.2 * t_wh <= log(1000 / 16)
    max_log_size: float = math.log(1000.0 / 16.0)
    # inputs are zero-padded bottom/right to a multiple of this (the coarsest stride)
    pad_multiple: int = 128


@dataclass(frozen=True)
class MatchConfig:
    """S3FD two-stage matching with scale compensation."""

    positive_iou: float = 0.35  # stage 1: IoU >= this is positive
    min_iou: float = 0.1  # forced best anchor and stage-2 candidates need IoU > this
    scale_compensation: bool = True  # stage 2 on/off
    ignore_iou: float = 0.35  # anchors with IoU >= this to an ignored face are neither pos nor neg


@dataclass(frozen=True)
class GTMaskConfig:
    """Ground-truth masks for FFMM (Eq. 3 and the square-box IoU rule)."""

    mode: str = "anchor"  # "anchor": anchor side x anchor_scales; "rf": sides from s_l to rf_sides[l]
    anchor_scales: tuple[float, ...] = (0.5, 0.71, 1.0, 1.41, 2.0)
    rf_sides: tuple[float, ...] = (48.0, 108.0, 228.0, 340.0, 468.0, 724.0)
    rf_steps: int = 5  # number of square sides, evenly spaced, in "rf" mode
    iou_threshold: float = 1e-3  # Th_GT: G = 1 iff some square has IoU > this with a face
    ignored_faces_count: bool = True  # ignored faces mark mask cells too


@dataclass(frozen=True)
class ModelConfig:
    """The network: backbone, FEM, FFMM, MCDM and heads."""

    backbone: str = "vgg16"  # "vgg16" | "resnet152" | "light"
    batch_norm: bool = True  # BatchNorm after each backbone conv (training from scratch)
    pretrained: str | None = None  # local path of ImageNet weights for the backbone, or None
    # per-backbone width knob; () means the backbone's own default channels
    channels: tuple[int, ...] = ()
    # light backbone only (docs/model.md, "v4 candidates"): stride-1 blocks per level (() = the
    # backbone's LIGHT_BLOCKS), the levels that receive the top-down fusion from the next coarser
    # level ((0, 1, 2, 3, 4) = a full FPN top-down path), and a PAN bottom-up path over the same
    # edges after it (level l, downsampled, added into level l + 1)
    light_blocks: tuple[int, ...] = ()
    light_topdown: tuple[int, ...] = (0, 1)
    light_bottomup: bool = False
    l2norm_scales: tuple[float, ...] = (10.0, 8.0, 5.0)  # VGG-16: conv3_3, conv4_3, conv5_3
    # FEM (Fig. 3): levels that get an enhanced map ef_l; () = no FEM
    fem_levels: tuple[int, ...] = ()
    fem_channels: int = 256
    fem_dilations: tuple[int, ...] = (1, 2, 3)
    fem_upsample: str = "bilinear"
    # FFMM (Eqs. 1-2): masked levels; () = no FFMM; (0,) = "x1"; (0..5) = "x6"
    ffmm_levels: tuple[int, ...] = ()
    mask_threshold: float = 1e-2  # Th_Mask
    # MCDM (Sec. 3.3): "none" | "drop" | "gt-mask" | "gt-mask-ffmm"
    mcdm_mode: str = "none"
    mcdm_eta: float = 0.10
    mcdm_levels: tuple[int, ...] = (0,)  # "MCDM-B": behind ef_160
    # heads: level 0 predicts this many background logits and takes their max (S3FD max-out)
    maxout_background: int = 3
    # levels whose head is depthwise 3x3 (+ BN + ReLU) then 1x1 instead of a dense 3x3 [choice]
    # (docs/model.md, "v4 candidates"); () = the paper's heads
    separable_head_levels: tuple[int, ...] = ()
    # input normalisation: RGB in [0, 1], then (x - mean) / std
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


# the loss kinds LossConfig takes (ufssd.losses implements each; tests/test_losses.py checks that)
BOX_LOSS_KINDS = ("smooth_l1", "giou", "diou", "ciou")
CLS_LOSS_KINDS = ("ce", "qfl")


@dataclass(frozen=True)
class LossConfig:
    """L = lambda1 * L_mask + lambda2 * L_C+L (Eqs. 4-5).

    The loss kinds are checked here, once, when the config is made (a preset, ``--set``, a
    checkpoint's config): ``ValueError`` naming the unknown kind.
    """

    lambda_mask: float = 1.0  # lambda1
    lambda_det: float = 1.0  # lambda2
    lambda_conf: float = 4.0  # lambda3
    neg_pos_ratio: int = 3  # hard negative mining
    min_negatives: int = 16  # per image with no face
    mask_reduction: str = "mean"  # "mean" over cells of each level, summed over levels | "sum"
    # box term of Eq. 5 (docs/boxes.md): "smooth_l1" (the paper) on the encoded deltas, or an IoU
    # loss ("giou" | "diou" | "ciou", torchvision.ops) on the decoded boxes; weighted by lambda_loc
    box_loss: str = "smooth_l1"
    lambda_loc: float = 1.0
    # class term of Eq. 5: "ce" (the paper: softmax CE over positives and hard-mined negatives) or
    # "qfl" (quality focal loss, GFL/SCRFD: every anchor, the face target is the IoU of the
    # predicted box with its face, so scores follow box quality and easy negatives learn ~0)
    cls_loss: str = "ce"
    qfl_beta: float = 2.0

    def __post_init__(self) -> None:
        if self.box_loss not in BOX_LOSS_KINDS:
            raise ValueError(f"unknown box loss {self.box_loss!r}; expected one of {BOX_LOSS_KINDS}")
        if self.cls_loss not in CLS_LOSS_KINDS:
            raise ValueError(f"unknown class loss {self.cls_loss!r}; expected one of {CLS_LOSS_KINDS}")


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe (paper notes section 6)."""

    iters: int = 200_000
    batch_size: int = 32  # total over all processes; lr scales linearly from base_batch_size
    base_batch_size: int = 32
    lr: float = 1e-3
    lr_milestones: tuple[float, ...] = (0.5, 0.75, 0.9)  # fractions of iters
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 1000
    resolution: int = 640  # square training input side
    crop_min: float = 0.3
    crop_max: float = 1.0
    crop_retries: int = 50
    flip_p: float = 0.5
    photometric: bool = True
    min_face_px: float = 4.0  # after the resize, smaller faces become "ignore"
    amp: str = "bf16"  # CUDA only: "bf16" | "fp16" | "none"
    seed: int = 0
    checkpoint_every: int = 1000


@dataclass(frozen=True)
class InferenceConfig:
    """Post-processing defaults (conventions: inference)."""

    score_threshold: float = 0.5  # user default; chosen on the dev slice for a trained model
    eval_score_threshold: float = 0.01  # for WIDER prediction files
    nms_iou: float = 0.3
    pre_nms_top_k: int = 5000
    top_k: int = 750
    max_pixels: int = 4096 * 4096  # larger inputs are downscaled to this many pixels
    skip_masked_anchors: bool = False  # drop anchors of FFMM cells with B = 0 before top-k/NMS
    # > 0: Gaussian Soft-NMS with this sigma instead of NMS at nms_iou (off: conventions' NMS 0.3)
    soft_nms_sigma: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.soft_nms_sigma) and self.soft_nms_sigma >= 0):
            raise ValueError(f"soft_nms_sigma must be >= 0 (0: plain NMS), got {self.soft_nms_sigma}")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines a detector and how it is trained and run: what a preset names."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    gt_mask: GTMaskConfig = field(default_factory=GTMaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    @property
    def num_levels(self) -> int:
        return len(self.anchors.strides)


# ---------------------------------------------------------------------------------------------
# (de)serialisation: plain dicts / JSON, lists turned back into tuples


def config_to_dict(cfg: Any) -> dict:
    """A nested plain dict (JSON-safe) of a config dataclass."""
    return dataclasses.asdict(cfg)


def _from_dict(cls: type, data: dict) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"unknown field(s) for {cls.__name__}: {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        sub = _NESTED.get((cls, name))
        if sub is not None:
            kwargs[name] = _from_dict(sub, value)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


_NESTED: dict[tuple[type, str], type] = {
    (DetectorConfig, "model"): ModelConfig,
    (DetectorConfig, "anchors"): AnchorConfig,
    (DetectorConfig, "match"): MatchConfig,
    (DetectorConfig, "gt_mask"): GTMaskConfig,
    (DetectorConfig, "loss"): LossConfig,
    (DetectorConfig, "train"): TrainConfig,
    (DetectorConfig, "inference"): InferenceConfig,
}


def config_from_dict(data: dict) -> DetectorConfig:
    """Inverse of :func:`config_to_dict` for a :class:`DetectorConfig`."""
    return _from_dict(DetectorConfig, data)


def config_to_json(cfg: DetectorConfig) -> str:
    return json.dumps(config_to_dict(cfg), sort_keys=True)


def config_from_json(text: str) -> DetectorConfig:
    return config_from_dict(json.loads(text))
