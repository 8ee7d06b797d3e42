"""S3FD matching on hand-built cases, plus properties on a real anchor grid."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ufssd.config import AnchorConfig, MatchConfig
from ufssd.geometry import (
    BACKGROUND,
    IGNORE,
    POSITIVE,
    anchors_for_input,
    build_box_index,
    build_targets,
    encode,
    match_anchors,
    overlapping_pairs,
    paired_iou,
)

CFG = MatchConfig()


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def _match(anchors, boxes, ignore=None, cfg=CFG):
    boxes = _t(boxes)
    ignore = torch.zeros(len(boxes), dtype=torch.bool) if ignore is None else torch.tensor(ignore)
    return match_anchors(_t(anchors), boxes, ignore, cfg)


# Face A (0,0,10,10) with three anchors of IoU 1, 90/110, 90/110 (three stage-1 anchors).
A_ANCHORS = [[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11]]
FACE_A = [0, 0, 10, 10]
# Face B (100,0,110,10): one anchor of IoU 1, then IoU 0.25 (twice), 30/170, 20/180, 10/190.
B_ANCHORS = [
    [100, 0, 110, 10],  # 3: IoU 1
    [100, 6, 110, 16],  # 4: IoU 40/160 = 0.25
    [106, 0, 116, 10],  # 5: IoU 0.25 (a tie with 4)
    [107, 0, 117, 10],  # 6: IoU 30/170 = 0.176
    [108, 0, 118, 10],  # 7: IoU 20/180 = 0.111
    [109, 0, 119, 10],  # 8: IoU 10/190 = 0.053, never a candidate
]
FACE_B = [100, 0, 110, 10]


def test_no_faces_all_background():
    labels, matched = _match(A_ANCHORS, [])
    assert labels.tolist() == [BACKGROUND] * 3
    assert labels.dtype == torch.int64
    assert torch.equal(matched, torch.zeros(3, 4))


def test_stage2_rescues_an_undermatched_face_ties_to_lower_index():
    # stage 1: A has 3, B has 1 -> N = round(4 / 2) = 2; B takes 1 more: anchors 4 and 5 tie at
    # IoU 0.25, the lower index (4) wins.
    labels, matched = _match(A_ANCHORS + B_ANCHORS, [FACE_A, FACE_B])
    assert labels.tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert matched[4].tolist() == FACE_B and matched[0].tolist() == FACE_A
    # without scale compensation B keeps its single anchor
    off = dataclasses.replace(CFG, scale_compensation=False)
    labels, _ = _match(A_ANCHORS + B_ANCHORS, [FACE_A, FACE_B], cfg=off)
    assert labels.tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_stage2_n_rounds_half_up_and_takes_top_by_iou():
    # A with 4 stage-1 anchors (the 4th: (1,1,11,11), IoU 81/119), B with 1: N = round(2.5) = 3;
    # B takes 2 more, best IoU first: anchors 5 and 6 (0.25 each), not 7 (0.176)
    anchors = A_ANCHORS + [[1, 1, 11, 11]] + B_ANCHORS
    labels, _ = _match(anchors, [FACE_A, FACE_B])
    assert labels.tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]


def test_stage2_candidates_need_iou_above_min_iou():
    # N = round((9 + 1) / 2) = 5 but B has only 4 anchors with IoU > 0.1: anchor 8 (0.053) stays out
    anchors = [[dx, dy, 10 + dx, 10 + dy] for dx in (0, 1, 2) for dy in (0, 1, 2)] + B_ANCHORS
    labels, _ = _match(anchors, [FACE_A, FACE_B])
    assert labels[:9].tolist() == [1] * 9
    assert labels[9:].tolist() == [1, 1, 1, 1, 1, 0]


def test_face_no_anchor_overlaps_above_min_iou_stays_unmatched():
    # a 2x2 face inside a 10x10 anchor: IoU 4/100 = 0.04 <= 0.1, so no forced anchor, no stage 2
    labels, matched = _match([[0, 0, 10, 10], [5, 0, 15, 10]], [[1, 1, 3, 3]])
    assert labels.tolist() == [BACKGROUND, BACKGROUND]
    assert torch.equal(matched, torch.zeros(2, 4))


def test_best_anchor_forced_only_above_min_iou():
    # face (0,0,10,10) vs anchor (0,0,20,20): IoU 0.25 < 0.35, but it is the face's best -> positive
    labels, matched = _match([[0, 0, 20, 20], [0, 0, 40, 40]], [[0, 0, 10, 10]])
    assert labels.tolist() == [POSITIVE, BACKGROUND]
    assert matched[0].tolist() == [0, 0, 10, 10]


def test_ignored_face_gives_ignore_not_positive():
    # anchor 0 = the ignored face (IoU 1): IGNORE; anchor 1 IoU 0.25 < 0.35: BACKGROUND
    labels, matched = _match([[0, 0, 10, 10], [6, 0, 16, 10], [50, 50, 60, 60]], [[0, 0, 10, 10]], [True])
    assert labels.tolist() == [IGNORE, BACKGROUND, BACKGROUND]
    assert torch.equal(matched, torch.zeros(3, 4))


def test_positive_wins_over_ignore():
    labels, _ = _match([[0, 0, 10, 10]], [[0, 0, 10, 10], [0, 0, 10, 10]], [True, False])
    assert labels.tolist() == [POSITIVE]


def test_zero_size_box_never_positive():
    anchors = [[0, 0, 10, 10], [4, 0, 14, 10]]
    for box in ([5, 0, 5, 10], [0, 5, 10, 5], [10, 10, 0, 0]):
        labels, _ = _match(anchors, [box])
        assert labels.tolist() == [BACKGROUND, BACKGROUND], box


def test_stage1_tie_goes_to_lower_face_index():
    # anchor 0 has IoU 80/120 with both faces; each face's own anchor is forced to it
    anchors = [[0, 0, 10, 10], [-2, 0, 8, 10], [2, 0, 12, 10]]
    faces = [[-2, 0, 8, 10], [2, 0, 12, 10]]
    labels, matched = _match(anchors, faces)
    assert labels.tolist() == [1, 1, 1]
    assert matched[0].tolist() == faces[0]
    labels, matched = _match(anchors, faces[::-1])
    assert matched[0].tolist() == faces[1]  # now faces[1] comes first


def test_shared_best_anchor_goes_to_the_face_it_overlaps_most():
    # both faces' best anchor is anchor 0 (IoU 1 with face 1, 0.64 with face 0)
    anchors = [[0, 0, 10, 10], [40, 40, 50, 50]]
    faces = [[0, 0, 8, 8], [0, 0, 10, 10]]
    labels, matched = _match(anchors, faces, cfg=dataclasses.replace(CFG, scale_compensation=False))
    assert labels.tolist() == [POSITIVE, BACKGROUND]
    assert matched[0].tolist() == faces[1]


def test_deterministic_and_inputs_checked():
    anchors = anchors_for_input(256, 256, AnchorConfig())
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(30, 2, generator=gen) * 220
    boxes = torch.cat([xy, xy + torch.rand(30, 2, generator=gen) * 30 + 2], 1)
    ignore = torch.rand(30, generator=gen) < 0.2
    first = match_anchors(anchors, boxes, ignore, CFG)
    second = match_anchors(anchors, boxes, ignore, CFG, anchor_index=build_box_index(anchors))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    with pytest.raises(ValueError):
        match_anchors(anchors, boxes, ignore[:3], CFG)
    with pytest.raises(ValueError):
        match_anchors(anchors, boxes.clone().fill_(float("nan")), ignore, CFG)


def box_iou(a, b):
    """Dense ``(G, A)`` IoU, written independently of the package (torchvision's formula)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _dense_reference(anchors, boxes, ignore, cfg):
    """A straightforward dense implementation of the documented rules, for comparison."""
    A, G = anchors.shape[0], boxes.shape[0]
    valid = ~ignore & ((boxes[:, 2:] - boxes[:, :2]) > 0).all(1)
    iou = box_iou(boxes, anchors)
    near_ign = (iou[~valid] >= cfg.ignore_iou).any(0) if (~valid).any() else torch.zeros(A, dtype=torch.bool)
    viou = iou.masked_fill(~valid[:, None], -1)
    best, face = viou.max(0)
    pos = best >= cfg.positive_iou
    for g in range(G):  # forced anchors; conflicts: highest IoU, then lower face
        if not valid[g]:
            continue
        v, a = viou[g].max(0)
        if v <= cfg.min_iou:
            continue
        rivals = [h for h in range(G) if valid[h] and viou[h].max(0)[1] == a and viou[h, a] > cfg.min_iou]
        winner = min(rivals, key=lambda h: (-viou[h, a].item(), h))
        pos[a], face[a] = True, winner
    counts = torch.bincount(face[pos], minlength=G)
    if cfg.scale_compensation and (counts > 0).any():
        n = int(torch.floor(counts[counts > 0].double().mean() + 0.5))
        claims = {}
        for g in range(G):
            if not valid[g] or counts[g] >= n:
                continue
            cand = [a for a in range(A) if viou[g, a] > cfg.min_iou and not pos[a]]
            cand.sort(key=lambda a: (-viou[g, a].item(), a))
            for a in cand[: n - counts[g]]:
                claims.setdefault(a, []).append(g)
        for a, gs in claims.items():
            pos[a], face[a] = True, min(gs, key=lambda h: (-viou[h, a].item(), h))
    labels = torch.zeros(A, dtype=torch.int64)
    labels[near_ign & ~pos] = IGNORE
    labels[pos] = POSITIVE
    matched = torch.zeros(A, 4)
    matched[pos] = boxes[face[pos]]
    return labels, matched


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_dense_reference_on_a_grid(seed):
    anchors = anchors_for_input(128, 128, AnchorConfig())
    gen = torch.Generator().manual_seed(seed)
    n = 25
    size = torch.exp(torch.empty(n).uniform_(1.0, 4.5, generator=gen))
    xy = torch.rand(n, 2, generator=gen) * 128 - 8
    boxes = torch.cat([xy, xy + size[:, None] * torch.empty(n, 2).uniform_(0.7, 1.3, generator=gen)], 1)
    boxes[0, 2] = boxes[0, 0]  # degenerate
    ignore = torch.rand(n, generator=gen) < 0.2
    labels, matched = match_anchors(anchors, boxes, ignore, CFG)
    ref_labels, ref_matched = _dense_reference(anchors, boxes, ignore, CFG)
    assert torch.equal(labels, ref_labels)
    assert torch.equal(matched, ref_matched)
    assert (labels == POSITIVE).sum() > 0 and (labels == IGNORE).sum() > 0


def test_overlapping_pairs_is_exactly_the_overlapping_set():
    anchors = anchors_for_input(128, 256, AnchorConfig())
    gen = torch.Generator().manual_seed(5)
    xy = torch.rand(20, 2, generator=gen) * 250 - 20
    boxes = torch.cat([xy, xy + torch.rand(20, 2, generator=gen) * 80], 1)
    i, j = overlapping_pairs(boxes, anchors)
    dense = torch.nonzero(box_iou(boxes, anchors) > 0, as_tuple=True)
    assert torch.equal(i, dense[0]) and torch.equal(j, dense[1])
    # with a floor, every pair at or above it is still there
    i2, j2 = overlapping_pairs(boxes, anchors, iou_floor=0.1)
    wanted = paired_iou(boxes[i], anchors[j]) >= 0.1
    kept = set(zip(i2.tolist(), j2.tolist()))
    assert set(zip(i[wanted].tolist(), j[wanted].tolist())) <= kept


def test_build_targets_encodes_positives_and_zeros_elsewhere():
    anchors = anchors_for_input(128, 128, AnchorConfig())
    boxes = [_t([[10, 10, 40, 44], [60, 60, 62, 62]]), _t([])]
    ignore = [torch.tensor([False, True]), torch.zeros(0, dtype=torch.bool)]
    labels, deltas = build_targets(anchors, boxes, ignore, CFG, AnchorConfig().variances)
    assert labels.shape == (2, anchors.shape[0]) and deltas.shape == (2, anchors.shape[0], 4)
    pos = labels[0] == POSITIVE
    assert pos.sum() > 0 and (labels[1] == BACKGROUND).all()
    face = boxes[0][0].expand(int(pos.sum()), 4)
    assert torch.allclose(deltas[0][pos], encode(face, anchors[pos], AnchorConfig().variances))
    assert (deltas[0][~pos] == 0).all() and (deltas[1] == 0).all()
    assert torch.isfinite(deltas).all()
