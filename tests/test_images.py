"""ufssd.images: the one decoder of training and inference, and the pixels it gives.

Training (``ufssd.data.load_image``), WIDER prediction files (``load_image(path, exif=False)``,
what ``predict_widerface`` uses) and the detector (``load_image(path)``, EXIF applied) all decode
with :func:`ufssd.images.decode_file`: the same pixels, conversions included. OpenCV, which
training used before, gives the same pixels for 8-bit JPEG, PNG and WebP files (WIDER's kind);
it differs only on 16-bit files, where ours rounds ``v / 257``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ufssd.data import DataError
from ufssd.data import load_image as training_image
from ufssd.images import CorruptImageError, MissingInputError, decode_file
from ufssd.inference import load_image as inference_image

cv2 = pytest.importorskip("cv2")

ORIENTATION = 0x0112


def _pattern(h: int, w: int) -> np.ndarray:
    """A smooth colour image that JPEG keeps recognisable (distinct channels, a gradient)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // (h + w)], -1).astype(
        np.uint8
    )


def _opencv(path: Path) -> np.ndarray:
    """What training decoded with before ufssd.images: OpenCV, EXIF ignored, BGR -> RGB."""
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION), cv2.COLOR_BGR2RGB)


def _same_everywhere(path: Path) -> np.ndarray:
    """Training's and the WIDER prediction path's pixels, asserted equal; returns them."""
    train = training_image(path)
    predict = inference_image(path, exif=False)
    assert train.dtype == np.uint8 and train.shape[2] == 3 and train.flags["C_CONTIGUOUS"]
    assert np.array_equal(train, predict)
    assert np.array_equal(train, decode_file(path, exif=False))
    return train


def test_jpeg_with_exif_orientation(tmp_path):
    stored = _pattern(20, 40)  # stored 40 wide, 20 high
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif)

    train = _same_everywhere(path)
    assert train.shape == (20, 40, 3)  # stored pixels: WIDER's boxes refer to them
    assert np.abs(train.astype(int) - stored).max() <= 8  # JPEG loss only, same orientation
    assert np.array_equal(train, _opencv(path))  # the previous training decoder agrees
    upright = inference_image(path)  # FaceDetector / ufssd detect: turned upright
    assert upright.shape == (40, 20, 3)
    assert np.array_equal(upright, np.rot90(train, k=-1))  # the same pixels, rotated


def test_grayscale_jpeg_repeats_the_value_in_r_g_b(tmp_path):
    gray = _pattern(24, 32)[..., 0]
    path = tmp_path / "gray.jpg"
    Image.fromarray(gray, mode="L").save(path, quality=95)

    train = _same_everywhere(path)
    with Image.open(path) as im:
        assert im.mode == "L"
        decoded_gray = np.asarray(im)
    for c in range(3):
        assert np.array_equal(train[..., c], decoded_gray)
    assert np.array_equal(train, _opencv(path))


def test_png_with_alpha_drops_alpha_without_compositing(tmp_path):
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., :3] = _pattern(6, 5)
    rgba[..., 3] = np.arange(30, dtype=np.uint8).reshape(6, 5) * 8  # 0 (transparent) .. 232
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)

    train = _same_everywhere(path)
    assert np.array_equal(train, rgba[..., :3])  # exact: lossless, alpha ignored, not blended
    assert np.array_equal(train, _opencv(path))


def test_sixteen_bit_png_rounds_where_opencv_truncated(tmp_path):
    values = np.array([[0, 200, 383, 32767, 65535]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)

    train = _same_everywhere(path)
    assert train[0, :, 0].tolist() == [0, 1, 1, 127, 255]  # round(v / 257)
    assert _opencv(path)[0, :, 0].tolist() == [0, 0, 1, 127, 255]  # OpenCV: v >> 8


def test_errors_name_the_file_in_both_layers(tmp_path):
    missing = tmp_path / "gone.jpg"
    with pytest.raises(MissingInputError, match="gone.jpg: no such file"):
        decode_file(missing)
    with pytest.raises(DataError, match=r"gt\.txt:3: image not found: .*gone\.jpg"):
        training_image(missing, "gt.txt:3")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Image.new("RGB", (64, 64)).tobytes()[:10] + b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(DataError, match=r"cannot decode image: .*broken\.jpg \("):
        training_image(broken)
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(_pattern(64, 64)).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(CorruptImageError, match="corrupt or truncated"):
        decode_file(truncated)


def test_wider_jpegs_decode_as_opencv_decoded_them(widerface_dir):
    """Training pixels did not change when training moved from OpenCV to this decoder: on all
    1,438 JPEGs of the shared subset they are identical (measured); here a random 30."""
    files = sorted(widerface_dir.glob("WIDER_*/images/*/*.jpg"))
    if not files:
        pytest.skip(f"no WIDER images under {widerface_dir}")
    for path in random.Random(0).sample(files, min(30, len(files))):
        assert np.array_equal(training_image(path), _opencv(path)), path
