"""The training loss (paper Sec. 3.4): ``L = lambda1 * L_mask + lambda2 * L_C+L``.

* :func:`mask_loss` - Eq. 4, the FFMM mask cross-entropy.
* :func:`detection_loss` - Eq. 5, softmax cross-entropy over positives and hard-mined negatives
  plus Smooth L1 over positives; ``LossConfig.box_loss`` / ``cls_loss`` swap in an IoU loss on
  the decoded boxes (:func:`box_loss`) and the quality focal loss (:func:`quality_focal_loss`),
  the fixes of docs/boxes.md.
* :func:`ufssd_loss` - the weighted sum, what the trainer calls.

Labels come from :func:`ufssd.geometry.match_anchors` (POSITIVE / BACKGROUND / IGNORE); IGNORE
anchors take part in no term.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from ufssd.config import AnchorConfig, LossConfig
from ufssd.geometry.boxes import decode
from ufssd.geometry.matching import BACKGROUND, POSITIVE
from ufssd.geometry.pairs import paired_iou

__all__ = [
    "ufssd_loss",
    "detection_loss",
    "mask_loss",
    "hard_negatives",
    "box_loss",
    "quality_focal_loss",
    "anchor_frame_boxes",
]

# the IoU losses of LossConfig.box_loss (its other kind, "smooth_l1", is on the encoded deltas);
# LossConfig checks the names, once, against ufssd.config.BOX_LOSS_KINDS
BOX_LOSSES = {
    "giou": generalized_box_iou_loss,
    "diou": distance_box_iou_loss,
    "ciou": complete_box_iou_loss,
}
# one square anchor of side 1 at the origin: every anchor of the package is square
_UNIT_ANCHOR = (-0.5, -0.5, 0.5, 0.5)


def hard_negatives(background_loss: Tensor, labels: Tensor, neg_pos_ratio: int, min_negatives: int) -> Tensor:
    """Hard negative mining per image (SSD, [choice] 3:1).

    An image with ``P > 0`` positives takes its ``neg_pos_ratio * P`` BACKGROUND anchors of highest
    background loss; an image with no positive takes ``min_negatives`` of them; never more than it
    has. Ties: the lower anchor index. IGNORE and POSITIVE anchors are never negatives.

    Args:
        background_loss: ``(N, A)`` loss of each anchor if it were background (no gradient needed).
        labels: ``(N, A)`` int64.
    Returns:
        ``(N, A)`` bool, the mined negatives.
    """
    is_background = labels == BACKGROUND
    num_pos = (labels == POSITIVE).sum(dim=1)
    wanted = torch.where(num_pos > 0, num_pos * int(neg_pos_ratio), int(min_negatives))
    num_neg = torch.minimum(wanted, is_background.sum(dim=1))  # (N,)
    score = background_loss.detach().float().masked_fill(~is_background, float("-inf"))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # rank of each anchor
    return (rank < num_neg[:, None]) & is_background


@functools.lru_cache(maxsize=None)
def _unit_anchor(device: torch.device, dtype: torch.dtype) -> Tensor:
    """The unit anchor ``(4,)`` on ``device``, copied there once (a copy per step would wait
    for the device)."""
    return torch.tensor(_UNIT_ANCHOR, dtype=dtype, device=device)


def anchor_frame_boxes(deltas: Tensor, coding: AnchorConfig) -> Tensor:
    """Decode ``(..., 4)`` deltas against a unit square anchor at the origin -> ``(..., 4)`` xyxy.

    Every anchor is square, so a box decoded this way is its pixel box translated and scaled
    uniformly by ``1 / anchor side``: IoU, GIoU, DIoU and CIoU of two boxes of the same anchor are
    the same in this frame as in pixels, and the loss needs no anchors.
    """
    return decode(deltas, _unit_anchor(deltas.device, deltas.dtype), coding.variances, coding.max_log_size)


def box_loss(
    pred_deltas: Tensor,
    target_deltas: Tensor,
    kind: str,
    coding: AnchorConfig,
    boxes: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Summed box loss over ``(P, 4)`` positives: Smooth L1 (beta 1) on the encoded deltas (Eq. 5),
    or ``1 - GIoU / DIoU / CIoU`` (torchvision.ops) of the decoded boxes (docs/boxes.md).

    Args:
        kind: a ``LossConfig.box_loss`` (checked there).
        boxes: the predicted and target boxes already decoded by :func:`anchor_frame_boxes`, when
            the caller has them (the QFL target needs them too); else decoded here.
    """
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred_deltas, target_deltas, reduction="sum", beta=1.0)
    pred, target = boxes if boxes is not None else _decoded_pair(pred_deltas, target_deltas, coding)
    return BOX_LOSSES[kind](pred, target, reduction="sum")


