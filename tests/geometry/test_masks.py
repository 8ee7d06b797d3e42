"""FFMM ground-truth masks: Eq. 3 centres and the square-box IoU rule, worked by hand."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ufssd.config import AnchorConfig, GTMaskConfig
from ufssd.geometry import feature_sizes, gt_masks, mask_cell_centres, mask_square_sides

ONE_SQUARE = GTMaskConfig(anchor_scales=(1.0,))


def _one_level(boxes, cfg=GTMaskConfig(), input_size=(64, 64), size=(4, 4), side=16.0, **kw):
    return gt_masks(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), input_size, [size], [side], (0,), cfg, **kw)[0]


def test_eq3_centres_padded_input_equal_anchor_centres():
    cy, cx = mask_cell_centres((4, 8), (128, 256))
    assert cx.tolist() == [16.0, 48.0, 80.0, 112.0, 144.0, 176.0, 208.0, 240.0]  # (x + 0.5) * 32
    assert cy.tolist() == [16.0, 48.0, 80.0, 112.0]


def test_eq3_centres_unpadded_input():
    cy, cx = mask_cell_centres((2, 4), (30, 100))  # pitch 15 in y, 25 in x
    assert cx.tolist() == [12.5, 37.5, 62.5, 87.5]
    assert cy.tolist() == [7.5, 22.5]


def test_square_sides_anchor_and_rf_modes():
    sides = AnchorConfig().sides
    assert torch.allclose(mask_square_sides(0, sides, GTMaskConfig()), torch.tensor([8.0, 11.36, 16.0, 22.56, 32.0]))
    rf = GTMaskConfig(mode="rf")
    assert torch.allclose(mask_square_sides(1, sides, rf), torch.tensor([32.0, 51.0, 70.0, 89.0, 108.0]))
    with pytest.raises(ValueError, match="mode"):
        mask_square_sides(0, sides, GTMaskConfig(mode="bogus"))


def test_two_boxes_one_square_per_cell_by_hand():
    # 64x64 input, 4x4 cells of pitch 16, one square of side 16 per cell = the cell itself.
    # face A (0,0,20,20): cell (0,0) IoU 256/400; (0,1) 64/592; (1,0) 64/592; (1,1) 16/640 -> all > 1e-3
    # face B (40,40,64,50): cells (2,2) 64/432, (2,3) 128/496, (3,2) 16/480, (3,3) 32/464
    mask = _one_level([[0, 0, 20, 20], [40, 40, 64, 50]], cfg=ONE_SQUARE)
    expected = torch.tensor(
        [
            [1, 1, 0, 0],
            [1, 1, 0, 0],
            [0, 0, 1, 1],
            [0, 0, 1, 1],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(mask, expected)


def test_two_boxes_default_squares_by_hand():
    # default scales: sides 8, 11.36, 16, 22.56, 32 around centres 8, 24, 40, 56.
    # face A (0,0,20,20): the largest square of cell column 2 spans [24, 56]: no overlap, so columns
    # 0-1 only (and rows 0-1); face B (40,40,64,50): column/row 1 squares end at 40 (touch only).
    # face C (30,2,33,5) (3x3): cell (0,1) centre (24,8): the 16-square [16,32]x[0,16] overlaps
    # 2x3 = 6 -> IoU 6/(256+9-6) = 0.023 > 1e-3; cell (0,2) centre (40,8): the 22.56-square
    # [28.72,51.28] overlaps 3x3 = 9 -> 9/509 = 0.018; nothing reaches rows >= 1 (their squares
    # start at 24 - 16 = 8 > 5).
    mask = _one_level([[0, 0, 20, 20], [40, 40, 64, 50], [30, 2, 33, 5]])
    expected = torch.tensor(
        [
            [1, 1, 1, 0],
            [1, 1, 0, 0],
            [0, 0, 1, 1],
            [0, 0, 1, 1],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(mask, expected)


def test_threshold_decides_for_a_tiny_face():
    # face (0,0,2,2), area 4: best square at cell (0,0) is side 16 ([0,16]^2): IoU 4/256 = 0.0156;
    # sides 8 and 11.36 ([4,12], [2.32,13.68]) miss it; 22.56 -> 4/509, 32 -> 4/1024.
    assert _one_level([[0, 0, 2, 2]]).sum() == 1
    assert _one_level([[0, 0, 2, 2]])[0, 0] == 1
    assert _one_level([[0, 0, 2, 2]], cfg=GTMaskConfig(iou_threshold=0.0150))[0, 0] == 1
    assert _one_level([[0, 0, 2, 2]], cfg=GTMaskConfig(iou_threshold=0.0160)).sum() == 0


def test_no_faces_and_degenerate_faces_give_empty_masks():
    assert _one_level([]).sum() == 0
    assert _one_level([[10, 10, 10, 30], [10, 10, 30, 10], [30, 30, 20, 20]]).sum() == 0


def test_ignored_faces_count_by_default_and_can_be_left_out():
    boxes = [[0, 0, 20, 20], [40, 40, 64, 50]]
    ignore = torch.tensor([False, True])
    with_ignored = _one_level(boxes, gt_ignore=ignore)
    assert with_ignored[3, 3] == 1
    without = _one_level(boxes, cfg=dataclasses.replace(GTMaskConfig(), ignored_faces_count=False), gt_ignore=ignore)
    assert without[3, 3] == 0 and without[0, 0] == 1


def test_levels_order_and_shapes():
    cfg = AnchorConfig()
    sizes = feature_sizes(128, 256, cfg.strides)
    masks = gt_masks(torch.tensor([[10.0, 10.0, 60.0, 60.0]]), (128, 256), sizes, cfg.sides, (3, 0), GTMaskConfig())
    assert [tuple(m.shape) for m in masks] == [(4, 8), (32, 64)]
    assert all(m.dtype == torch.float32 and set(m.unique().tolist()) <= {0.0, 1.0} for m in masks)
    with pytest.raises(ValueError, match="level"):
        gt_masks(torch.zeros((0, 4)), (128, 256), sizes, cfg.sides, (6,), GTMaskConfig())


def _brute_force(boxes, input_size, sizes, sides_all, level, cfg):
    """Every face x cell x square, dense: the definition, no windows."""
    h_l, w_l = sizes[level]
    cy, cx = mask_cell_centres((h_l, w_l), input_size)
    sides = mask_square_sides(level, sides_all, cfg)
    cyy, cxx = torch.meshgrid(cy, cx, indexing="ij")
    c = torch.stack([cxx, cyy], -1).reshape(-1, 1, 1, 2)  # (C, 1, 1, 2)
    half = (sides / 2).reshape(1, 1, -1, 1)
    sq = torch.cat([c - half, c + half], -1)  # (C, 1, K, 4)
    f = boxes.reshape(1, -1, 1, 4)
    iw = (torch.minimum(sq[..., 2], f[..., 2]) - torch.maximum(sq[..., 0], f[..., 0])).clamp(min=0)
    ih = (torch.minimum(sq[..., 3], f[..., 3]) - torch.maximum(sq[..., 1], f[..., 1])).clamp(min=0)
    inter = iw * ih
    area_f = ((f[..., 2] - f[..., 0]) * (f[..., 3] - f[..., 1]))
    valid = ((f[..., 2] > f[..., 0]) & (f[..., 3] > f[..., 1]))
    iou = inter / (sides.reshape(1, 1, -1) ** 2 + area_f - inter)
    hit = ((iou > cfg.iou_threshold) & valid).flatten(1).any(1)
    return hit.reshape(h_l, w_l).float()


@pytest.mark.parametrize("mode", ["anchor", "rf"])
@pytest.mark.parametrize("input_size", [(128, 256), (100, 150)])
def test_windows_agree_with_brute_force(mode, input_size):
    gen = torch.Generator().manual_seed(3)
    n = 40
    size = torch.exp(torch.empty(n).uniform_(0.0, 5.0, generator=gen))
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([input_size[1], input_size[0]]) * 1.2 - 10
    boxes = torch.cat([xy, xy + size[:, None] * torch.empty(n, 2).uniform_(0.5, 1.5, generator=gen)], 1)
    boxes[:3, 2] = boxes[:3, 0]  # a few degenerate ones
    acfg, cfg = AnchorConfig(), GTMaskConfig(mode=mode)
    sizes = feature_sizes(*input_size, acfg.strides)
    masks = gt_masks(boxes, input_size, sizes, acfg.sides, tuple(range(6)), cfg)
    for level, mask in enumerate(masks):
        assert torch.equal(mask, _brute_force(boxes, input_size, sizes, acfg.sides, level, cfg)), level
