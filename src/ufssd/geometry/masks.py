"""Ground-truth masks for FFMM (paper notes section 4: Eq. 3 and the square-box IoU rule).

For a masked level ``l`` of ``H_l x W_l`` cells on an ``H x W`` input, cell ``(y_m, x_m)`` maps to
the input point of Eq. 3 (:func:`mask_cell_centres`). Around that point sit ``K`` square boxes
(:func:`mask_square_sides`); the cell's ground truth is ``G = 1`` iff some square has IoU
``> Th_GT`` (``GTMaskConfig.iou_threshold``, 1e-3) with some face box, in float arithmetic
(:func:`square_overlap`, :func:`square_face_iou`). Faces of zero or negative width or height
never mark a cell; ignored faces mark cells when ``GTMaskConfig.ignored_faces_count`` (default).

Only the window of cells whose largest square can reach a face is examined, so the cost grows
with the faces' area in cells, not with ``faces x cells``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ufssd.config import GTMaskConfig

__all__ = ["gt_masks", "mask_cell_centres", "mask_square_sides", "square_overlap", "square_face_iou"]


def mask_cell_centres(
    size: tuple[int, int], input_size: tuple[int, int], device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Eq. 3: cell ``(y_m, x_m)`` of an ``(H_l, W_l)`` map -> input point
    ``x = (x_m + 0.5) * W_in / W_l``, ``y = (y_m + 0.5) * H_in / H_l``.

    With inputs padded to a multiple of 128 this is the anchor centre ``(j + 0.5) * stride``.

    Returns:
        cy: ``(H_l,)`` float32 row centres; cx: ``(W_l,)`` float32 column centres.
    """
    (h_l, w_l), (h_in, w_in) = size, input_size
    cy = (torch.arange(h_l, dtype=torch.float32, device=device) + 0.5) * (float(h_in) / h_l)
    cx = (torch.arange(w_l, dtype=torch.float32, device=device) + 0.5) * (float(w_in) / w_l)
    return cy, cx


def mask_square_sides(level: int, anchor_sides: Sequence[float], cfg: GTMaskConfig) -> Tensor:
    """``(K,)`` float32 sides of the squares around a cell of ``level`` ([choice], paper notes 4).

    ``"anchor"`` mode: ``anchor_sides[level] * cfg.anchor_scales``; ``"rf"`` mode: ``cfg.rf_steps``
    sides evenly spaced from ``anchor_sides[level]`` to ``cfg.rf_sides[level]``.
    """
    side = float(anchor_sides[level])
    if cfg.mode == "anchor":
        if not cfg.anchor_scales:
            raise ValueError("GTMaskConfig.anchor_scales is empty")
        return torch.tensor([side * float(s) for s in cfg.anchor_scales], dtype=torch.float32)
    if cfg.mode == "rf":
        if level >= len(cfg.rf_sides):
            raise ValueError(f"GTMaskConfig.rf_sides has no entry for level {level}: {cfg.rf_sides}")
        if cfg.rf_steps < 1:
            raise ValueError(f"GTMaskConfig.rf_steps must be >= 1, got {cfg.rf_steps}")
        return torch.linspace(side, float(cfg.rf_sides[level]), int(cfg.rf_steps), dtype=torch.float32)
    raise ValueError(f"unknown GTMaskConfig.mode {cfg.mode!r}; expected 'anchor' or 'rf'")


def square_face_iou(inter_x: Tensor, inter_y: Tensor, sides: Tensor, face_area: Tensor) -> Tensor:
    """The square-box IoU rule: IoU of ``K`` squares around a cell centre with a face box.

    Args:
        inter_x, inter_y: ``(P, K)`` overlap lengths of each square with the face along x and y
            (from :func:`square_overlap`).
        sides: ``(K,)`` square sides.
        face_area: ``(P,)`` area of the face of each pair.
    Returns:
        iou: ``(P, K)`` float.
    """
    inter = inter_x * inter_y
    return inter / (sides[None, :] ** 2 + face_area[:, None] - inter)


