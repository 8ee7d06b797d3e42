"""Sparse box-pair search: which boxes of one set overlap which boxes of another.

Matching and ground-truth masks only care about (face, anchor) or (face, cell) pairs that overlap;
at 640x640 that is a tiny fraction of the dense ``G x A`` matrix (``A`` = 34,125), which on a CPU
costs tens of milliseconds per hundred faces just to fill. These helpers find the overlapping
pairs without building that matrix, so a crowded image (hundreds of faces) stays cheap.

The set searched (``others``: anchors, or squares around mask cells) is indexed once by
:func:`build_box_index` (reusable for every image of a batch): boxes are grouped into *columns*
of equal x-interval (an anchor grid has one per column and level, 315 at 640x640) and, inside a
column, sorted by ``y1``. A query box then looks up one contiguous run per column it overlaps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["BoxIndex", "build_box_index", "overlapping_pairs", "paired_iou"]


class BoxIndex(NamedTuple):
    """``others`` (``(A, 4)`` xyxy) arranged for :func:`overlapping_pairs`; ``U`` columns."""

    boxes: Tensor  # (A, 4) the indexed boxes, as given
    cols: Tensor  # (U, 2) distinct (x1, x2) intervals
    col_start: Tensor  # (U,) int64, first position of the column in `order`
    col_end: Tensor  # (U,) int64, one past its last position
    col_hmin: Tensor  # (U,) float64, smallest box height in the column
    col_hmax: Tensor  # (U,) float64, largest box height in the column
    y1: Tensor  # (A,) contiguous copies of the boxes' y1 and y2 (fast gathers)
    y2: Tensor
    order: Tensor  # (A,) int64, box indices sorted by (column, y1)
    key: Tensor  # (A,) float64, column * span + (y1 - y_min), ascending (aligned with `order`)
    span: float
    y_min: float


def _distinct_intervals(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct ``(lo, hi)`` pairs of ``(A,)`` coordinates: ``(U, 2)`` and the ``(A,)`` inverse.

    (``torch.unique(dim=0)`` is far slower than unique on scalar keys, hence the detour.)
    """
    lo_values, lo_of = torch.unique(lo, return_inverse=True)
    hi_values, hi_of = torch.unique(hi, return_inverse=True)
    n_hi = hi_values.numel()
    keys, inverse = torch.unique(lo_of * n_hi + hi_of, return_inverse=True)
    return torch.stack([lo_values[keys // n_hi], hi_values[keys % n_hi]], dim=1), inverse


def build_box_index(others: Tensor) -> BoxIndex:
    """Index ``(A, 4)`` xyxy boxes (``A >= 0``) for :func:`overlapping_pairs`."""
    if others.ndim != 2 or others.shape[1] != 4:
        raise ValueError(f"boxes to index must be (A, 4), got shape {tuple(others.shape)}")
    device = others.device
    cols, col_of = _distinct_intervals(others[:, 0], others[:, 2])  # (U, 2), (A,)
    num_cols = cols.shape[0]
    y1 = others[:, 1].double()
    y_min = float(y1.min()) if y1.numel() else 0.0
    span = (float(y1.max()) - y_min + 1.0) if y1.numel() else 1.0
    key, order = torch.sort(col_of.double() * span + (y1 - y_min), stable=True)
    col_count = torch.bincount(col_of, minlength=num_cols)
    col_end = torch.cumsum(col_count, 0)
    heights = (others[:, 3] - others[:, 1]).double()
    col_hmax = torch.zeros(num_cols, dtype=torch.float64, device=device)
    col_hmax.scatter_reduce_(0, col_of, heights, reduce="amax", include_self=False)
    col_hmin = torch.zeros(num_cols, dtype=torch.float64, device=device)
    col_hmin.scatter_reduce_(0, col_of, heights, reduce="amin", include_self=False)
    return BoxIndex(
        boxes=others,
        cols=cols,
        col_start=col_end - col_count,
        col_end=col_end,
        col_hmin=col_hmin,
        col_hmax=col_hmax,
        y1=others[:, 1].contiguous(),
        y2=others[:, 3].contiguous(),
        order=order,
        key=key,
        span=span,
        y_min=y_min,
    )


def _empty_pairs(device: torch.device) -> tuple[Tensor, Tensor]:
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    return empty, empty.clone()


def overlapping_pairs(
    boxes: Tensor, others: Tensor | BoxIndex, iou_floor: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Pairs ``(i, j)`` such that ``boxes[i]`` and ``others[j]`` overlap with positive area.

    Boxes that only touch, and boxes of zero or negative width or height, make no pair. With
    ``iou_floor > 0``, pairs whose IoU is certainly below it (by a per-column bound) are left out
    too: the result holds every overlapping pair of IoU ``>= iou_floor``, and maybe some others.

    Cost about ``G x U + P + A log A`` (the last term once per index) for ``U`` columns and ``P``
    pairs; any ``others`` give the right answer, just more slowly when few share an x-interval.

    Args:
        boxes: ``(G, 4)`` float xyxy.
        others: ``(A, 4)`` float xyxy, or their :class:`BoxIndex`.
        iou_floor: IoU below which a pair is not wanted (0: every overlapping pair).
    Returns:
        i: ``(P,)`` int64 indices into ``boxes``; j: ``(P,)`` int64 indices into ``others``;
        sorted by ``i``, then ``j``.
    """
    index = others if isinstance(others, BoxIndex) else build_box_index(others)
    device = index.boxes.device
    num_others = index.boxes.shape[0]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (G, 4), got shape {tuple(boxes.shape)}")
    if boxes.shape[0] == 0 or num_others == 0:
        return _empty_pairs(device)
    boxes = boxes.to(device=device, dtype=index.boxes.dtype)
    cols = index.cols

    # (box, column) combinations overlapping in x (exact), and not excluded by the IoU bound
    bx1, bx2 = boxes[:, None, 0], boxes[:, None, 2]
    wanted = torch.minimum(bx2, cols[None, :, 1]) > torch.maximum(bx1, cols[None, :, 0])  # (G, U)
    if iou_floor > 0:
        # IoU <= min(w) * min(h) / max(area): inter is at most that, union at least this
        bw, bh = bx2 - bx1, boxes[:, None, 3] - boxes[:, None, 1]
        cw = (cols[:, 1] - cols[:, 0])[None, :]
        inter_max = torch.minimum(bw, cw) * torch.minimum(bh, index.col_hmax.to(bh.dtype)[None, :])
        union_min = torch.maximum(bw * bh, cw * index.col_hmin.to(bh.dtype)[None, :])
        wanted &= inter_max >= union_min * (iou_floor * (1.0 - 1e-4))  # slack for rounding
    bi, ci = torch.nonzero(wanted, as_tuple=True)
    if bi.numel() == 0:
        return _empty_pairs(device)

    # in each column, the run with by1 - hmax - 1 < y1 < by2: a superset of the y-overlaps
    base = ci.double() * index.span - index.y_min
    lo = torch.searchsorted(index.key, base + boxes[bi, 1].double() - index.col_hmax[ci] - 1.0, right=True)
    hi = torch.searchsorted(index.key, base + boxes[bi, 3].double(), right=False)
    lo = torch.maximum(lo, index.col_start[ci])
    hi = torch.minimum(hi, index.col_end[ci])
    run = (hi - lo).clamp(min=0)
    total = int(run.sum())
    if total == 0:
        return _empty_pairs(device)
    i = torch.repeat_interleave(bi, run)
    offset = torch.arange(total, device=device) - torch.repeat_interleave(torch.cumsum(run, 0) - run, run)
    j = index.order.index_select(0, torch.repeat_interleave(lo, run) + offset)

    # exact test in y (x is exact by construction), then the canonical order
    top = torch.maximum(boxes[:, 1].contiguous().index_select(0, i), index.y1.index_select(0, j))
    bottom = torch.minimum(boxes[:, 3].contiguous().index_select(0, i), index.y2.index_select(0, j))
    keep = bottom > top
    i, j = i[keep], j[keep]
    canonical = torch.argsort(i * num_others + j)
    return i[canonical], j[canonical]


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Element-wise IoU of ``(..., 4)`` xyxy boxes against ``(..., 4)`` (broadcast) -> ``(...)``.

    Boxes with zero or negative width or height have area 0 and IoU 0 with everything.
    """
    wh1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0)
    wh2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0)
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    inter_wh = (rb - lt).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = wh1[..., 0] * wh1[..., 1] + wh2[..., 0] * wh2[..., 1] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)
