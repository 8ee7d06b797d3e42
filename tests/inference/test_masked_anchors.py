"""``skip_masked_anchors``: dropping the anchors of FFMM cells whose mask is 0 before top-k and NMS
gives the boxes the detector finds without it, wherever the mask keeps the cell.

The reference is computed independently of the detector's own skipping: the same network, with
the face logit of every anchor in a masked cell forced down (so that those anchors are never
candidates), run with ``skip_masked_anchors=False``. The two must agree box for box; and with a
mask that keeps every cell, skipping must change nothing at all.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ufssd.geometry.anchors import feature_sizes
from ufssd.inference import FaceDetector
from ufssd.model import RawOutput

MASK_LEVEL = 0  # ufssd_light_ffmm_x1 masks level 0 (stride 4)


class _Edited(nn.Module):
    """The spread model with its raw outputs edited: ``mode="keep_all"`` makes every mask cell a
    face cell; ``mode="masked_as_background"`` makes the anchors of masked cells background."""

    def __init__(self, model: nn.Module, mode: str) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config
        self.mode = mode
        self.masked_candidates = 0  # anchors the edit took away from the candidates (score > 0.5)

    def forward(self, images, gt_masks=None):
        cls, deltas, masks = self.inner(images)
        if self.mode == "keep_all":
            face = torch.full_like(masks[0][:, :1], 20.0)
            return RawOutput(cls, deltas, (torch.cat([-face, face], dim=1),))
        # B = softmax(mask)[face] > Th_Mask, by hand; level 0's anchors come first, row-major
        b = torch.softmax(masks[0], dim=1)[:, 1] > self.config.model.mask_threshold
        masked = ~b.reshape(b.shape[0], -1)
        cls = cls.clone()
        n0 = masked.shape[1]
        self.masked_candidates += int((masked & (cls[:, :n0, 1] > cls[:, :n0, 0])).sum())
        cls[:, :n0][masked] = torch.tensor([30.0, -30.0])
        return RawOutput(cls, deltas, masks)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, (333, 517, 3), dtype=np.uint8), rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)]


def _detect(model, images, skip):
    det = FaceDetector.from_model(model, skip_masked_anchors=skip, score_threshold=0.999, fuse_batchnorm=False)
    return det.detect(images)


def test_skip_gives_the_boxes_of_the_kept_cells(spread_model, images):
    # the mask is not trivial: it keeps some level-0 cells and drops others
    with torch.no_grad():
        mask = spread_model(torch.randn(1, 3, 384, 640, generator=torch.Generator().manual_seed(0))).mask_logits[0]
    b = torch.softmax(mask, dim=1)[:, 1] > spread_model.config.model.mask_threshold
    assert mask.shape[-2:] == feature_sizes(384, 640, spread_model.config.anchors.strides)[MASK_LEVEL]
    assert 0 < int(b.sum()) < b.numel()

    skipped = _detect(spread_model, images, skip=True)
    reference_model = _Edited(spread_model, "masked_as_background")
    reference = _detect(reference_model, images, skip=False)
    assert reference_model.masked_candidates > 0, "no masked anchor was a candidate: the test would be vacuous"
    plain = _detect(spread_model, images, skip=False)
    for s, r, p in zip(skipped, reference, plain):
        np.testing.assert_array_equal(s.boxes, r.boxes)
        np.testing.assert_array_equal(s.scores, r.scores)
        assert 0 < len(s) < 750 and 0 < len(p) < 750  # neither hits the cap
        assert len(p) != len(s) or not np.array_equal(p.boxes, s.boxes)  # skipping changed something


def test_skip_changes_nothing_where_the_mask_keeps_every_cell(spread_model, images):
    keep_all = _Edited(spread_model, "keep_all")
    for s, p in zip(_detect(keep_all, images, skip=True), _detect(keep_all, images, skip=False)):
        assert len(s) > 0
        np.testing.assert_array_equal(s.boxes, p.boxes)
        np.testing.assert_array_equal(s.scores, p.scores)