def _decoded_pair(pred_deltas: Tensor, target_deltas: Tensor, coding: AnchorConfig) -> tuple[Tensor, Tensor]:
    return anchor_frame_boxes(pred_deltas, coding), anchor_frame_boxes(target_deltas, coding)


def quality_focal_loss(logits: Tensor, quality: Tensor, used: Tensor, beta: float) -> Tensor:
    """Quality focal loss (Li et al., GFL, 2020), summed over the ``used`` anchors.

    ``QFL = -|q - p|^beta * ((1 - q) log(1 - p) + q log p)`` with ``p`` the softmax face
    probability and ``q`` the target: the IoU of the predicted box with its face at positives
    (no gradient), 0 at background anchors.

    Args:
        logits: ``(N, A, 2)`` float, channel 0 background, 1 face.
        quality: ``(N, A)`` in [0, 1].
        used: ``(N, A)`` bool, the anchors that take part (positives and background).
    """
    log_p = F.log_softmax(logits, dim=-1)
    p = log_p[..., 1].exp()
    ce = -((1.0 - quality) * log_p[..., 0] + quality * log_p[..., 1])
    weight = (quality - p).abs().pow(beta).detach()
    return (weight * ce)[used].sum()


def _check_shapes(cls_logits: Tensor, box_deltas: Tensor, labels: Tensor, target_deltas: Tensor) -> None:
    n, a = labels.shape
    if cls_logits.shape != (n, a, 2):
        raise ValueError(f"cls_logits must be (N, A, 2) = ({n}, {a}, 2), got {tuple(cls_logits.shape)}")
    if box_deltas.shape != (n, a, 4) or target_deltas.shape != (n, a, 4):
        raise ValueError(
            f"box_deltas and target_deltas must be (N, A, 4) = ({n}, {a}, 4), got "
            f"{tuple(box_deltas.shape)} and {tuple(target_deltas.shape)}"
        )


def detection_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    labels: Tensor,
    target_deltas: Tensor,
    cfg: LossConfig,
    coding: AnchorConfig | None = None,
) -> tuple[Tensor, Tensor]:
    """Eq. 5: ``L_C+L = lambda3 / N_conf * sum CE + lambda_loc / N_loc * sum SmoothL1``.

    ``N_conf`` = positives + mined negatives over the batch, ``N_loc`` = positives over the batch
    (each at least 1, so a batch with no face has ``loc == 0`` exactly and a finite ``cls``).
    With ``cfg.cls_loss == "qfl"`` the class term is ``lambda3 / N_loc * sum QFL`` over every
    positive and background anchor (no mining); ``cfg.box_loss`` picks the box term.

    Args:
        cls_logits: ``(N, A, 2)``, channel 0 background, 1 face.
        box_deltas: ``(N, A, 4)``.
        labels: ``(N, A)`` int64 in {POSITIVE, BACKGROUND, IGNORE}.
        target_deltas: ``(N, A, 4)`` encoded face boxes (used at positives only).
        coding: the box coding (variances, log-size clamp) for the IoU loss and QFL; default
            ``AnchorConfig()``.
    Returns:
        cls: the class term, ``lambda3`` included; loc: ``lambda_loc / N_loc * sum box loss``.
    """
    _check_shapes(cls_logits, box_deltas, labels, target_deltas)
    coding = coding or AnchorConfig()
    positive = labels == POSITIVE
    n_loc = positive.sum().clamp(min=1)
    pred, target = box_deltas.float()[positive], target_deltas.float()[positive]
    # the decoded boxes, once, for whichever of the IoU box loss and the QFL target need them
    boxes = _decoded_pair(pred, target, coding) if cfg.box_loss != "smooth_l1" or cfg.cls_loss == "qfl" else None
    loc = cfg.lambda_loc * box_loss(pred, target, cfg.box_loss, coding, boxes) / n_loc
    logits = cls_logits.float()
    if cfg.cls_loss == "qfl":
        quality = torch.zeros(labels.shape, device=logits.device)
        with torch.no_grad():
            iou = paired_iou(boxes[0].detach(), boxes[1].detach())
        quality[positive] = iou.clamp(0.0, 1.0)
        used = positive | (labels == BACKGROUND)
        cls = cfg.lambda_conf * quality_focal_loss(logits, quality, used, cfg.qfl_beta) / n_loc
        return cls, loc
    n, a = labels.shape
    ce = F.cross_entropy(logits.reshape(-1, 2), positive.reshape(-1).long(), reduction="none").view(n, a)
    negative = hard_negatives(ce.detach(), labels, cfg.neg_pos_ratio, cfg.min_negatives)
    used = positive | negative
    n_conf = used.sum().clamp(min=1)
    cls = cfg.lambda_conf * ce[used].sum() / n_conf
    return cls, loc


