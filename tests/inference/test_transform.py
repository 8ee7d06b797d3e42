"""Pre-processing (``ufssd.inference.transform``): the input policy, the batch the network gets,
and boxes mapped back to original pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ufssd.config import ModelConfig
from ufssd.inference.transform import InputTransform, boxes_to_original, normalize_table, resize
from ufssd.model import normalize, pad_to_multiple

CFG = ModelConfig()


def test_network_size_keeps_the_original_and_downscales_only_beyond_the_limits():
    t = InputTransform(CFG, 128)
    assert t.network_size(480, 640, max_pixels=4096 * 4096) == (480, 640)
    # 4000 x 6000 = 24 MP > 16.8 MP: s = sqrt(16.8 / 24), floor(side * s)
    assert t.network_size(4000, 6000, max_pixels=4096 * 4096) == (3344, 5016)
    limited = InputTransform(CFG, 128, max_size=320)
    assert limited.network_size(480, 640, max_pixels=4096 * 4096) == (240, 320)
    assert limited.network_size(100, 200, max_pixels=4096 * 4096) == (100, 200)  # never enlarged
    assert limited.network_size(480, 640, max_pixels=100 * 100) == (86, 115)  # the tighter limit wins
    with pytest.raises(ValueError, match="max_size must be >= 1"):
        InputTransform(CFG, 128, max_size=0)


def test_batch_equals_model_normalize_then_zero_padding():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (100, 70, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    t = InputTransform(CFG, 128)
    batch = t.batch([a, b], [(100, 70), (128, 128)], [False, True], (128, 128))
    assert batch.shape == (2, 3, 128, 128) and batch.dtype == torch.float32
    for k, (image, flip) in enumerate(((a, False), (b, True))):
        x = torch.from_numpy(np.ascontiguousarray(image[:, ::-1] if flip else image)).permute(2, 0, 1)[None]
        expected = pad_to_multiple(normalize(x, CFG), 128)[0]
        assert torch.equal(batch[k], expected)  # bit for bit, padding zeros after normalisation


def test_normalize_table_is_model_normalize_of_every_value():
    table = normalize_table(CFG)
    values = torch.arange(256, dtype=torch.uint8).repeat(3, 1)[None, :, None, :]
    assert np.array_equal(table, normalize(values, CFG)[0, :, 0].numpy())


def test_resize_shrinks_with_area_and_keeps_an_unchanged_size():
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2, :2] = 200  # one quarter bright
    assert resize(image, 4, 4) is image
    assert resize(image, 2, 2)[..., 0].tolist() == [[200, 0], [0, 0]]  # area: block means
    assert resize(image, 1, 1)[0, 0, 0] == 50


def test_boxes_to_original_scales_mirrors_and_clips():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [-5.0, 0.0, 60.0, 55.0]])
    # a 100 x 200 image seen at 50 x 50: x scale 4, y scale 2
    out = boxes_to_original(boxes, (100, 200), (50, 50))
    torch.testing.assert_close(out, torch.tensor([[40.0, 40.0, 120.0, 80.0], [0.0, 0.0, 200.0, 100.0]]))
    flipped = boxes_to_original(boxes[:1], (100, 200), (50, 50), flip=True)
    torch.testing.assert_close(flipped, torch.tensor([[80.0, 40.0, 160.0, 80.0]]))
