"""Test-time augmentation as in S3FD's WIDER FACE test code; every part can be switched on alone.

* ``flip``: the image mirrored left-right at the base scale, boxes mirrored back.
* ``multi_scale``: S3FD's shrink and enlarge policy (:func:`scale_plan`). With
  ``max_shrink = sqrt(scale_pixels / (H * W))`` (``scale_pixels`` = 1700 x 1200, S3FD's memory
  budget): a *shrunk* pass at ``st = 0.5`` (``0.5 * max_shrink`` when ``max_shrink < 0.75``) keeps
  only boxes whose longer side is > 30 px (original pixels); *enlarged* passes at
  ``bt = min(2, max_shrink)`` (``(st + max_shrink) / 2`` when ``max_shrink <= 1``), then, when
  ``max_shrink > 2``, at ``4, 8, ...`` while below ``max_shrink`` and at ``max_shrink`` itself; if
  the last ``bt > 1`` they keep only boxes whose shorter side is < 100 px, else only boxes whose
  longer side is > 30 px.
* ``vote``: S3FD's box voting (:func:`box_vote`) instead of a final NMS over the merged passes.

The base pass (the single-scale input policy) always runs. Each pass is post-processed alone
(threshold, top-k, NMS); the merged boxes then go through box voting or NMS, and the top ``top_k``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou, nms

__all__ = ["TTAConfig", "TTAPass", "scale_plan", "box_vote", "merge_passes"]

S3FD_SCALE_PIXELS = 1700 * 1200


@dataclass(frozen=True)
class TTAConfig:
    flip: bool = False
    multi_scale: bool = False
    vote: bool = False
    vote_iou: float = 0.3  # S3FD's bbox_vote overlap
    scale_pixels: int = S3FD_SCALE_PIXELS
    shrink_min_side: float = 30.0  # shrunk passes keep boxes with max(w, h) > this
    enlarge_max_side: float = 100.0  # enlarged passes keep boxes with min(w, h) < this

    @property
    def enabled(self) -> bool:
        return self.flip or self.multi_scale or self.vote

    @classmethod
    def parse(cls, spec: TTAConfig | str | Sequence[str] | None) -> TTAConfig | None:
        """``None``/``""``/``"none"`` -> None; ``"all"`` -> every part; else a comma-separated
        (or listed) subset of ``flip``, ``scales`` (or ``multi_scale``), ``vote``."""
        if spec is None or isinstance(spec, TTAConfig):
            return spec if spec is None or spec.enabled else None
        parts = spec.split(",") if isinstance(spec, str) else list(spec)
        parts = [p.strip().lower() for p in parts if p.strip()]
        if not parts or parts == ["none"]:
            return None
        if parts == ["all"]:
            return cls(flip=True, multi_scale=True, vote=True)
        known = {
            "flip": "flip", "vote": "vote", "scales": "multi_scale", "multi_scale": "multi_scale",
            "multiscale": "multi_scale",
        }
        unknown = [p for p in parts if p not in known]
        if unknown:
            raise ValueError(f"unknown TTA part(s) {unknown}; choose from flip, scales, vote, all, none")
        return cls(**{known[p]: True for p in parts})

    def describe(self) -> str:
        on = [n for n, v in (("flip", self.flip), ("scales", self.multi_scale), ("vote", self.vote)) if v]
        return ",".join(on) or "none"


@dataclass(frozen=True)
class TTAPass:
    """One forward pass: the image scaled by ``scale`` (``None``: the base input policy),
    mirrored when ``flip``, its boxes kept by ``keep`` ("all", "large" = max side > 30,
    "small" = min side < 100)."""

    scale: float | None
    flip: bool = False
    keep: str = "all"


def scale_plan(height: int, width: int, cfg: TTAConfig) -> list[TTAPass]:
    """The passes of S3FD's test procedure for an image of ``height x width`` (see the module doc)."""
    passes = [TTAPass(None)]
    if cfg.flip:
        passes.append(TTAPass(None, flip=True))
    if cfg.multi_scale:
        max_shrink = math.sqrt(cfg.scale_pixels / float(height * width))
        st = 0.5 if max_shrink >= 0.75 else 0.5 * max_shrink
        passes.append(TTAPass(st, keep="large"))
        bt = min(2.0, max_shrink) if max_shrink > 1 else (st + max_shrink) / 2
        enlarged = [bt]
        if max_shrink > 2:
            bt *= 2
            while bt < max_shrink:
                enlarged.append(bt)
                bt *= 2
            enlarged.append(max_shrink)
        keep = "small" if bt > 1 else "large"
        passes.extend(TTAPass(s, keep=keep) for s in enlarged)
    return passes


def filter_boxes(boxes: Tensor, scores: Tensor, keep: str, cfg: TTAConfig) -> tuple[Tensor, Tensor]:
    """Apply a pass's size filter (box sides in original pixels)."""
    if keep == "all" or boxes.numel() == 0:
        return boxes, scores
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    if keep == "large":
        m = torch.maximum(w, h) > cfg.shrink_min_side
    elif keep == "small":
        m = torch.minimum(w, h) < cfg.enlarge_max_side
    else:
        raise ValueError(f"unknown keep rule {keep!r}")
    return boxes[m], scores[m]


def box_vote(boxes: Tensor, scores: Tensor, iou: float = 0.3) -> tuple[Tensor, Tensor]:
    """S3FD's box voting: repeatedly take the best remaining box and every remaining box that
    overlaps it with IoU >= ``iou``; replace them by their score-weighted mean box with the
    highest score. Deviation: a box with no partner is kept (S3FD drops it), so voting alone
    never loses a detection. Returns boxes and scores sorted by descending score.
    """
    if boxes.numel() == 0:
        return boxes.reshape(0, 4), scores.reshape(0)
    order = torch.argsort(scores, descending=True, stable=True)
    boxes, scores = boxes[order].double(), scores[order].double()
    alive = torch.ones(len(scores), dtype=torch.bool)
    out_boxes, out_scores = [], []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        group = alive & (box_iou(boxes[i : i + 1], boxes)[0] >= iou)
        group[i] = True
        w = scores[group]
        out_boxes.append((boxes[group] * w[:, None]).sum(0) / w.sum())
        out_scores.append(w.max())
        alive &= ~group
    return torch.stack(out_boxes).float(), torch.stack(out_scores).float()


def merge_passes(
    per_pass: list[tuple[Tensor, Tensor]], cfg: TTAConfig, nms_iou: float, top_k: int
) -> tuple[Tensor, Tensor]:
    """Concatenate the passes' boxes, then box voting (``cfg.vote``) or NMS, then the top ``top_k``."""
    boxes = torch.cat([b.reshape(-1, 4).float() for b, _ in per_pass])
    scores = torch.cat([s.reshape(-1).float() for _, s in per_pass])
    if cfg.vote:
        boxes, scores = box_vote(boxes, scores, cfg.vote_iou)
        return boxes[:top_k], scores[:top_k]
    kept = nms(boxes, scores, nms_iou)[:top_k]
    return boxes[kept], scores[kept]
