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
