"""Anchors: sizes, order and coordinates worked out by hand."""

from __future__ import annotations

import pytest
import torch

from ufssd.config import AnchorConfig
from ufssd.geometry import anchors_for_input, feature_sizes, make_anchors, padded_size


def test_feature_sizes_ceil_division():
    assert feature_sizes(128, 256, (4, 8, 16, 32, 64, 128)) == [(32, 64), (16, 32), (8, 16), (4, 8), (2, 4), (1, 2)]
    assert feature_sizes(100, 130, (4, 128)) == [(25, 33), (1, 2)]
    with pytest.raises(ValueError):
        feature_sizes(0, 10, (4,))


def test_padded_size():
    assert padded_size(100, 130) == (128, 256)
    assert padded_size(640, 640) == (640, 640)
    assert padded_size(641, 1, multiple=32) == (672, 32)


def test_count_at_640():
    assert anchors_for_input(640, 640, AnchorConfig()).shape == (34125, 4)


def test_small_input_by_hand():
    anchors = anchors_for_input(128, 256, AnchorConfig())
    assert anchors.shape == (2048 + 512 + 128 + 32 + 8 + 2, 4)
    assert anchors.dtype == torch.float32
    # level 0: stride 4, side 16, 32 rows x 64 columns; centres (j + 0.5) * 4
    assert anchors[0].tolist() == [-6.0, -6.0, 10.0, 10.0]  # (i, j) = (0, 0), centre (2, 2)
    assert anchors[1].tolist() == [-2.0, -6.0, 14.0, 10.0]  # (0, 1), centre (6, 2)
    assert anchors[63].tolist() == [246.0, -6.0, 262.0, 10.0]  # (0, 63), centre (254, 2)
    assert anchors[64].tolist() == [-6.0, -2.0, 10.0, 14.0]  # (1, 0), centre (2, 6): row-major
    # level 1 starts right after: stride 8, side 32, centre (4, 4)
    assert anchors[2048].tolist() == [-12.0, -12.0, 20.0, 20.0]
    # coarsest level: stride 128, side 512, 1 x 2 cells, centres (64, 64) and (192, 64)
    assert anchors[-2].tolist() == [-192.0, -192.0, 320.0, 320.0]
    assert anchors[-1].tolist() == [-64.0, -192.0, 448.0, 320.0]


def test_any_input_size_uses_actual_feature_sizes():
    cfg = AnchorConfig()
    anchors = anchors_for_input(100, 130, cfg)
    sizes = feature_sizes(100, 130, cfg.strides)
    assert anchors.shape[0] == sum(h * w for h, w in sizes)
    # the last anchor of level 0 is cell (24, 32): centre (130, 98)
    assert anchors[25 * 33 - 1].tolist() == [122.0, 90.0, 138.0, 106.0]


def test_make_anchors_checks_lengths_and_device():
    with pytest.raises(ValueError):
        make_anchors([(2, 2)], (4, 8), (16,))
    assert make_anchors([(2, 3)], (4,), (16,), device="cpu").device.type == "cpu"
    assert make_anchors([], (), ()).shape == (0, 4)
