"""Augmentation on hand-made images: boxes follow the pixels, the centre rule, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ufssd.config import TrainConfig
from ufssd.data import (
    augment,
    crop_boxes,
    hflip,
    mark_small,
    photometric_distort,
    resize,
    sample_crop,
)

CFG = TrainConfig(resolution=96, photometric=False, min_face_px=0.0)


def _white_box_image(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def _white_extent(image: np.ndarray) -> np.ndarray:
    """x1 y1 x2 y2 of the pixels brighter than mid-grey (half-open pixel extent)."""
    ys, xs = np.nonzero(image[..., 0] > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_boxes_follow_pixels(seed: int) -> None:
    box = (70, 30, 130, 110)
    image = _white_box_image(160, 240, box)
    cfg = dataclasses.replace(CFG, flip_p=0.5)
    out, boxes, ignore = augment(
        image, np.array([box], np.float32), np.array([False]), np.random.default_rng(seed), cfg
    )
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    assert boxes.shape == (1, 4) and not ignore[0]  # the only face: its centre is always kept
    np.testing.assert_allclose(_white_extent(out), boxes[0], atol=1.5)


def test_flip_happens_and_maps_boxes() -> None:
    image = _white_box_image(50, 100, (10, 5, 30, 25))
    flipped, boxes = hflip(image, np.array([[10, 5, 30, 25]], np.float32))
    np.testing.assert_array_equal(boxes, [[70, 5, 90, 25]])
    np.testing.assert_array_equal(_white_extent(flipped), boxes[0])
    # with flip_p = 1 and the whole image as crop, the output is the mirrored, resized input
    cfg = dataclasses.replace(CFG, crop_min=1.0, crop_max=1.0, flip_p=1.0, resolution=50)
    square = _white_box_image(50, 50, (10, 5, 30, 25))
    out, b, _ = augment(square, np.array([[10, 5, 30, 25]]), np.array([False]), np.random.default_rng(0), cfg)
    np.testing.assert_array_equal(out, square[:, ::-1])
    np.testing.assert_array_equal(b, [[20, 5, 40, 25]])


def test_resize_scales_boxes() -> None:
    image = _white_box_image(100, 200, (20, 10, 60, 50))
    out, boxes = resize(image, np.array([[20, 10, 60, 50]], np.float32), 50)
    np.testing.assert_allclose(boxes, [[5, 5, 15, 25]])
    np.testing.assert_allclose(_white_extent(out), boxes[0], atol=1)


def test_centre_rule(centre_rule_case) -> None:
    window, boxes, ignore = centre_rule_case
    out, ign = crop_boxes(boxes, ignore, window)
    np.testing.assert_array_equal(out, [[50, 0, 100, 70], [20, 20, 40, 50], [90, 90, 90, 98]])
    assert ign.tolist() == [False, False, True]


def test_sample_crop_is_a_square_inside_the_image() -> None:
    rng = np.random.default_rng(1)
    boxes = np.array([[0, 0, 300, 200]], np.float32)  # centre always reachable
    for _ in range(200):
        x0, y0, x1, y1 = sample_crop(200, 300, boxes, np.array([False]), rng, 0.3, 1.0, 50)
        assert x1 - x0 == y1 - y0
        assert 60 <= x1 - x0 <= 200
        assert 0 <= x0 and 0 <= y0 and x1 <= 300 and y1 <= 200


def test_sample_crop_retries_then_falls_back_to_the_whole_image() -> None:
    rng = np.random.default_rng(0)
    # a face whose centre is outside the image: no crop can hold it -> the whole image
    boxes = np.array([[-40, 10, -2, 30]], np.float32)
    assert sample_crop(100, 150, boxes, np.array([False]), rng, 0.3, 1.0, 50) == (0, 0, 150, 100)
    # the same face ignored does not count: the first window is taken
    window = sample_crop(100, 150, boxes, np.array([True]), rng, 0.3, 1.0, 50)
    assert window != (0, 0, 150, 100)


def test_retry_keeps_a_face() -> None:
    """A small face in a corner: with retries some face always survives the crop."""
    cfg = dataclasses.replace(CFG, crop_min=0.3, crop_max=0.3)
    image = np.zeros((400, 400, 3), np.uint8)
    boxes = np.array([[370, 370, 390, 390]], np.float32)
    kept = [
        len(augment(image, boxes, np.array([False]), np.random.default_rng(s), cfg)[1])
        for s in range(20)
    ]
    assert min(kept) == 1
    # each window is a 120 px crop holding the centre (380, 380), or (after 50 misses, p ~ 0.78
    # here) the whole image; with many retries always a crop
    windows = [
        sample_crop(400, 400, boxes, np.array([False]), np.random.default_rng(s), 0.3, 0.3, r)
        for s in range(20)
        for r in (50, 5000)
    ]
    crops = [w for w in windows if w != (0, 0, 400, 400)]
    assert len(crops) >= 20
    for x0, y0, x1, y1 in crops:
        assert x1 - x0 == 120 and x0 <= 380 < x1 and y0 <= 380 < y1


def test_nothing_outside_the_image() -> None:
    rng = np.random.default_rng(5)
    cfg = dataclasses.replace(CFG, photometric=True, min_face_px=4.0)
    for _ in range(30):
        h, w = rng.integers(40, 300, 2)
        xy = rng.uniform(-20, [w, h], (8, 2))
        wh = rng.uniform(0, 120, (8, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out, b, ign = augment(image, boxes, rng.random(8) < 0.2, rng, cfg)
        assert out.shape == (96, 96, 3)
        assert b.dtype == np.float32 and ign.dtype == bool and len(b) == len(ign)
        assert (b >= 0).all() and (b <= 96).all()
        assert (b[:, 2:] >= b[:, :2]).all()


def test_min_face_px() -> None:
    boxes = np.array([[0, 0, 3.5, 10], [0, 0, 10, 10], [5, 5, 9, 9]], np.float32)
    ignore = np.array([False, False, True])
    assert mark_small(boxes, ignore, 4.0).tolist() == [True, False, True]
    # through augment: a 30 px face at scale 96 / 960 becomes 3 px -> ignore; 100 px -> 10 px
    cfg = dataclasses.replace(CFG, crop_min=1.0, crop_max=1.0, min_face_px=4.0)
    image = np.zeros((960, 960, 3), np.uint8)
    faces = np.array([[100, 100, 130, 130], [500, 500, 600, 600]], np.float32)
    _, b, ign = augment(image, faces, np.array([False, False]), np.random.default_rng(0), cfg)
    assert ign.tolist() == [True, False]


def test_empty_boxes() -> None:
    image = np.full((50, 80, 3), 128, np.uint8)
    out, b, ign = augment(image, np.zeros((0, 4)), np.zeros(0, bool), np.random.default_rng(0), CFG)
    assert out.shape == (96, 96, 3) and b.shape == (0, 4) and ign.shape == (0,)


def test_determinism() -> None:
    rng = np.random.default_rng(123)
    image = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 70], [80, 40, 140, 110]], np.float32)
    ignore = np.array([False, False])
    cfg = dataclasses.replace(CFG, photometric=True)
    a = augment(image, boxes, ignore, np.random.default_rng(7), cfg)
    b = augment(image, boxes, ignore, np.random.default_rng(7), cfg)
    c = augment(image, boxes, ignore, np.random.default_rng(8), cfg)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    # the input is not modified
    np.testing.assert_array_equal(image, np.random.default_rng(123).integers(0, 256, (120, 150, 3), dtype=np.uint8))


def test_photometric_identity_and_brightness() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, (32, 32, 3), dtype=np.uint8)
    # all magnitudes zero: only the uint8 HSV round trip remains (a few levels at most)
    for seed in range(8):
        out = photometric_distort(image, np.random.default_rng(seed), 0.0, (1, 1), (1, 1), 0.0, 0.0)
        assert np.abs(out.astype(int) - image).max() <= 6
    # brightness only: a constant shift of every channel (no clipping in 40..199 + [-32, 32])
    shifts = set()
    for seed in range(8):
        out = photometric_distort(image, np.random.default_rng(seed), 32.0, (1, 1), (1, 1), 0.0, 0.0)
        diff = out.astype(int) - image
        hsv_error = np.abs(diff - np.median(diff)).max()
        assert hsv_error <= 6 and abs(np.median(diff)) <= 32
        shifts.add(int(np.median(diff)))
    assert len(shifts) > 2  # it does change brightness for some seeds
    # full magnitudes: same shape and dtype, changed pixels
    out = photometric_distort(image, np.random.default_rng(3))
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        augment(np.zeros((10, 10, 3), np.float32), np.zeros((0, 4)), np.zeros(0, bool), np.random.default_rng(0), CFG)
    with pytest.raises(ValueError, match="ignore"):
        augment(np.zeros((10, 10, 3), np.uint8), np.zeros((2, 4)), np.zeros(1, bool), np.random.default_rng(0), CFG)
