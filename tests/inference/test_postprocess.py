"""postprocess and masked_anchor_keep on hand-worked cases."""

from __future__ import annotations

import math

import pytest
import torch

from ufssd.config import AnchorConfig, InferenceConfig
from ufssd.inference.postprocess import masked_anchor_keep, postprocess

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
