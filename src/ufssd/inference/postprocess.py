"""Raw network outputs -> boxes and scores (paper notes section 7, conventions "Inference").

One function, :func:`postprocess`, serves every backend (PyTorch and onnxruntime): the ONNX graph
holds the raw network only, anchors and decoding stay here.

Per image: face score ``softmax(cls_logits)[..., 1]`` (computed as the sigmoid of the logit
difference, and thresholded on that difference, so only candidates are evaluated); drop anchors
below the score threshold
(and, with ``InferenceConfig.skip_masked_anchors``, anchors of FFMM cells whose mask ``B`` is 0);
keep the ``pre_nms_top_k`` (5,000) best; decode them against their anchors; NMS at IoU
``nms_iou`` (0.3, ``torchvision.ops.nms``), or, with ``InferenceConfig.soft_nms_sigma > 0``,
Gaussian Soft-NMS (:func:`soft_nms`); keep at most ``top_k`` (750).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import nms

from ufssd.config import AnchorConfig, InferenceConfig
from ufssd.geometry.boxes import decode

__all__ = ["postprocess", "face_scores", "masked_anchor_keep", "soft_nms"]


def face_scores(cls_logits: Tensor) -> Tensor:
    """``(N, A, 2)`` logits (channel 0 background, 1 face) -> ``(N, A)`` face probability."""
    return torch.softmax(cls_logits.float(), dim=-1)[..., 1]


def _logit(p: float) -> float:
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def soft_nms(boxes: Tensor, scores: Tensor, sigma: float, score_floor: float, top_k: int) -> tuple[Tensor, Tensor]:
    """Gaussian Soft-NMS (Bodla et al., "Soft-NMS", ICCV 2017): greedily take the box of highest
    current score, then multiply every remaining box's score by ``exp(-IoU^2 / sigma)``, its IoU
    with the box taken; boxes whose score falls below ``score_floor`` leave. Stops after ``top_k``
    boxes. Instead of deleting the boxes that overlap a taken one (NMS), it ranks them lower, so
    a better-placed box under a higher-scored, worse-placed one survives (docs/boxes.md).

    Exact, on the CPU with NumPy: boxes are sorted by ``x1`` once, so each step decays only the
    ones whose ``x1`` lies within the widest box's width of the taken one (the others cannot
    overlap it). Ties go to the lower index of the ``x1`` order.

    Args:
        boxes: ``(K, 4)`` xyxy. scores: ``(K,)`` in [0, 1].
    Returns:
        ``(indices into boxes (int64), decayed scores)``, in the order taken (scores descending),
        on the device of ``scores``.
    """
    if sigma <= 0:
        raise ValueError(f"soft_nms needs sigma > 0, got {sigma}")
    device = scores.device
    b = boxes.detach().to("cpu", torch.float32).numpy()
    order = np.argsort(b[:, 0], kind="stable")
    b = b[order]
    s = scores.detach().to("cpu", torch.float32).numpy()[order].copy()
    x1 = b[:, 0]
    widest = float((b[:, 2] - b[:, 0]).max()) if len(b) else 0.0
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    taken: list[int] = []
    taken_scores: list[float] = []
    while len(taken) < top_k and s.size:
        j = int(s.argmax())
        if not s[j] >= score_floor:
            break
        taken.append(int(order[j]))
        taken_scores.append(float(s[j]))
        s[j] = -1.0  # taken: never again (decays keep it negative)
        bj = b[j]
        lo = int(np.searchsorted(x1, bj[0] - widest, "left"))
        hi = int(np.searchsorted(x1, bj[2], "left"))
        near = b[lo:hi]
        w = np.clip(np.minimum(near[:, 2], bj[2]) - np.maximum(near[:, 0], bj[0]), 0.0, None)
        h = np.clip(np.minimum(near[:, 3], bj[3]) - np.maximum(near[:, 1], bj[1]), 0.0, None)
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.nan_to_num(inter / (area[lo:hi] + area[j] - inter))
        s[lo:hi] *= np.exp(-(iou * iou) / sigma)
    return (
        torch.tensor(taken, dtype=torch.int64, device=device),
        torch.tensor(taken_scores, dtype=torch.float32, device=device),
    )


def masked_anchor_keep(
    mask_logits: Sequence[Tensor],
    level_sizes: Sequence[tuple[int, int]],
    levels: Sequence[int],
    threshold: float,
) -> Tensor:
    """Which anchors lie in FFMM cells that the mask keeps (Eq. 2, ``B = M_face > Th_Mask``).

    Args:
        mask_logits: one ``(N, 2, H_l, W_l)`` per masked level, in the order of ``levels``.
        level_sizes: ``(H_l, W_l)`` of every level (finest first): the anchor layout.
        levels: the FFMM levels (``ModelConfig.ffmm_levels``).
        threshold: ``ModelConfig.mask_threshold``.
    Returns:
        keep: ``(N, A)`` bool, True for anchors of unmasked levels and of cells with ``B = 1``.
    """
    if len(mask_logits) != len(levels):
        raise ValueError(f"{len(mask_logits)} mask logits for {len(levels)} FFMM levels")
    n = mask_logits[0].shape[0] if mask_logits else 1
    device = mask_logits[0].device if mask_logits else None
    parts = [torch.ones((n, h * w), dtype=torch.bool, device=device) for h, w in level_sizes]
    for logits, level in zip(mask_logits, levels):
        h, w = level_sizes[level]
        if tuple(logits.shape[-2:]) != (h, w):
            raise ValueError(
                f"mask logits of level {level} have size {tuple(logits.shape[-2:])}, expected {(h, w)}"
            )
        probability = torch.softmax(logits.float(), dim=1)[:, 1]
        parts[level] = (probability > threshold).reshape(logits.shape[0], -1)
    return torch.cat(parts, dim=1)


def postprocess(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    cfg: InferenceConfig,
    *,
    anchor_cfg: AnchorConfig | None = None,
    keep: Tensor | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """Decode, threshold, top-k, NMS, cap: per image ``(boxes (K, 4) float32, scores (K,))``.

    Args:
        cls_logits: ``(N, A, 2)`` raw class logits (not softmaxed).
        box_deltas: ``(N, A, 4)`` SSD offsets.
        anchors: ``(A, 4)`` xyxy in network-input pixels (:func:`ufssd.geometry.anchors_for_input`
            of the padded input size).
        cfg: the resolved settings of the call (``score_threshold``, ``pre_nms_top_k``,
            ``nms_iou`` or ``soft_nms_sigma``, ``top_k``), used as they are: overrides are resolved by the caller
            (:meth:`ufssd.inference.FaceDetector.resolve`).
        anchor_cfg: variances and the log-size clamp of the box coding (default ``AnchorConfig()``).
        keep: optional ``(N, A)`` bool; anchors where it is False are dropped first
            (:func:`masked_anchor_keep`).
    Returns:
        One ``(boxes, scores)`` per image: boxes xyxy in network-input pixels, sorted by descending
        score, ``K <= cfg.top_k``.
    """
    if cls_logits.ndim != 3 or cls_logits.shape[-1] != 2:
        raise ValueError(f"cls_logits must be (N, A, 2), got {tuple(cls_logits.shape)}")
    n, a = cls_logits.shape[:2]
    if tuple(box_deltas.shape) != (n, a, 4):
        raise ValueError(f"box_deltas must be {(n, a, 4)}, got {tuple(box_deltas.shape)}")
    if tuple(anchors.shape) != (a, 4):
        raise ValueError(f"anchors must be {(a, 4)}, got {tuple(anchors.shape)}")
    anchor_cfg = anchor_cfg or AnchorConfig()
    threshold = float(cfg.score_threshold)

    # face probability >= t  <=>  logit difference >= log(t / (1 - t)): no softmax over all anchors
    margin = (cls_logits[..., 1] - cls_logits[..., 0]).float()
    candidates = margin >= _logit(threshold)
    if keep is not None:
        candidates &= keep.to(candidates.device)
    results = []
    for i in range(n):
        idx = torch.nonzero(candidates[i], as_tuple=False).squeeze(1)
        scores = torch.sigmoid(margin[i, idx])  # = softmax(logits)[..., 1]
        if scores.numel() > cfg.pre_nms_top_k:
            scores, order = torch.topk(scores, cfg.pre_nms_top_k, sorted=False)
            idx = idx[order]
        boxes = decode(box_deltas[i, idx].float(), anchors[idx].float(), anchor_cfg.variances, anchor_cfg.max_log_size)
        if cfg.soft_nms_sigma > 0:
            kept, scores = soft_nms(boxes, scores, cfg.soft_nms_sigma, threshold, cfg.top_k)
            results.append((boxes[kept], scores.to(boxes.dtype)))
        else:
            kept = nms(boxes, scores, cfg.nms_iou)[: cfg.top_k]
            results.append((boxes[kept], scores[kept]))
    return results
