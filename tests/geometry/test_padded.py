"""Padded, batched matching and FFMM masks: equal to the sparse per-image functions, tie rules
included, and computed without reading a value back to the host."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ufssd.config import GTMaskConfig, MatchConfig
from ufssd.geometry import (
    BACKGROUND,
    IGNORE,
    POSITIVE,
    anchors_for_input,
    build_targets,
    build_targets_padded,
    feature_sizes,
    gt_masks,
    gt_masks_padded,
    match_anchors,
    match_anchors_padded,
)
from ufssd.presets import get_preset

PRESET = get_preset("ufssd_light_ffmm_x1")
VARIANCES = PRESET.anchors.variances
NO_STAGE2 = dataclasses.replace(PRESET.match, scale_compensation=False)
SQUARE, WIDE = (320, 320), (256, 384)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many small tensor operations: one intra-op thread, as two threads spinning for a CPU that
    another job loads make this file several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _anchors(size: tuple[int, int]) -> torch.Tensor:
    return anchors_for_input(size[0], size[1], PRESET.anchors)


def _random_batch(
    seed: int, n: int, g: int, size: tuple[int, int], max_side: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, g, 4)`` boxes and ``(n, g)`` flags: sides log-uniform from 2 px, aspect 1/2..2, centres
    anywhere (faces cross and touch the borders), half of them on a 2-pixel grid (exact IoU ties
    with the anchors), ~15 % ignored, ~5 % degenerate, ~20 % padded rows, one image with no face."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    top = max_side if max_side is not None else float(max(h, w))
    side = torch.exp(torch.empty(n, g).uniform_(0.7, float(torch.tensor(top).log()), generator=gen))
    aspect = torch.exp(torch.empty(n, g).uniform_(-0.7, 0.7, generator=gen))
    bw, bh = side * aspect, side / aspect
    cx = torch.rand(n, g, generator=gen) * (w + 20) - 10
    cy = torch.rand(n, g, generator=gen) * (h + 20) - 10
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)
    on_grid = torch.rand(n, g, 1, generator=gen) < 0.5
    boxes = torch.where(on_grid, torch.round(boxes / 2) * 2, boxes)
    touching = torch.rand(n, g, 1, generator=gen) < 0.2  # clamped to the image: edges on the border
    limits = torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes = torch.where(touching, torch.minimum(boxes.clamp(min=0), limits), boxes)
    degenerate = torch.rand(n, g, generator=gen) < 0.05
    boxes[..., 2] = torch.where(degenerate, boxes[..., 0] - torch.rand(n, g, generator=gen).round(), boxes[..., 2])
    ignore = torch.rand(n, g, generator=gen) < 0.15
    padded = torch.rand(n, g, generator=gen) < 0.2
    if n > 1:
        padded[1] = True  # an image with no face
    boxes = boxes.masked_fill(padded[..., None], 0.0)
    return boxes, ignore | padded


def _assert_targets_equal(anchors, boxes, ignore, cfg: MatchConfig = PRESET.match, **kw) -> torch.Tensor:
    labels, deltas = build_targets_padded(anchors, boxes, ignore, cfg, VARIANCES, **kw)
    ref_labels, ref_deltas = build_targets(anchors, list(boxes), list(ignore), cfg, VARIANCES)
    assert torch.equal(labels, ref_labels)
    assert torch.equal(deltas, ref_deltas)
    return labels


def _assert_masks_equal(boxes, ignore, input_size, cfg: GTMaskConfig) -> list[torch.Tensor]:
    sizes = feature_sizes(input_size[0], input_size[1], PRESET.anchors.strides)
    sides, levels = PRESET.anchors.sides, range(len(sizes))
    masks = gt_masks_padded(boxes, ignore, input_size, sizes, sides, levels, cfg)
    per_image = [gt_masks(b, input_size, sizes, sides, levels, cfg, gt_ignore=i) for b, i in zip(boxes, ignore)]
    for level, mask in zip(levels, masks):
        assert mask.shape == (boxes.shape[0], *sizes[level]) and mask.dtype == torch.float32
        assert torch.equal(mask, torch.stack([m[level] for m in per_image]))
    return masks


# ---------------------------------------------------------------------------------------------
# random batches against the sparse functions


@pytest.mark.parametrize("size", [SQUARE, WIDE])
@pytest.mark.parametrize("cfg", [PRESET.match, NO_STAGE2], ids=["stage2", "no_stage2"])
def test_random_batches_equal_build_targets(size, cfg) -> None:
    anchors = _anchors(size)
    for seed in range(3):
        boxes, ignore = _random_batch(seed, 4, 20, size)
        labels = _assert_targets_equal(anchors, boxes, ignore, cfg)
        assert (labels == POSITIVE).any() and (labels == IGNORE).any()  # the batch exercises every label
        assert (labels[1] == BACKGROUND).all()  # the image with no face


def test_many_small_batches_equal_the_sparse_functions() -> None:
    # a small non-square input (2,730 anchors) makes many more random batches cheap
    size = (128, 256)
    anchors = _anchors(size)
    for seed in range(100, 116):
        boxes, ignore = _random_batch(seed, 4, 12, size)
        _assert_targets_equal(anchors, boxes, ignore)
        _assert_masks_equal(boxes, ignore, size, GTMaskConfig())


def test_crowded_images_equal_build_targets() -> None:
    anchors = _anchors(SQUARE)
    first, second = (_random_batch(seed, 1, 160, SQUARE, max_side=side) for seed, side in [(7, 48.0), (8, 24.0)])
    boxes, ignore = torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])
    labels = _assert_targets_equal(anchors, boxes, ignore)
    assert (labels == POSITIVE).sum(dim=1).min() > 300
    without = _assert_targets_equal(anchors, boxes, ignore, NO_STAGE2)
    assert ((labels == POSITIVE) & (without != POSITIVE)).sum() > 50  # stage 2 took anchors


@pytest.mark.parametrize(
    "cfg",
    [
        GTMaskConfig(),
        GTMaskConfig(ignored_faces_count=False),
        GTMaskConfig(mode="rf"),
        GTMaskConfig(mode="rf", ignored_faces_count=False),
    ],
    ids=["anchor", "anchor_no_ignored", "rf", "rf_no_ignored"],
)
def test_random_masks_equal_gt_masks(cfg) -> None:
    for seed, size in [(0, SQUARE), (1, WIDE)]:
        boxes, ignore = _random_batch(seed, 3, 16, size)
        masks = _assert_masks_equal(boxes, ignore, size, cfg)
        assert masks[0].any() and not masks[0][1].any()  # faces mark cells; the empty image none


def test_crowded_masks_equal_gt_masks() -> None:
    boxes, ignore = _random_batch(9, 1, 150, SQUARE, max_side=40.0)
    assert _assert_masks_equal(boxes, ignore, SQUARE, GTMaskConfig())[0].mean() > 0.2


def test_ignored_faces_count_switch_changes_masks() -> None:
    # one ignored face alone: it marks cells by default, none with ignored_faces_count=False
    boxes, ignore = torch.tensor([[[40.0, 40, 80, 90]]]), torch.tensor([[True]])
    on = _assert_masks_equal(boxes, ignore, SQUARE, GTMaskConfig())
    off = _assert_masks_equal(boxes, ignore, SQUARE, GTMaskConfig(ignored_faces_count=False))
    assert on[0].any() and not any(m.any() for m in off)


# ---------------------------------------------------------------------------------------------
# tie rules, on hand-built anchors (expected values worked out in the comments)


def _tie_case(anchors, faces, ignore=None, cfg: MatchConfig = PRESET.match):
    anchors = torch.tensor(anchors, dtype=torch.float32)
    boxes = torch.tensor(faces, dtype=torch.float32).reshape(1, -1, 4)
    ignore = torch.zeros(boxes.shape[:2], dtype=torch.bool) if ignore is None else torch.tensor([ignore])
    _assert_targets_equal(anchors, boxes, ignore, cfg)
    labels, matched = match_anchors_padded(anchors, boxes, ignore, cfg)
    assert torch.equal(matched[0], match_anchors(anchors, boxes[0], ignore[0], cfg)[1])
    return labels[0].tolist(), matched[0].tolist()


def test_stage1_tie_goes_to_lower_face() -> None:
    # anchor 0 has IoU 80/120 >= 0.35 with both faces; each face forces its own anchor (IoU 1)
    anchors = [[0, 0, 10, 10], [-2, 0, 8, 10], [2, 0, 12, 10]]
    faces = [[-2, 0, 8, 10], [2, 0, 12, 10]]
    labels, matched = _tie_case(anchors, faces)
    assert labels == [1, 1, 1] and matched[0] == faces[0]
    labels, matched = _tie_case(anchors, faces[::-1])
    assert labels == [1, 1, 1] and matched[0] == faces[1]


def test_forced_best_anchor_tie_goes_to_lower_anchor() -> None:
    # the face overlaps both anchors by half: IoU 50/150 < 0.35 each, the forced one is anchor 0
    face = [[5, 0, 15, 10]]
    assert _tie_case([[0, 0, 10, 10], [10, 0, 20, 10]], face)[0] == [1, 0]
    assert _tie_case([[10, 0, 20, 10], [0, 0, 10, 10]], face)[0] == [1, 0]


def test_shared_forced_anchor_tie_goes_to_lower_face() -> None:
    # anchor 0 is the best (IoU 1/3) of both faces; the lower face gets it, the other stays unmatched
    # (N = 1, and its only candidate is that anchor)
    anchors = [[0, 0, 10, 10], [60, 60, 70, 70]]
    faces = [[5, 0, 15, 10], [-5, 0, 5, 10]]
    labels, matched = _tie_case(anchors, faces)
    assert labels == [1, 0] and matched[0] == faces[0]
    labels, matched = _tie_case(anchors, faces[::-1])
    assert labels == [1, 0] and matched[0] == faces[1]


def test_shared_forced_anchor_goes_to_higher_iou() -> None:
    # anchor 0: IoU 1 with face 1, 0.64 with face 0 (scale compensation off: face 0 takes nothing)
    anchors = [[0, 0, 10, 10], [40, 40, 50, 50]]
    faces = [[0, 0, 8, 8], [0, 0, 10, 10]]
    labels, matched = _tie_case(anchors, faces, cfg=NO_STAGE2)
    assert labels == [1, 0] and matched[0] == faces[1]


# Face A (0,0,10,10) with four stage-1 anchors (IoU 1, 0.82, 0.82, 0.68); faces B and C with one
# each (IoU 1): N = round(6 / 3) = 2, so B and C each want one more anchor.
A_ANCHORS = [[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11], [1, 1, 11, 11]]
FACE_A = [0, 0, 10, 10]


def test_stage2_contested_anchor_tie_goes_to_lower_face() -> None:
    # B (100..110) and C (112..122): anchor 6 (106..116) has IoU 40/160 with each; B gets it and C,
    # the loser, takes no replacement (anchor 7, IoU 30/170 with C, stays background)
    anchors = A_ANCHORS + [[100, 0, 110, 10], [112, 0, 122, 10], [106, 0, 116, 10], [119, 0, 129, 10]]
    faces = [FACE_A, [100, 0, 110, 10], [112, 0, 122, 10]]
    labels, matched = _tie_case(anchors, faces)
    assert labels == [1, 1, 1, 1, 1, 1, 1, 0] and matched[6] == faces[1]
    labels, matched = _tie_case(anchors, [FACE_A, faces[2], faces[1]])
    assert labels == [1, 1, 1, 1, 1, 1, 1, 0] and matched[6] == faces[2]


def test_stage2_contested_anchor_goes_to_higher_iou() -> None:
    # C moved to 111..121: anchor 6 has IoU 50/150 with C, 40/160 with B, so C gets it
    anchors = A_ANCHORS + [[100, 0, 110, 10], [111, 0, 121, 10], [106, 0, 116, 10]]
    faces = [FACE_A, [100, 0, 110, 10], [111, 0, 121, 10]]
    labels, matched = _tie_case(anchors, faces)
    assert labels == [1] * 7 and matched[6] == faces[2]


def test_stage2_takes_tied_candidates_by_lower_anchor() -> None:
    # A with 3 stage-1 anchors, B with 1 (anchor 3): N = 2; B wants one more, and anchors 4 and 5
    # tie at IoU 40/160: the lower index (4) is taken. The third face overlaps no anchor.
    anchors = A_ANCHORS[:3] + [[100, 0, 110, 10], [100, 6, 110, 16], [106, 0, 116, 10]]
    faces = [FACE_A, [100, 0, 110, 10], [200, 200, 210, 210]]
    assert _tie_case(anchors, faces)[0] == [1, 1, 1, 1, 1, 0]
    anchors[4], anchors[5] = anchors[5], anchors[4]  # the other of the two tied boxes is now first
    assert _tie_case(anchors, faces)[0] == [1, 1, 1, 1, 1, 0]


def test_near_ignored_anchor_is_ignore_unless_positive() -> None:
    labels, _ = _tie_case([[0, 0, 10, 10], [50, 50, 60, 60]], [[0, 0, 10, 10], [48, 50, 58, 60]], [True, False])
    assert labels == [-1, 1]


# ---------------------------------------------------------------------------------------------
# padding, empty batches, the stage-2 cap


def test_padded_rows_change_nothing() -> None:
    anchors = _anchors(WIDE)
    boxes, ignore = _random_batch(3, 4, 12, WIDE)
    labels, deltas = build_targets_padded(anchors, boxes, ignore, PRESET.match, VARIANCES)
    sizes = feature_sizes(WIDE[0], WIDE[1], PRESET.anchors.strides)
    masks = gt_masks_padded(boxes, ignore, WIDE, sizes, PRESET.anchors.sides, (0, 1, 2), PRESET.gt_mask)
    # 5 padded rows appended, and 2 more in the middle (the faces keep their order)
    more = torch.cat([boxes[:, :6], torch.zeros(4, 2, 4), boxes[:, 6:], torch.zeros(4, 5, 4)], dim=1)
    pad = torch.ones(4, 2, dtype=torch.bool), torch.ones(4, 5, dtype=torch.bool)
    more_ignore = torch.cat([ignore[:, :6], pad[0], ignore[:, 6:], pad[1]], dim=1)
    labels2, deltas2 = build_targets_padded(anchors, more, more_ignore, PRESET.match, VARIANCES)
    masks2 = gt_masks_padded(more, more_ignore, WIDE, sizes, PRESET.anchors.sides, (0, 1, 2), PRESET.gt_mask)
    assert torch.equal(labels, labels2) and torch.equal(deltas, deltas2)
    assert all(torch.equal(m, m2) for m, m2 in zip(masks, masks2))
    assert (labels == POSITIVE).any()
    # and the same as the sparse function given only the rows that are not padding
    present = ~(ignore & (boxes == 0).all(dim=-1))
    kept = [b[p] for b, p in zip(boxes, present)], [i[p] for i, p in zip(ignore, present)]
    assert not present.all() and present.any(dim=1).sum() == 3
    ref_labels, ref_deltas = build_targets(anchors, *kept, PRESET.match, VARIANCES)
    assert torch.equal(labels, ref_labels) and torch.equal(deltas, ref_deltas)


@pytest.mark.parametrize("n, g", [(0, 3), (2, 0), (3, 4)])
def test_batches_without_faces(n, g) -> None:
    anchors = _anchors(SQUARE)
    boxes, ignore = torch.zeros(n, g, 4), torch.ones(n, g, dtype=torch.bool)  # padding only
    labels, deltas = build_targets_padded(anchors, boxes, ignore, PRESET.match, VARIANCES)
    assert labels.shape == (n, anchors.shape[0]) and labels.dtype == torch.int64
    assert deltas.shape == (n, anchors.shape[0], 4) and deltas.dtype == torch.float32
    assert (labels == BACKGROUND).all() and (deltas == 0).all()
    sizes = feature_sizes(SQUARE[0], SQUARE[1], PRESET.anchors.strides)
    masks = gt_masks_padded(boxes, ignore, SQUARE, sizes, PRESET.anchors.sides, (0, 5), PRESET.gt_mask)
    assert [m.shape for m in masks] == [(n, 80, 80), (n, 3, 3)] and not any(m.any() for m in masks)


def test_max_need_cap() -> None:
    # A: 4 stage-1 anchors, B: 1 -> N = round(2.5) = 3, B takes 2 more (anchors 5 and 6 of IoU 0.25
    # before 7 of 0.176); capped at 1 it takes only its best one
    anchors = torch.tensor(
        A_ANCHORS + [[100, 0, 110, 10], [100, 6, 110, 16], [106, 0, 116, 10], [107, 0, 117, 10]],
        dtype=torch.float32,
    )
    boxes = torch.tensor([[FACE_A, [100, 0, 110, 10]]], dtype=torch.float32)
    ignore = torch.zeros(1, 2, dtype=torch.bool)
    full = _assert_targets_equal(anchors, boxes, ignore, max_need=None)
    assert full[0].tolist() == [1, 1, 1, 1, 1, 1, 1, 0]
    assert torch.equal(_assert_targets_equal(anchors, boxes, ignore, max_need=2), full)
    capped, _ = match_anchors_padded(anchors, boxes, ignore, PRESET.match, max_need=1)
    assert capped[0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="max_need"):
        match_anchors_padded(anchors, boxes, ignore, PRESET.match, max_need=0)
    # uncapped and capped agree on real batches (no face needs 64)
    anchors, (boxes, ignore) = _anchors(SQUARE), _random_batch(5, 3, 30, SQUARE)
    assert torch.equal(
        build_targets_padded(anchors, boxes, ignore, PRESET.match, VARIANCES, max_need=None)[0],
        _assert_targets_equal(anchors, boxes, ignore),
    )


def test_inputs_checked() -> None:
    anchors = _anchors(SQUARE)
    boxes, ignore = torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="float32"):
        match_anchors_padded(anchors.double(), boxes, ignore, PRESET.match)
    with pytest.raises(ValueError, match=r"\(N, G, 4\)"):
        match_anchors_padded(anchors, boxes[0], ignore, PRESET.match)
    with pytest.raises(ValueError, match=r"\(N, G\)"):
        match_anchors_padded(anchors, boxes, ignore[:, :2], PRESET.match)
    with pytest.raises(ValueError, match="out of range"):
        gt_masks_padded(boxes, ignore, SQUARE, feature_sizes(320, 320, (4,)), (16.0,), (1,), PRESET.gt_mask)


# ---------------------------------------------------------------------------------------------
# no host synchronisation


def test_no_device_reads() -> None:
    # meta tensors have no values: any .item(), .tolist(), bool(), nonzero() or boolean-mask
    # indexing raises on them, so a run on them proves that nothing is read back to the host
    meta = {"device": "meta"}
    anchors = anchors_for_input(320, 448, PRESET.anchors, device="meta")
    boxes, ignore = torch.empty((3, 7, 4), **meta), torch.empty((3, 7), dtype=torch.bool, **meta)
    with pytest.raises((RuntimeError, NotImplementedError)):  # the sparse functions do read
        build_targets(anchors, list(boxes), list(ignore), PRESET.match, VARIANCES)
    for cfg, max_need in [(PRESET.match, 64), (PRESET.match, None), (NO_STAGE2, 64)]:
        labels, deltas = build_targets_padded(anchors, boxes, ignore, cfg, VARIANCES, max_need=max_need)
        assert labels.shape == (3, anchors.shape[0]) and labels.dtype == torch.int64
        assert deltas.shape == (3, anchors.shape[0], 4) and deltas.device.type == "meta"
    sizes = feature_sizes(320, 448, PRESET.anchors.strides)
    for cfg in (GTMaskConfig(), GTMaskConfig(mode="rf", ignored_faces_count=False)):
        masks = gt_masks_padded(boxes, ignore, (320, 448), sizes, PRESET.anchors.sides, range(6), cfg)
        assert [m.shape for m in masks] == [(3, *s) for s in sizes]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: checks that no step waits for the device")
def test_no_host_device_sync_on_cuda() -> None:
    device = torch.device("cuda")
    anchors = _anchors(WIDE)
    boxes, ignore = _random_batch(4, 6, 40, WIDE)
    sizes = feature_sizes(WIDE[0], WIDE[1], PRESET.anchors.strides)
    sides = PRESET.anchors.sides
    on_device = anchors.to(device), boxes.to(device), ignore.to(device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        labels, deltas = build_targets_padded(*on_device, PRESET.match, VARIANCES)
        masks = gt_masks_padded(*on_device[1:], WIDE, sizes, sides, range(6), PRESET.gt_mask)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref_labels, ref_deltas = build_targets(anchors, list(boxes), list(ignore), PRESET.match, VARIANCES)
    assert torch.equal(labels.cpu(), ref_labels)
    torch.testing.assert_close(deltas.cpu(), ref_deltas)  # float rounding may differ on the GPU
    ref_masks = gt_masks_padded(boxes, ignore, WIDE, sizes, sides, range(6), PRESET.gt_mask)
    assert all(torch.equal(m.cpu(), r) for m, r in zip(masks, ref_masks))
