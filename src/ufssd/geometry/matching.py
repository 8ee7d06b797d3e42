"""Anchor matching: S3FD's two stages with scale compensation (paper notes section 3), and the
batch's training targets built from it (:func:`build_targets`: labels plus encoded boxes).

Labels per anchor: :data:`POSITIVE` (1), :data:`BACKGROUND` (0), :data:`IGNORE` (-1).

Our exact reading (see also ``docs/geometry.md``):

* A face is *valid* unless it is marked ignore or has zero/negative width or height; only valid
  faces make positives.
* Stage 1: an anchor whose best IoU with a valid face is ``>= positive_iou`` (0.35) is positive,
  assigned to that face (ties: the lower face index). Each valid face's best anchor (ties: the lower
  anchor index) is also forced positive and assigned to that face, but only when that IoU is
  ``> min_iou`` (0.1): a face that no anchor overlaps above 0.1 stays unmatched. When several
  faces have the same best anchor, it goes to the face it overlaps most (ties: the lower index).
* Stage 2 (``scale_compensation``): ``N = floor(mean + 0.5)`` of the stage-1 anchor counts of the
  faces that got at least one (per image). Each valid face with ``n < N`` stage-1 anchors takes
  its anchors with IoU ``> min_iou`` that are not already positive, best IoU first (ties: the lower
  anchor index), until it has ``N`` in total ("top-N" of S3FD, its own stage-1 anchors counting
  towards the N). An anchor wanted by two such faces goes to the face it overlaps most (ties: the
  lower face index); the other face does not take a replacement.
* An anchor that is not positive and has IoU ``>= ignore_iou`` with a face that is not valid is
  :data:`IGNORE`; every other anchor is :data:`BACKGROUND`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ufssd.config import MatchConfig
from ufssd.geometry.boxes import encode
from ufssd.geometry.pairs import BoxIndex, build_box_index, overlapping_pairs, paired_iou

__all__ = ["POSITIVE", "BACKGROUND", "IGNORE", "match_anchors", "valid_faces", "build_targets"]

POSITIVE = 1
BACKGROUND = 0
IGNORE = -1


def valid_faces(gt_boxes: Tensor, gt_ignore: Tensor) -> Tensor:
    """``(G,)`` bool: faces that may make positives (not ignored, width and height > 0)."""
    wh = gt_boxes[:, 2:] - gt_boxes[:, :2]
    return ~gt_ignore & (wh > 0).all(dim=1)


def _check_inputs(anchors: Tensor, gt_boxes: Tensor, gt_ignore: Tensor) -> None:
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f"anchors must be (A, 4), got shape {tuple(anchors.shape)}")
    if gt_boxes.ndim != 2 or gt_boxes.shape[1] != 4:
        raise ValueError(f"gt_boxes must be (G, 4), got shape {tuple(gt_boxes.shape)}")
    if gt_ignore.shape != gt_boxes.shape[:1]:
        raise ValueError(
            f"gt_ignore must be (G,) = {tuple(gt_boxes.shape[:1])}, got shape {tuple(gt_ignore.shape)}"
        )
    if not torch.isfinite(gt_boxes).all():
        raise ValueError("gt_boxes contains NaN or infinite coordinates")


def _check_config(cfg: MatchConfig) -> None:
    # only overlapping pairs are examined, so every "IoU >= t" threshold must be > 0
    if not (cfg.positive_iou > 0 and cfg.ignore_iou > 0 and cfg.min_iou >= 0):
        raise ValueError(
            "MatchConfig needs positive_iou > 0, ignore_iou > 0 and min_iou >= 0, got "
            f"{cfg.positive_iou}, {cfg.ignore_iou}, {cfg.min_iou}"
        )




def _best_per_key(key: Tensor, other: Tensor, value: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """For each distinct ``key`` among ``(P,)`` pairs, the pair of highest ``value`` (ties: the lower
    ``other``). Returns ``keys (K,)`` ascending, their ``other (K,)`` and ``value (K,)``."""
    best = torch.full((size,), float("-inf"), dtype=value.dtype, device=value.device)
    best.scatter_reduce_(0, key, value, reduce="amax")
    top = value == best[key]
    none = torch.iinfo(torch.int64).max
    pick = torch.full((size,), none, dtype=torch.int64, device=value.device)
    pick.scatter_reduce_(0, key[top], other[top], reduce="amin")
    keys = torch.nonzero(pick != none, as_tuple=True)[0]
    return keys, pick[keys], best[keys]


def _rank_within_face(face: Tensor, iou: Tensor, num_faces: int) -> tuple[Tensor, Tensor]:
    """Order ``(P,)`` candidates, given sorted by (face, anchor), by face, then IoU descending, then
    anchor; return that permutation ``(P,)`` and each ordered candidate's 0-based rank in its face."""
    by_iou = torch.argsort(iou, descending=True, stable=True)
    order = by_iou[torch.argsort(face[by_iou], stable=True)]
    face_sorted = face[order]
    counts = torch.bincount(face_sorted, minlength=num_faces)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=order.device) - starts[face_sorted]
    return order, rank


