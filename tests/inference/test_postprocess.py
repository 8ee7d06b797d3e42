"""postprocess, soft_nms and masked_anchor_keep on hand-worked cases."""

from __future__ import annotations

import math

import pytest
import torch

from ufssd.config import AnchorConfig, InferenceConfig
from ufssd.inference.postprocess import masked_anchor_keep, postprocess, soft_nms

ANCHORS = torch.tensor(
    [
        [0.0, 0.0, 10.0, 10.0],
        [1.0, 1.0, 11.0, 11.0],  # IoU 81/119 = 0.68 with anchor 0
        [50.0, 50.0, 60.0, 60.0],
        [100.0, 0.0, 120.0, 20.0],
    ]
)


def logits_for(probabilities):
    """(A,) face probabilities -> (1, A, 2) logits with exactly that softmax."""
    p = torch.tensor(probabilities, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=-1)[None].float()


def test_threshold_nms_and_caps():
    cls = logits_for([0.9, 0.8, 0.7, 0.05])
    deltas = torch.zeros((1, 4, 4))  # boxes = anchors
    ((boxes, scores),) = postprocess(cls, deltas, ANCHORS, InferenceConfig(score_threshold=0.1))
    # anchor 1 is suppressed by anchor 0 (IoU 0.68 > 0.3); anchor 3 is below the threshold
    torch.testing.assert_close(boxes, ANCHORS[[0, 2]])
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.7]))
    # top_k after NMS
    ((boxes, _),) = postprocess(cls, deltas, ANCHORS, InferenceConfig(top_k=1, score_threshold=0.01))
    torch.testing.assert_close(boxes, ANCHORS[[0]])
    # pre-NMS top-k keeps the 2 best candidates only (0 and 1; NMS then drops 1)
    ((boxes, _),) = postprocess(cls, deltas, ANCHORS, InferenceConfig(pre_nms_top_k=2, score_threshold=0.01))
    torch.testing.assert_close(boxes, ANCHORS[[0]])
    # the config's threshold, used as it is (0.5 by default)
    ((_, scores),) = postprocess(cls, deltas, ANCHORS, InferenceConfig())
    assert scores.tolist() == pytest.approx([0.9, 0.7])


def test_decoding_uses_the_anchor_config():
    cls = logits_for([0.9, 0.01, 0.01, 0.01])
    deltas = torch.zeros((1, 4, 4))
    deltas[0, 0] = torch.tensor([1.0, -1.0, math.log(2.0) / 0.2, 0.0])  # shift x by 1 px (0.1 * 10), y by -1
    ((boxes, _),) = postprocess(cls, deltas, ANCHORS, InferenceConfig(score_threshold=0.5), anchor_cfg=AnchorConfig())
    # centre (6, 4), width 20, height 10
    torch.testing.assert_close(boxes, torch.tensor([[-4.0, -1.0, 16.0, 9.0]]))


def test_batch_of_two_is_per_image():
    cls = torch.cat([logits_for([0.9, 0.01, 0.01, 0.01]), logits_for([0.01, 0.01, 0.01, 0.6])])
    out = postprocess(cls, torch.zeros((2, 4, 4)), ANCHORS, InferenceConfig(score_threshold=0.5))
    torch.testing.assert_close(out[0][0], ANCHORS[[0]])
    torch.testing.assert_close(out[1][0], ANCHORS[[3]])


def test_keep_mask_drops_anchors_before_nms():
    cls = logits_for([0.9, 0.8, 0.7, 0.6])
    keep = torch.tensor([[False, True, True, True]])
    ((boxes, _),) = postprocess(cls, torch.zeros((1, 4, 4)), ANCHORS, InferenceConfig(score_threshold=0.5), keep=keep)
    # with anchor 0 gone, anchor 1 is no longer suppressed
    torch.testing.assert_close(boxes, ANCHORS[[1, 2, 3]])


def test_masked_anchor_keep_layout():
    # level 0 is 2x2 (FFMM), level 1 is 1x1 (not masked): A = 5
    logits = torch.zeros((1, 2, 2, 2))
    logits[0, 0, 0, 1] = 10.0  # cell (0, 1): face probability ~ 4.5e-5 < 0.01 -> B = 0
    keep = masked_anchor_keep([logits], [(2, 2), (1, 1)], levels=(0,), threshold=0.01)
    assert keep.tolist() == [[True, False, True, True, True]]


def test_shape_errors():
    with pytest.raises(ValueError, match="cls_logits"):
        postprocess(torch.zeros((4, 2)), torch.zeros((1, 4, 4)), ANCHORS, InferenceConfig())
    with pytest.raises(ValueError, match="anchors"):
        postprocess(torch.zeros((1, 4, 2)), torch.zeros((1, 4, 4)), ANCHORS[:3], InferenceConfig())


