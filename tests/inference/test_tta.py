"""Test-time augmentation: S3FD's scale plan, box voting, flips mapped back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ufssd.inference.tta import TTAConfig, TTAPass, box_vote, filter_boxes, merge_passes, scale_plan


def test_parse():
    assert TTAConfig.parse(None) is None and TTAConfig.parse("none") is None and TTAConfig.parse("") is None
    assert TTAConfig.parse("all") == TTAConfig(flip=True, multi_scale=True, vote=True)
    assert TTAConfig.parse("flip,vote") == TTAConfig(flip=True, vote=True)
    assert TTAConfig.parse(["scales"]) == TTAConfig(multi_scale=True)
    with pytest.raises(ValueError, match="unknown TTA"):
        TTAConfig.parse("rotate")


def test_scale_plan_small_image():
    # 480 x 640: max_shrink = sqrt(1700 * 1200 / 307200) = 2.577
    max_shrink = math.sqrt(1700 * 1200 / (480 * 640))
    plan = scale_plan(480, 640, TTAConfig(flip=True, multi_scale=True))
    assert plan == [
        TTAPass(None),
        TTAPass(None, flip=True),
        TTAPass(0.5, keep="large"),
        TTAPass(2.0, keep="small"),
        TTAPass(pytest.approx(max_shrink), keep="small"),
    ]


def test_scale_plan_large_image():
    # 1200 x 1700: max_shrink = 1 -> st = 0.5, bt = (0.5 + 1) / 2 = 0.75, not > 1 -> keep large
    plan = scale_plan(1200, 1700, TTAConfig(multi_scale=True))
    assert plan == [TTAPass(None), TTAPass(0.5, keep="large"), TTAPass(0.75, keep="large")]
    # much larger: max_shrink = 0.5 < 0.75 -> st = 0.25, bt = 0.375
    plan = scale_plan(2400, 3400, TTAConfig(multi_scale=True))
    assert [p.scale for p in plan] == [None, 0.25, 0.375]


def test_scale_plan_tiny_image_enlarges_by_doubling():
    # 100 x 102: max_shrink = 14.14 -> 2, 4, 8, then 14.14
    plan = scale_plan(100, 102, TTAConfig(multi_scale=True))
    assert [p.scale for p in plan[2:]] == [2.0, 4.0, 8.0, pytest.approx(math.sqrt(1700 * 1200 / 10200))]


def test_box_vote_hand_worked():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.1, 0.5])
    out_boxes, out_scores = box_vote(boxes, scores, 0.3)
    # boxes 0 and 1 merge: (0.9 * 0 + 0.1 * 1) / 1.0 = 0.1; box 2 has no partner and is kept
    torch.testing.assert_close(out_boxes, torch.tensor([[0.1, 0.1, 10.1, 10.1], [50.0, 50.0, 60.0, 60.0]]))
    torch.testing.assert_close(out_scores, torch.tensor([0.9, 0.5]))
    empty = box_vote(torch.zeros((0, 4)), torch.zeros(0))
    assert empty[0].shape == (0, 4)


def test_merge_without_vote_is_nms_and_top_k():
    a = (torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([0.9]))
    b = (torch.tensor([[1.0, 1.0, 11.0, 11.0], [30.0, 30.0, 40.0, 40.0]]), torch.tensor([0.8, 0.3]))
    boxes, scores = merge_passes([a, b], TTAConfig(flip=True), nms_iou=0.3, top_k=750)
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.3]))
    boxes, scores = merge_passes([a, b], TTAConfig(flip=True), nms_iou=0.3, top_k=1)
    assert len(scores) == 1


def test_passes_filtered_then_voted_hand_worked():
    cfg = TTAConfig(flip=True, multi_scale=True, vote=True)
    # the original pass: a small and a large face
    original = (torch.tensor([[10.0, 10.0, 50.0, 50.0], [100.0, 100.0, 300.0, 300.0]]), torch.tensor([0.9, 0.8]))
    # an enlarged pass ("small": min side < 100 kept): the small face again, slightly moved, and a
    # large box that the filter drops (min side 200)
    enlarged = filter_boxes(
        torch.tensor([[11.0, 11.0, 51.0, 51.0], [98.0, 98.0, 298.0, 298.0]]), torch.tensor([0.95, 0.99]), "small", cfg
    )
    torch.testing.assert_close(enlarged[1], torch.tensor([0.95]))
    # a shrunk pass ("large": max side > 30 kept): a 20 px box is dropped
    shrunk = filter_boxes(torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([0.7]), "large", cfg)
    assert shrunk[0].shape == (0, 4)
    boxes, scores = merge_passes([original, enlarged, shrunk], cfg, nms_iou=0.3, top_k=750)
    # vote: the 0.95 box takes the 0.9 one (IoU 0.905): (0.95 * 11 + 0.9 * 10) / 1.85 = 10.5135...
    m = (0.95 * 11 + 0.9 * 10) / 1.85
    torch.testing.assert_close(boxes, torch.tensor([[m, m, m + 40, m + 40], [100.0, 100.0, 300.0, 300.0]]))
    torch.testing.assert_close(scores, torch.tensor([0.95, 0.8]))
    # without the filter, the 0.99 large box would have led: NMS keeps it over the 0.8 one
    boxes, scores = merge_passes([original, (torch.tensor([[98.0, 98.0, 298.0, 298.0]]), torch.tensor([0.99]))],
                                 TTAConfig(flip=True), nms_iou=0.3, top_k=750)  # fmt: skip
    torch.testing.assert_close(scores, torch.tensor([0.99, 0.9]))


@pytest.mark.parametrize("tta", ["flip", "flip,vote", "all"])
def test_tta_keeps_the_box_in_original_pixels(red_box_detector, draw_box, tta):
    box = (100, 50, 180, 150)
    det = red_box_detector(score_threshold=0.5)
    result = det.detect(draw_box(300, 400, box), tta=tta)
    # every pass finds the one red box (the head scores it sigmoid(20)); NMS or voting merges
    # the passes' copies into exactly one box
    assert len(result) == 1, result.boxes
    np.testing.assert_allclose(result.scores, [1.0 / (1.0 + math.exp(-20.0))], rtol=0, atol=1e-6)
    # flip is exact; the scaled passes see a resized box (edges within a pixel or two)
    np.testing.assert_allclose(result.boxes[0], box, atol=2e-3 if tta != "all" else 2.0)
    single = det.detect(draw_box(300, 400, box))
    assert TTAConfig.parse(tta).enabled and len(single) == 1


def test_flip_pass_mirrors_back(red_box_detector, draw_box):
    det = red_box_detector(score_threshold=0.5)
    image = draw_box(120, 200, (10, 20, 50, 90))
    (boxes, _), = det._detect_arrays([image], [(120, 200)], [True], 1, det.inference)
    np.testing.assert_allclose(boxes[0].numpy(), (10, 20, 50, 90), atol=2e-3)