def square_overlap(centres: Tensor, sides: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """1-D overlap length of squares ``[c - s/2, c + s/2]`` with face extents ``[lo, hi]``.

    Args:
        centres, lo, hi: ``(Q,)``; sides: ``(K,)``.
    Returns:
        ``(Q, K)`` float, ``>= 0``.
    """
    half = sides[None, :] / 2
    right = torch.minimum(centres[:, None] + half, hi[:, None])
    left = torch.maximum(centres[:, None] - half, lo[:, None])
    return (right - left).clamp(min=0)


def _ranges(start: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenated integer ranges ``start[f] .. start[f] + count[f] - 1``: ``(owner f, value)``."""
    owner = torch.repeat_interleave(torch.arange(count.numel(), device=count.device), count)
    first = torch.cumsum(count, 0) - count
    local = torch.arange(int(count.sum()), device=count.device) - first[owner]
    return owner, start[owner] + local


def _level_mask(
    faces: Tensor, size: tuple[int, int], input_size: tuple[int, int], sides: Tensor, threshold: float
) -> Tensor:
    """``(H_l, W_l)`` 0/1 mask of one level; ``faces`` ``(F, 4)`` non-degenerate, ``F >= 1``."""
    h_l, w_l = size
    device = faces.device
    mask = torch.zeros((h_l, w_l), dtype=torch.float32, device=device)
    cy, cx = mask_cell_centres(size, input_size, device)
    py, px = input_size[0] / h_l, input_size[1] / w_l
    reach = float(sides.max()) / 2
    # the window of cells whose largest square can overlap each face (cell m sits at
    # (m + 0.5) * pitch); one cell wider on each side against rounding, the IoU test is exact
    j0 = torch.floor((faces[:, 0] - reach) / px - 0.5).long().clamp(min=0)
    j1 = torch.ceil((faces[:, 2] + reach) / px - 0.5).long().clamp(max=w_l - 1)
    i0 = torch.floor((faces[:, 1] - reach) / py - 0.5).long().clamp(min=0)
    i1 = torch.ceil((faces[:, 3] + reach) / py - 0.5).long().clamp(max=h_l - 1)
    nw, nh = (j1 - j0 + 1).clamp(min=0), (i1 - i0 + 1).clamp(min=0)
    # separable overlaps: per (face, window column) and per (face, window row)
    face_x, col = _ranges(j0, nw)
    face_y, row = _ranges(i0, nh)
    ox = square_overlap(cx[col], sides, faces[face_x, 0], faces[face_x, 2])  # (sum nw, K)
    oy = square_overlap(cy[row], sides, faces[face_y, 1], faces[face_y, 3])  # (sum nh, K)
    # every (face, row, column) of the windows, as positions in the column and row lists above
    # (repeat_interleave and index_select rather than fancy indexing: this is the hot loop)
    count = nw * nh
    face = torch.repeat_interleave(torch.arange(faces.shape[0], device=device), count)
    width = torch.repeat_interleave(nw, count)
    first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    local = torch.arange(face.numel(), device=device) - first
    x_at = torch.repeat_interleave(torch.cumsum(nw, 0) - nw, count) + local % width
    y_at = torch.repeat_interleave(torch.cumsum(nh, 0) - nh, count) + local // width
    area = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
    iou = square_face_iou(
        ox.index_select(0, x_at), oy.index_select(0, y_at), sides, area.index_select(0, face)
    )  # (P, K)
    hit = (iou > threshold).any(dim=1)
    mask[row.index_select(0, y_at[hit]), col.index_select(0, x_at[hit])] = 1.0
    return mask


def gt_masks(
    gt_boxes: Tensor,
    input_size: tuple[int, int],
    sizes: Sequence[tuple[int, int]],
    anchor_sides: Sequence[float],
    levels: Sequence[int],
    cfg: GTMaskConfig,
    *,
    gt_ignore: Tensor | None = None,
) -> list[Tensor]:
    """FFMM ground-truth masks of one image (Eq. 3 + the square-box IoU rule).

    Args:
        gt_boxes: ``(G, 4)`` float xyxy face boxes in input pixels (``G`` may be 0).
        input_size: ``(H, W)`` of the network input.
        sizes: ``(H_l, W_l)`` of every level (all levels, finest first).
        anchor_sides: anchor side of every level (``AnchorConfig.sides``).
        levels: the masked levels, e.g. ``ModelConfig.ffmm_levels``.
        cfg: square sizes, ``Th_GT`` and whether ignored faces count.
        gt_ignore: ``(G,)`` bool; used only when ``cfg.ignored_faces_count`` is False, to leave
            ignored faces out (``None``: every face counts).
    Returns:
        one ``(H_l, W_l)`` float32 tensor of 0/1 per level in ``levels``, in that order.
    """
    if gt_boxes.ndim != 2 or gt_boxes.shape[1] != 4:
        raise ValueError(f"gt_boxes must be (G, 4), got shape {tuple(gt_boxes.shape)}")
    if len(anchor_sides) != len(sizes):
        raise ValueError(f"need one anchor side per level: {len(anchor_sides)} sides, {len(sizes)} levels")
    if not torch.isfinite(gt_boxes).all():
        raise ValueError("gt_boxes contains NaN or infinite coordinates")
    h_in, w_in = int(input_size[0]), int(input_size[1])
    if h_in <= 0 or w_in <= 0:
        raise ValueError(f"input_size must be positive, got {tuple(input_size)}")
    device = gt_boxes.device
    faces = gt_boxes.to(torch.float32)
    keep = ((faces[:, 2:] - faces[:, :2]) > 0).all(dim=1)  # zero-size boxes never mark
    if gt_ignore is not None and not cfg.ignored_faces_count:
        if gt_ignore.shape != gt_boxes.shape[:1]:
            raise ValueError(f"gt_ignore must be (G,), got shape {tuple(gt_ignore.shape)}")
        keep &= ~gt_ignore.to(device=device, dtype=torch.bool)
    faces = faces[keep]

    masks = []
    for level in levels:
        if not 0 <= level < len(sizes):
            raise ValueError(f"masked level {level} out of range for {len(sizes)} levels")
        h_l, w_l = sizes[level]
        sides = mask_square_sides(level, anchor_sides, cfg).to(device)
        if faces.shape[0] and h_l and w_l:
            masks.append(_level_mask(faces, (h_l, w_l), (h_in, w_in), sides, cfg.iou_threshold))
        else:
            masks.append(torch.zeros((h_l, w_l), dtype=torch.float32, device=device))
    return masks