def _mean_count(counts: Tensor) -> Tensor:
    """S3FD's N: the mean stage-1 anchor count over faces that have any, rounded half up."""
    return torch.floor(counts[counts > 0].double().mean() + 0.5).to(torch.int64)


def _pair_ious(
    anchors: Tensor, gt_boxes: Tensor, cfg: MatchConfig, anchor_index: BoxIndex | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The overlapping (face, anchor) pairs and their IoUs: ``face (P,)``, ``anchor (P,)``, ``iou (P,)``."""
    floor = min(cfg.positive_iou, cfg.ignore_iou, cfg.min_iou)  # no pair below it matters
    pair_face, pair_anchor = overlapping_pairs(
        gt_boxes, anchors if anchor_index is None else anchor_index, iou_floor=floor
    )  # (P,) each
    pair_iou = paired_iou(gt_boxes.index_select(0, pair_face), anchors.index_select(0, pair_anchor))  # (P,)
    return pair_face, pair_anchor, pair_iou


def _strong_matches(
    face_v: Tensor, anchor_v: Tensor, iou_v: Tensor, num_anchors: int, cfg: MatchConfig
) -> tuple[Tensor, Tensor]:
    """Stage 1a: anchors with IoU >= positive_iou with their best valid face (ties: the lower face
    index). Returns the anchors ``(K,)`` and their faces ``(K,)``."""
    idx, best_face, best_iou = _best_per_key(anchor_v, face_v, iou_v, num_anchors)
    strong = best_iou >= cfg.positive_iou
    return idx[strong], best_face[strong]


def _forced_matches(
    face_v: Tensor, anchor_v: Tensor, iou_v: Tensor, num_anchors: int, num_faces: int, cfg: MatchConfig
) -> tuple[Tensor, Tensor]:
    """Stage 1b: each face's best anchor (ties: the lower anchor index) when its IoU > min_iou; an
    anchor that is the best of several faces goes to the one it overlaps most. Returns the anchors
    ``(K,)`` and their faces ``(K,)``."""
    faces, best_anchor, best_anchor_iou = _best_per_key(face_v, anchor_v, iou_v, num_faces)
    forcing = best_anchor_iou > cfg.min_iou
    idx, forced_face, _ = _best_per_key(
        best_anchor[forcing], faces[forcing], best_anchor_iou[forcing], num_anchors
    )
    return idx, forced_face


def _scale_compensation(
    face_v: Tensor,
    anchor_v: Tensor,
    iou_v: Tensor,
    positive: Tensor,
    face_of: Tensor,
    num_anchors: int,
    num_faces: int,
    cfg: MatchConfig,
) -> tuple[Tensor, Tensor] | None:
    """Stage 2: top up the faces with fewer than N stage-1 anchors. Returns the new anchors ``(K,)``
    and their faces ``(K,)``, or None when the stage does not apply (switched off, or no face has a
    stage-1 anchor)."""
    counts = torch.bincount(face_of[positive], minlength=num_faces)
    if not (cfg.scale_compensation and bool((counts > 0).any())):
        return None
    need = (_mean_count(counts) - counts).clamp(min=0)  # (G,); face_v holds valid faces only
    cand = (iou_v > cfg.min_iou) & (need[face_v] > 0) & ~positive[anchor_v]
    cand_face, cand_anchor, cand_iou = face_v[cand], anchor_v[cand], iou_v[cand]
    order, rank = _rank_within_face(cand_face, cand_iou, num_faces)
    take = order[rank < need[cand_face[order]]]
    idx, new_face, _ = _best_per_key(cand_anchor[take], cand_face[take], cand_iou[take], num_anchors)
    return idx, new_face


def _assign_positives(
    face_v: Tensor,
    anchor_v: Tensor,
    iou_v: Tensor,
    num_anchors: int,
    num_faces: int,
    cfg: MatchConfig,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Stage 1a, then 1b, then 2 over the valid faces' pairs ``(P,)``, each stage's assignment
    overriding the one before. Returns ``positive (A,)`` bool and ``face_of (A,)`` int64, the
    assigned face of each positive (0 elsewhere)."""
    positive = torch.zeros(num_anchors, dtype=torch.bool, device=device)
    face_of = torch.zeros(num_anchors, dtype=torch.int64, device=device)

    idx, face = _strong_matches(face_v, anchor_v, iou_v, num_anchors, cfg)
    positive[idx] = True
    face_of[idx] = face

    idx, face = _forced_matches(face_v, anchor_v, iou_v, num_anchors, num_faces, cfg)
    positive[idx] = True
    face_of[idx] = face

    topped_up = _scale_compensation(face_v, anchor_v, iou_v, positive, face_of, num_anchors, num_faces, cfg)
    if topped_up is not None:
        idx, face = topped_up
        positive[idx] = True
        face_of[idx] = face
    return positive, face_of


def match_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_ignore: Tensor,
    cfg: MatchConfig,
    *,
    anchor_index: BoxIndex | None = None,
) -> tuple[Tensor, Tensor]:
    """S3FD two-stage matching with scale compensation (exact rules in the module docstring).

    Only (face, anchor) pairs that overlap are examined (:func:`overlapping_pairs`); IoUs are
    float, computed by :func:`paired_iou`.

    Args:
        anchors: ``(A, 4)`` float xyxy, input pixels.
        gt_boxes: ``(G, 4)`` float xyxy face boxes (``G`` may be 0).
        gt_ignore: ``(G,)`` bool, faces marked ignore.
        cfg: thresholds and the stage-2 switch.
        anchor_index: ``build_box_index(anchors)``, to share between the images of a batch
            (optional; built here when not given).
    Returns:
        labels: ``(A,)`` int64 in {POSITIVE, BACKGROUND, IGNORE}.
        matched_boxes: ``(A, 4)`` float (dtype of ``anchors``), the assigned face box of each
        positive; zeros elsewhere.
    """
    _check_inputs(anchors, gt_boxes, gt_ignore)
    _check_config(cfg)
    device = anchors.device
    num_anchors, num_faces = anchors.shape[0], gt_boxes.shape[0]
    labels = torch.full((num_anchors,), BACKGROUND, dtype=torch.int64, device=device)
    matched = torch.zeros((num_anchors, 4), dtype=anchors.dtype, device=device)
    if num_faces == 0 or num_anchors == 0:
        return labels, matched

    gt_boxes = gt_boxes.to(device=device, dtype=anchors.dtype)
    valid = valid_faces(gt_boxes, gt_ignore.to(device=device, dtype=torch.bool))
    if anchor_index is not None and anchor_index.boxes.shape != anchors.shape:
        raise ValueError("anchor_index was built for other anchors")
    pair_face, pair_anchor, pair_iou = _pair_ious(anchors, gt_boxes, cfg, anchor_index)

    # anchors near a face that is not valid: IGNORE unless they become positive
    near_ignored = torch.zeros(num_anchors, dtype=torch.bool, device=device)
    near_ignored[pair_anchor[~valid[pair_face] & (pair_iou >= cfg.ignore_iou)]] = True

    keep = valid[pair_face]
    positive, face_of = _assign_positives(
        pair_face[keep], pair_anchor[keep], pair_iou[keep], num_anchors, num_faces, cfg, device
    )

    labels[near_ignored & ~positive] = IGNORE
    labels[positive] = POSITIVE
    matched[positive] = gt_boxes[face_of[positive]]
    return labels, matched


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
