"""Per-batch training targets: matching plus box encoding, one image after another."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ufssd.config import MatchConfig
from ufssd.geometry.boxes import encode
from ufssd.geometry.matching import POSITIVE, match_anchors
from ufssd.geometry.pairs import build_box_index

__all__ = ["build_targets"]


def build_targets(
    anchors: Tensor,
    boxes_list: Sequence[Tensor],
    ignore_list: Sequence[Tensor],
    cfg: MatchConfig,
    variances: Sequence[float],
) -> tuple[Tensor, Tensor]:
    """Labels and regression targets of a batch.

    Args:
        anchors: ``(A, 4)`` float xyxy, shared by the batch (one input size).
        boxes_list: ``N`` tensors ``(G_n, 4)`` xyxy face boxes in input pixels.
        ignore_list: ``N`` bool tensors ``(G_n,)``.
        cfg: matching thresholds.
        variances: box-coding variances (``AnchorConfig.variances``).
    Returns:
        labels: ``(N, A)`` int64 in {POSITIVE, BACKGROUND, IGNORE};
        target_deltas: ``(N, A, 4)`` float, :func:`encode` of each positive's face box against its
        anchor, exactly 0 elsewhere.
    """
    if len(boxes_list) != len(ignore_list):
        raise ValueError(f"{len(boxes_list)} box tensors but {len(ignore_list)} ignore tensors")
    index = build_box_index(anchors)  # shared by every image
    labels, deltas = [], []
    for boxes, ignore in zip(boxes_list, ignore_list):
        lab, matched = match_anchors(anchors, boxes, ignore, cfg, anchor_index=index)
        positive = (lab == POSITIVE)[:, None]
        # non-positives are encoded against their own anchor, which gives exact zeros
        deltas.append(encode(torch.where(positive, matched, anchors), anchors, variances))
        labels.append(lab)
    num_anchors = anchors.shape[0]
    if not labels:
        return (
            torch.zeros((0, num_anchors), dtype=torch.int64, device=anchors.device),
            torch.zeros((0, num_anchors, 4), dtype=anchors.dtype, device=anchors.device),
        )
    return torch.stack(labels), torch.stack(deltas)
