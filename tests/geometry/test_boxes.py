"""Box conversions and SSD box coding: hand values, round trips, the decode clamp."""

from __future__ import annotations

import math

import pytest
import torch

from ufssd.config import AnchorConfig
from ufssd.geometry import anchors_for_input, decode, encode, xywh_to_xyxy, xyxy_to_xywh

VAR = (0.1, 0.2)
MAX_LOG = math.log(1000.0 / 16.0)


def test_xywh_conversions():
    b = torch.tensor([[10.0, 20.0, 5.0, 8.0]])
    assert xywh_to_xyxy(b).tolist() == [[10.0, 20.0, 15.0, 28.0]]
    assert torch.equal(xyxy_to_xywh(xywh_to_xyxy(b)), b)
    with pytest.raises(ValueError):
        xywh_to_xyxy(torch.zeros(3))


def test_encode_by_hand():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])  # centre (8, 8), side 16
    box = torch.tensor([[4.0, 4.0, 20.0, 36.0]])  # centre (12, 20), size (16, 32)
    t = encode(box, anchor, VAR)
    expected = torch.tensor([[4 / 1.6, 12 / 1.6, 0.0, math.log(2.0) / 0.2]])
    assert torch.allclose(t, expected)


def test_round_trip_with_batch_broadcast():
    anchors = anchors_for_input(128, 128, AnchorConfig())
    gen = torch.Generator().manual_seed(0)
    centres = torch.rand(2, anchors.shape[0], 2, generator=gen) * 128
    sizes = torch.rand(2, anchors.shape[0], 2, generator=gen) * 200 + 1
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], -1)  # (N, A, 4)
    deltas = encode(boxes, anchors, VAR)
    assert deltas.shape == (2, anchors.shape[0], 4)
    assert torch.allclose(decode(deltas, anchors, VAR, MAX_LOG), boxes, atol=1e-3)


def test_decode_clamps_log_size_after_variance():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    huge = torch.tensor([[[0.0, 0.0, 1000.0, 1000.0]]])
    out = decode(huge, anchor, VAR, MAX_LOG)
    assert torch.isfinite(out).all()
    # 16 * exp(log(1000/16)) = 1000 px, centred on (8, 8)
    assert torch.allclose(out, torch.tensor([[[-492.0, -492.0, 508.0, 508.0]]]), atol=1e-3)
    # just under the clamp nothing changes: 0.2 * t = log(1000/16) - 0.1
    t = (MAX_LOG - 0.1) / 0.2
    side = decode(torch.tensor([[0.0, 0.0, t, t]]), anchor, VAR, MAX_LOG)[0, 2] * 2 - 16
    assert side.item() == pytest.approx(1000 * math.exp(-0.1), rel=1e-5)


@pytest.mark.parametrize("side", [100.0, 180.0, 260.0, 400.0, 600.0])
def test_matched_targets_of_large_faces_decode_to_the_face(side):
    """docs/boxes.md, "Targets": a face of 100-600 px (taller than wide, as WIDER faces are) gets
    positives on the levels S3FD intends, and every positive's target decodes back to the face."""
    from ufssd.config import MatchConfig
    from ufssd.geometry import POSITIVE, build_targets

    cfg = AnchorConfig()
    anchors = anchors_for_input(1024, 1024, cfg)
    face = torch.tensor([[300.0, 200.0, 300.0 + 0.78 * side, 200.0 + side]])
    labels, deltas = build_targets(anchors, [face], [torch.zeros(1, dtype=torch.bool)], MatchConfig(), cfg.variances)
    pos = labels[0] == POSITIVE
    assert int(pos.sum()) >= 3
    decoded = decode(deltas[0][pos], anchors[pos], cfg.variances, cfg.max_log_size)
    torch.testing.assert_close(decoded, face.expand_as(decoded), atol=1e-3, rtol=0)
    # the positives' anchors are within a factor 2.5 of the face's size (no stray level)
    anchor_side = anchors[pos, 2] - anchors[pos, 0]
    assert torch.all((anchor_side > side / 2.5) & (anchor_side < side * 2.5))