def reference_soft_nms(boxes, scores, sigma, floor, top_k):
    """Soft-NMS as the paper's pseudo-code reads (Bodla et al. 2017, Gaussian), over every box."""
    from torchvision.ops import box_iou

    s = scores.double().clone()
    alive = torch.ones(len(s), dtype=torch.bool)
    taken, taken_scores = [], []
    while len(taken) < top_k and alive.any():
        j = int(torch.where(alive, s, -1.0).argmax())
        if s[j] < floor:
            break
        taken.append(j)
        taken_scores.append(float(s[j]))
        alive[j] = False
        s = s * torch.exp(-box_iou(boxes[j : j + 1].double(), boxes.double())[0] ** 2 / sigma)
        alive &= s >= floor
    return taken, taken_scores


def test_soft_nms_decays_overlaps_by_the_gaussian_of_their_iou():
    boxes = ANCHORS[[0, 1, 2]]  # 0 and 1 overlap at IoU 81/119; 2 overlaps neither
    keep, scores = soft_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), sigma=0.5, score_floor=0.01, top_k=10)
    decayed = 0.8 * math.exp(-((81 / 119) ** 2) / 0.5)  # 0.317: below 0.7, so it comes last
    assert keep.tolist() == [0, 2, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.7, decayed], rel=1e-5)
    # the floor drops the decayed box; top_k caps; a small sigma is close to deleting overlaps
    keep, _ = soft_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), sigma=0.5, score_floor=0.35, top_k=10)
    assert keep.tolist() == [0, 2]
    keep, _ = soft_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), sigma=0.5, score_floor=0.01, top_k=2)
    assert keep.tolist() == [0, 2]
    keep, _ = soft_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), sigma=1e-3, score_floor=0.01, top_k=10)
    assert keep.tolist() == [0, 2]
    # nothing in, nothing out; sigma must be positive
    keep, scores = soft_nms(torch.zeros((0, 4)), torch.zeros(0), sigma=0.5, score_floor=0.01, top_k=10)
    assert keep.numel() == 0 and scores.numel() == 0 and keep.dtype == torch.int64
    with pytest.raises(ValueError, match="sigma > 0"):
        soft_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), sigma=0.0, score_floor=0.01, top_k=10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_nms_equals_the_reference_on_crowded_random_boxes(seed):
    """The x1-window shortcut decays exactly the boxes the full loop decays: same order, same
    scores (boxes of very different widths, so the window matters)."""
    g = torch.Generator().manual_seed(seed)
    n = 400
    xy = torch.rand(n, 2, generator=g) * 300
    wh = torch.rand(n, 2, generator=g) ** 3 * 150 + 2
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(n, generator=g) ** 4
    keep, kept_scores = soft_nms(boxes, scores, sigma=0.5, score_floor=0.01, top_k=150)
    ref_keep, ref_scores = reference_soft_nms(boxes, scores, 0.5, 0.01, 150)
    assert keep.tolist() == ref_keep
    assert kept_scores.tolist() == pytest.approx(ref_scores, rel=1e-4, abs=1e-6)
    assert torch.all(kept_scores[1:] <= kept_scores[:-1])


def test_postprocess_with_soft_nms_keeps_the_overlapping_box_ranked_lower():
    cls = logits_for([0.9, 0.8, 0.7, 0.05])
    deltas = torch.zeros((1, 4, 4))
    cfg = InferenceConfig(score_threshold=0.1, soft_nms_sigma=0.5)
    ((boxes, scores),) = postprocess(cls, deltas, ANCHORS, cfg)
    # NMS deletes anchor 1 (test_threshold_nms_and_caps); Soft-NMS keeps it, decayed below anchor 2
    torch.testing.assert_close(boxes, ANCHORS[[0, 2, 1]])
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.8 * math.exp(-((81 / 119) ** 2) / 0.5)], rel=1e-5)
    assert scores.dtype == torch.float32
    # the score threshold is also the floor after decay
    ((boxes, _),) = postprocess(cls, deltas, ANCHORS, InferenceConfig(score_threshold=0.4, soft_nms_sigma=0.5))
    torch.testing.assert_close(boxes, ANCHORS[[0, 2]])


@pytest.mark.parametrize("sigma", [-0.5, float("nan"), float("inf")])
def test_soft_nms_sigma_is_checked(sigma):
    with pytest.raises(ValueError, match="soft_nms_sigma"):
        InferenceConfig(soft_nms_sigma=sigma)
