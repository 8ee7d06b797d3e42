"""scripts/level_confidence.py: confident anchors per level, at the detector's input policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ufssd.inference import FaceDetector
from ufssd.model import build_model


@pytest.fixture(scope="module")
def level_confidence(load_script):
    return load_script("level_confidence")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("ufssd_light").eval()


def test_every_anchor_counts_at_threshold_zero(level_confidence, model):
    """A 200 x 300 image pads to 256 x 384: level l has (256 / s) x (384 / s) cells, one anchor
    each; with --max-size 128 it is scaled to 85 x 128 and pads to 128 x 128."""
    image = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    strides = (4, 8, 16, 32, 64, 128)
    counts = level_confidence.confident_per_level(FaceDetector.from_model(model), image, 0.0)
    assert counts.tolist() == [-(-256 // s) * -(-384 // s) for s in strides]
    small = level_confidence.confident_per_level(FaceDetector.from_model(model, max_size=128), image, 0.0)
    assert small.tolist() == [-(-128 // s) * -(-128 // s) for s in strides]


def test_counts_match_the_network_output(level_confidence, model):
    image = np.random.default_rng(1).integers(0, 256, (130, 140, 3), dtype=np.uint8)
    detector = FaceDetector.from_model(model)
    with torch.inference_mode():
        logits = model(detector.transform.batch([image], [(130, 140)], [False], (256, 256))).cls_logits
    p = logits[0].softmax(-1)[:, 1]
    threshold = float(p.median())
    counts = level_confidence.confident_per_level(detector, image, threshold)
    assert counts.sum() == int((p >= threshold).sum()) and 0 < counts.sum() < p.numel()
    table = level_confidence.markdown([{"label": "m", "max_size": 0, "per_level": counts.tolist()}], threshold, 1)
    assert "| m | original | " in table and table.count("| level ") == 6