def mask_loss(mask_logits: Sequence[Tensor], gt_masks: Sequence[Tensor], reduction: str = "mean") -> Tensor:
    """Eq. 4 read as the ordinary cross-entropy ``-sum_i Y_i log M_i``, ``M = softmax`` (Eq. 1).

    ``"mean"`` ([choice], default): averaged over the cells (and images) of each masked level,
    then summed over levels. ``"sum"`` (the paper's literal Eq. 4): summed over the ``H_l x W_l``
    cells of each level, averaged over the images, summed over levels.

    Args:
        mask_logits: one ``(N, 2, H_l, W_l)`` per masked level (channel 1 = face).
        gt_masks: one ``(N, H_l, W_l)`` 0/1 per masked level, same order.
    Returns:
        scalar; 0 when there are no masked levels.
    """
    if len(mask_logits) != len(gt_masks):
        raise ValueError(f"{len(mask_logits)} mask logit maps but {len(gt_masks)} ground-truth masks")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown mask reduction {reduction!r}; expected 'mean' or 'sum'")
    total = None
    for level, (logits, target) in enumerate(zip(mask_logits, gt_masks)):
        n, c, h, w = logits.shape
        if c != 2 or tuple(target.shape) != (n, h, w):
            raise ValueError(
                f"masked level #{level}: logits {tuple(logits.shape)} need (N, 2, H, W) and the ground "
                f"truth (N, H, W), got {tuple(target.shape)}"
            )
        ce = F.cross_entropy(logits.float(), (target > 0.5).long(), reduction="sum")
        term = ce / (n * h * w) if reduction == "mean" else ce / n
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total


def ufssd_loss(
    output: Any,
    labels: Tensor,
    target_deltas: Tensor,
    gt_masks: Sequence[Tensor],
    cfg: LossConfig,
    coding: AnchorConfig | None = None,
) -> dict[str, Tensor]:
    """``L = lambda_mask * L_mask + lambda_det * (cls + loc)`` (Sec. 3.4, Eqs. 4-5).

    Args:
        output: the model's raw output; needs ``cls_logits (N, A, 2)``, ``box_deltas (N, A, 4)``
            and ``mask_logits`` (one ``(N, 2, H_l, W_l)`` per FFMM level, possibly none).
        labels: ``(N, A)`` int64 from matching.
        target_deltas: ``(N, A, 4)``.
        gt_masks: one ``(N, H_l, W_l)`` per FFMM level, in ``model.ffmm_levels`` order.
        cfg: weights, mining, the mask reduction and the box / class loss kinds.
        coding: the box coding of the targets (``DetectorConfig.anchors``), for the IoU losses.
    Returns:
        ``{"loss", "cls", "loc", "mask"}``: scalars; ``cls`` already includes ``lambda_conf``
        (it is Eq. 5's first term), ``loss`` is what to back-propagate.
    """
    cls, loc = detection_loss(output.cls_logits, output.box_deltas, labels, target_deltas, cfg, coding)
    mask = mask_loss(tuple(output.mask_logits), gt_masks, cfg.mask_reduction).to(cls.device)
    loss = cfg.lambda_mask * mask + cfg.lambda_det * (cls + loc)
    return {"loss": loss, "cls": cls, "loc": loc, "mask": mask}
