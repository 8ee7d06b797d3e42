"""Matching and FFMM ground-truth masks of a padded batch, with no host synchronisation.

The sparse functions (:func:`~ufssd.geometry.matching.match_anchors`,
:func:`~ufssd.geometry.matching.build_targets`, :func:`~ufssd.geometry.masks.gt_masks`) work on
one image at a time and only on the (face, anchor) or (face, cell) pairs that overlap: cheap on a
CPU, but every image costs the host several waits for the device (``nonzero``, boolean indexing,
``int(tensor)``). The functions here take the faces of a whole batch padded to a common count
``G`` (``boxes (N, G, 4)``, ``ignore (N, G)``, as :func:`ufssd.data.batch_augment.pad_boxes` makes
them: a padded row is a zero box marked ignore) and compute the same results densely over every
(image, face, anchor) or (image, face, cell). Every shape is a function of ``N``, ``G``, ``A`` and
the map sizes only, so nothing is read back to the host and the work can be queued on a GPU.

They are exactly equal to the sparse functions, image by image (same IoU formula
:func:`~ufssd.geometry.pairs.paired_iou` and the same float operations, every tie rule of
``matching.py``), with one documented cap: stage 2 of the matching ranks each face's candidates
with ``topk(max_need)`` (see :func:`match_anchors_padded`). Ties without syncs: ``max``/``argmax``
return the first maximal index, and :func:`_tie_key` packs "higher IoU, then lower index" into
one int64 so that a single ``amax`` (``scatter_reduce_`` or ``topk``) applies the rule.

Memory: dense ``(N, G, A)`` and ``(N, G, H_l, W_l)`` tensors; the caller chunks the batch to
bound ``N * G * A``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ufssd.config import GTMaskConfig, MatchConfig
from ufssd.geometry.boxes import encode
from ufssd.geometry.masks import mask_cell_centres, mask_square_sides, square_face_iou, square_overlap
from ufssd.geometry.matching import BACKGROUND, IGNORE, POSITIVE, _check_config, valid_faces
from ufssd.geometry.pairs import paired_iou

__all__ = ["DEFAULT_MAX_NEED", "match_anchors_padded", "build_targets_padded", "gt_masks_padded"]

# Stage 2 tops a face up to N = the image's mean stage-1 count, so a face never needs more than
# the largest stage-1 count any face can have: the anchors of IoU >= positive_iou with one box.
# With the default anchors (side = 4 x stride, one per cell) and positive_iou = 0.35 a search over
# boxes of every size, aspect ratio and position found at most 21; 64 leaves a margin of 3.
DEFAULT_MAX_NEED = 64

_LOW = (1 << 32) - 1  # the low 32 bits of a tie key hold the (complemented) index
_NO_KEY = -1  # below every key of an IoU >= 0


def _tie_key(iou: Tensor, index: Tensor, active: Tensor) -> Tensor:
    """int64 keys ordered as "higher IoU first, then lower index"; ``-1`` where not ``active``.

    ``iou`` is float32 and ``>= 0`` where active (the bit pattern of a non-negative float32 is
    monotone as an int32); ``index`` in ``[0, 2**32)``. ``iou``, ``index`` and ``active``
    broadcast to ``iou``'s shape, which is the result's shape.
    """
    key = iou.view(torch.int32).to(torch.int64)
    key.bitwise_left_shift_(32).bitwise_or_(_LOW - index)
    return key.masked_fill_(~active, _NO_KEY)


def _key_index(key: Tensor) -> Tensor:
    """The index packed by :func:`_tie_key` (meaningless where ``key`` is ``-1``)."""
    return _LOW - (key & _LOW)


def _best_key_per_slot(slot: Tensor, key: Tensor, num_slots: int) -> Tensor:
    """``(num_slots,)`` the largest ``key`` sent to each slot (``-1`` where none or only ``-1``);
    ``slot`` and ``key`` of one shape, every ``slot`` in ``[0, num_slots)``."""
    best = torch.full((num_slots,), _NO_KEY, dtype=torch.int64, device=key.device)
    return best.scatter_reduce_(0, slot.reshape(-1), key.reshape(-1), reduce="amax")


def _check_padded(anchors: Tensor, boxes: Tensor, ignore: Tensor) -> None:
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f"anchors must be (A, 4), got shape {tuple(anchors.shape)}")
    if anchors.dtype != torch.float32:
        raise ValueError(f"anchors must be float32 (the IoU tie keys need it), got {anchors.dtype}")
    if boxes.ndim != 3 or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be (N, G, 4), got shape {tuple(boxes.shape)}")
    if ignore.shape != boxes.shape[:2]:
        raise ValueError(f"ignore must be (N, G) = {tuple(boxes.shape[:2])}, got shape {tuple(ignore.shape)}")


def _stage1(iou_v: Tensor, cfg: MatchConfig) -> tuple[Tensor, Tensor]:
    """Stages 1a and 1b on ``iou_v (N, G, A)`` (IoU with valid faces, ``-1`` for the others).

    Returns ``positive (N, A)`` bool and ``face_of (N, A)`` int64 (the face of each positive, 0
    elsewhere); a forced anchor (1b) overrides a strong one (1a), as in ``match_anchors``.
    """
    n, g, a = iou_v.shape
    best_iou, best_face = iou_v.max(dim=1)  # (N, A): 1a, ties to the lower face
    strong = best_iou >= cfg.positive_iou
    anchor_iou, anchor = iou_v.max(dim=2)  # (N, G): 1b, ties to the lower anchor
    forcing = anchor_iou > cfg.min_iou
    faces = torch.arange(g, device=iou_v.device)
    slot = anchor + a * torch.arange(n, device=iou_v.device)[:, None]  # (N, G) into (N * A)
    # an anchor forced by several faces: the highest IoU, ties to the lower face
    won = _best_key_per_slot(slot, _tie_key(anchor_iou, faces, forcing), n * a).view(n, a)
    forced = won >= 0
    positive = strong | forced
    face_of = torch.where(forced, _key_index(won), torch.where(strong, best_face, 0))
    return positive, face_of


def _stage2_need(positive: Tensor, face_of: Tensor, num_faces: int) -> Tensor:
    """``(N, G)`` int64: how many anchors each face wants in stage 2, ``target - count`` clamped at
    0, with ``target`` = S3FD's N of the image, ``floor(mean + 0.5)`` of the stage-1 counts of the
    faces that have any (the rule of ``matching._mean_count``); 0 in an image where none has."""
    n = positive.shape[0]
    slot = face_of + num_faces * torch.arange(n, device=face_of.device)[:, None]  # (N, A)
    counts = torch.zeros(n * num_faces, dtype=torch.int64, device=face_of.device)
    counts = counts.scatter_add_(0, slot.reshape(-1), positive.reshape(-1).to(torch.int64)).view(n, num_faces)
    matched = (counts > 0).sum(dim=1, keepdim=True)  # (N, 1)
    mean = counts.sum(dim=1, keepdim=True).double() / matched.clamp(min=1)
    target = torch.floor(mean + 0.5).to(torch.int64)
    return torch.where(matched > 0, (target - counts).clamp(min=0), 0)


def _stage2(
    iou_v: Tensor, positive: Tensor, face_of: Tensor, cfg: MatchConfig, max_need: int | None
) -> tuple[Tensor, Tensor]:
    """Stage 2 (scale compensation) on ``iou_v (N, G, A)``: each face short of ``N`` takes its best
    candidates (IoU > min_iou, not positive; ties: lower anchor), an anchor wanted by several
    faces going to the highest IoU (ties: lower face). Returns ``new (N, A)`` bool, the anchors
    taken, and ``new_face (N, A)`` int64, their faces."""
    n, g, a = iou_v.shape
    device = iou_v.device
    need = _stage2_need(positive, face_of, g)  # (N, G)
    cand = (iou_v > cfg.min_iou) & (need > 0)[:, :, None] & ~positive[:, None, :]  # (N, G, A)
    k = a if max_need is None else min(max_need, a)
    anchors = torch.arange(a, device=device)
    key, anchor = _tie_key(iou_v, anchors, cand).topk(k, dim=2)  # (N, G, k), best first
    del cand
    take = (key >= 0) & (torch.arange(k, device=device) < need[:, :, None])
    faces = torch.arange(g, device=device)[:, None]  # (G, 1)
    slot = anchor + a * torch.arange(n, device=device)[:, None, None]  # (N, G, k) into (N * A)
    won = _best_key_per_slot(slot, _tie_key(iou_v.gather(2, anchor), faces, take), n * a).view(n, a)
    return won >= 0, _key_index(won)


def match_anchors_padded(
    anchors: Tensor,
    boxes: Tensor,
    ignore: Tensor,
    cfg: MatchConfig,
    *,
    max_need: int | None = DEFAULT_MAX_NEED,
) -> tuple[Tensor, Tensor]:
    """S3FD two-stage matching with scale compensation of a padded batch, without host syncs.

    Equal, image by image, to ``match_anchors(anchors, boxes[n], ignore[n], cfg)`` (the rules are
    in ``matching.py``'s docstring); a padded row (zero box, ignore True) acts as no row.

    Stage 2 ranks each face's candidates with ``topk(max_need)``. A face needs at most ``N`` (the
    image's mean stage-1 count), hence at most the largest stage-1 count of a face, which is at
    most the number of anchors of IoU >= ``positive_iou`` with one box, or 1 (a search found 21 at
    most for the default anchors and thresholds: :data:`DEFAULT_MAX_NEED`, 64, is safe for them;
    raise it for lower thresholds or denser anchors). The result is exact whenever no face needs more
    than ``max_need`` anchors in stage 2 (or has no more than ``max_need`` candidates); otherwise
    such a face takes only its ``max_need`` best candidates. ``max_need=None`` ranks every anchor
    (a full sort per face): always exact, slower.

    Memory: about ``11 * N * G * A`` float32 elements at the peak (inside :func:`paired_iou`),
    then an ``(N, G, A)`` float32 IoU, an int64 key and bool masks of that shape (N = 16, G = 32
    at 640x640: about 0.8 GB). Boxes are not checked for NaN (that would read them).

    Args:
        anchors: ``(A, 4)`` float32 xyxy, input pixels.
        boxes: ``(N, G, 4)`` float xyxy face boxes, padded (``G`` may be 0).
        ignore: ``(N, G)`` bool, faces marked ignore (True on padded rows).
        cfg: thresholds and the stage-2 switch.
        max_need: the stage-2 cap above (``>= 1``), or None for none.
    Returns:
        labels: ``(N, A)`` int64 in {POSITIVE, BACKGROUND, IGNORE}.
        matched: ``(N, A, 4)`` float32, the face box of each positive; zeros elsewhere.
    """
    _check_padded(anchors, boxes, ignore)
    _check_config(cfg)
    if max_need is not None and max_need < 1:
        raise ValueError(f"max_need must be >= 1 or None, got {max_need}")
    device = anchors.device
    (n, g), a = boxes.shape[:2], anchors.shape[0]
    labels = torch.full((n, a), BACKGROUND, dtype=torch.int64, device=device)
    if g == 0 or a == 0:
        return labels, torch.zeros((n, a, 4), dtype=anchors.dtype, device=device)

    boxes = boxes.to(device=device, dtype=anchors.dtype)
    ignore = ignore.to(device=device, dtype=torch.bool)
    valid = valid_faces(boxes.reshape(n * g, 4), ignore.reshape(n * g)).view(n, g, 1)
    iou = paired_iou(boxes[:, :, None, :], anchors[None, None, :, :])  # (N, G, A)
    # anchors near a face that is not valid: IGNORE unless they become positive
    near_ignored = ((iou >= cfg.ignore_iou) & ~valid).any(dim=1)  # (N, A)
    iou_v = iou.masked_fill_(~valid, -1.0)  # only valid faces make positives

    positive, face_of = _stage1(iou_v, cfg)
    if cfg.scale_compensation:
        new, new_face = _stage2(iou_v, positive, face_of, cfg, max_need)
        positive = positive | new
        face_of = torch.where(new, new_face, face_of)

    labels = torch.where(positive, POSITIVE, torch.where(near_ignored, IGNORE, labels))
    matched = boxes.gather(1, face_of[:, :, None].expand(n, a, 4))  # (N, A, 4)
    return labels, matched.masked_fill_(~positive[:, :, None], 0.0)


def build_targets_padded(
    anchors: Tensor,
    boxes: Tensor,
    ignore: Tensor,
    cfg: MatchConfig,
    variances: Sequence[float],
    *,
    max_need: int | None = DEFAULT_MAX_NEED,
) -> tuple[Tensor, Tensor]:
    """Labels and regression targets of a padded batch, without host syncs: equal to
    ``build_targets(anchors, list(boxes), list(ignore), cfg, variances)``.

    Args:
        anchors: ``(A, 4)`` float32 xyxy, shared by the batch.
        boxes: ``(N, G, 4)`` float xyxy face boxes, padded; ignore: ``(N, G)`` bool.
        cfg: matching thresholds; variances: box-coding variances (``AnchorConfig.variances``).
        max_need: the stage-2 cap of :func:`match_anchors_padded` (exact below it).
    Returns:
        labels: ``(N, A)`` int64 in {POSITIVE, BACKGROUND, IGNORE};
        target_deltas: ``(N, A, 4)`` float32, :func:`encode` of each positive's face box against its
        anchor, exactly 0 elsewhere.

    Memory: that of :func:`match_anchors_padded` (about ``11 * N * G * A`` float32 elements).
    """
    labels, matched = match_anchors_padded(anchors, boxes, ignore, cfg, max_need=max_need)
    positive = (labels == POSITIVE)[:, :, None]
    # non-positives are encoded against their own anchor, which gives exact zeros
    return labels, encode(torch.where(positive, matched, anchors), anchors, variances)


def _level_masks_padded(
    faces: Tensor,
    keep: Tensor,
    size: tuple[int, int],
    input_size: tuple[int, int],
    sides: Tensor,
    threshold: float,
) -> Tensor:
    """``(N, H_l, W_l)`` float32 0/1 masks of one level; ``faces (N, G, 4)``, ``keep (N, G)`` the
    faces that mark cells, ``sides (K,)``. One square side at a time: ``(N, G, H_l, W_l)`` each."""
    n, g = keep.shape
    h_l, w_l = size
    cy, cx = mask_cell_centres(size, input_size, faces.device)
    flat = faces.reshape(n * g, 4)
    # separable overlaps (square_overlap broadcasts a face axis ahead of its (Q, K) result)
    ox = square_overlap(cx, sides, flat[:, 0:1], flat[:, 2:3])  # (N * G, W_l, K)
    oy = square_overlap(cy, sides, flat[:, 1:2], flat[:, 3:4])  # (N * G, H_l, K)
    area = ((flat[:, 2] - flat[:, 0]) * (flat[:, 3] - flat[:, 1]))[:, None]  # (N * G, 1)
    marks = keep.reshape(n * g, 1, 1)
    hit = torch.zeros((n, h_l, w_l), dtype=torch.bool, device=faces.device)
    for k in range(sides.shape[0]):
        # square_face_iou broadcasts too: overlaps (N * G, 1, W_l) x (N * G, H_l, 1), one side
        # (1,), areas (N * G, 1) -> IoU (N * G, H_l, W_l)
        iou = square_face_iou(ox[:, None, :, k], oy[:, :, None, k], sides[k : k + 1], area)
        hit |= ((iou > threshold) & marks).view(n, g, h_l, w_l).any(dim=1)
    return hit.to(torch.float32)


def gt_masks_padded(
    boxes: Tensor,
    ignore: Tensor,
    input_size: tuple[int, int],
    sizes: Sequence[tuple[int, int]],
    anchor_sides: Sequence[float],
    levels: Sequence[int],
    cfg: GTMaskConfig,
) -> list[Tensor]:
    """FFMM ground-truth masks of a padded batch (Eq. 3 + the square-box IoU rule), without host
    syncs: equal to stacking ``gt_masks(boxes[n], input_size, sizes, anchor_sides, levels, cfg,
    gt_ignore=ignore[n])`` over the images. Degenerate boxes (padded rows too) mark no cell.

    Memory per level: ``N * G * (H_l + W_l) * K`` float32 overlaps for ``K`` square sides, then,
    one side at a time, about ``3 * N * G * H_l * W_l`` float32 elements.

    Args:
        boxes: ``(N, G, 4)`` float xyxy face boxes in input pixels, padded (``G`` may be 0).
        ignore: ``(N, G)`` bool; leaves faces out only when ``cfg.ignored_faces_count`` is False.
        input_size: ``(H, W)`` of the network input.
        sizes: ``(H_l, W_l)`` of every level (all levels, finest first).
        anchor_sides: anchor side of every level (``AnchorConfig.sides``).
        levels: the masked levels, e.g. ``ModelConfig.ffmm_levels``.
        cfg: square sizes, ``Th_GT`` and whether ignored faces count.
    Returns:
        one ``(N, H_l, W_l)`` float32 tensor of 0/1 per level in ``levels``, in that order.
    """
    if boxes.ndim != 3 or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be (N, G, 4), got shape {tuple(boxes.shape)}")
    if ignore.shape != boxes.shape[:2]:
        raise ValueError(f"ignore must be (N, G) = {tuple(boxes.shape[:2])}, got shape {tuple(ignore.shape)}")
    if len(anchor_sides) != len(sizes):
        raise ValueError(f"need one anchor side per level: {len(anchor_sides)} sides, {len(sizes)} levels")
    h_in, w_in = int(input_size[0]), int(input_size[1])
    if h_in <= 0 or w_in <= 0:
        raise ValueError(f"input_size must be positive, got {tuple(input_size)}")
    device = boxes.device
    n, g = boxes.shape[:2]
    faces = boxes.to(torch.float32)
    left_out = ignore.to(device=device, dtype=torch.bool)
    if cfg.ignored_faces_count:
        left_out = torch.zeros_like(left_out)
    # degenerate boxes never mark a cell
    keep = valid_faces(faces.reshape(n * g, 4), left_out.reshape(n * g)).view(n, g)

    masks = []
    for level in levels:
        if not 0 <= level < len(sizes):
            raise ValueError(f"masked level {level} out of range for {len(sizes)} levels")
        h_l, w_l = sizes[level]
        sides = mask_square_sides(level, anchor_sides, cfg).to(device, non_blocking=True)
        if g and h_l and w_l:
            masks.append(_level_masks_padded(faces, keep, (h_l, w_l), (h_in, w_in), sides, cfg.iou_threshold))
        else:
            masks.append(torch.zeros((n, h_l, w_l), dtype=torch.float32, device=device))
    return masks
