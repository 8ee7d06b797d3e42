"""``ufssd.anonymize`` / ``hide_faces``: Grace Hopper hidden from the default model, nothing outside
the enlarged box touched, every input type and mode kept; regions, shapes and methods by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ufssd.inference.anonymize import (
    BLUR_SCORE_THRESHOLD,
    AnonymizeConfig,
    face_regions,
    face_records,
    hide_faces,
)
from ufssd.inference.face_tracker import box_iou


@pytest.fixture(scope="module")
def hopper_path() -> Path:
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="module")
def hopper(hopper_path) -> np.ndarray:
    return np.asarray(Image.open(hopper_path).convert("RGB"))


@pytest.fixture(scope="module")
def detector():
    from ufssd.inference import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="module")
def hopper_faces(detector, hopper) -> np.ndarray:
    """What the default model finds at the blur threshold: the one face (0.91; nothing else
    scores above 0.26 on this photo)."""
    boxes = detector.detect(hopper, score_threshold=BLUR_SCORE_THRESHOLD).boxes
    assert len(boxes) == 1
    return boxes


def outside(regions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.ones(shape, bool)
    for x1, y1, x2, y2 in regions:
        mask[y1:y2, x1:x2] = False
    return mask


def test_grace_hopper_blurred_by_default_is_no_face_and_nothing_else_changes(detector, hopper, hopper_faces):
    import ufssd

    out = ufssd.anonymize(hopper, detector)  # the defaults: blur, ellipse, expand 0.25, threshold 0.3
    assert out.shape == hopper.shape and out.dtype == hopper.dtype
    assert len(detector.detect(out)) == 0  # the default detector (threshold 0.9) finds no face
    # and at the blur threshold nothing overlaps the face as a face box would (IoU >= 0.5)
    again = detector.detect(out, score_threshold=BLUR_SCORE_THRESHOLD).boxes
    assert not (box_iou(again, hopper_faces) >= 0.5).any(), again
    region = face_regions(hopper_faces, hopper.shape[:2], 0.25)
    keep = outside(region, hopper.shape[:2])
    np.testing.assert_array_equal(out[keep], hopper[keep])
    x1, y1, x2, y2 = hopper_faces[0].astype(int)
    assert np.abs(out[y1:y2, x1:x2].astype(int) - hopper[y1:y2, x1:x2]).mean() > 10  # the face did change


def test_every_method_hides_the_face_from_the_default_detector(detector, hopper):
    from ufssd import anonymize

    for method in ("pixelate", "fill"):
        assert len(detector.detect(anonymize(hopper, detector, method=method))) == 0, method


def test_pil_and_path_inputs_keep_type_mode_and_size(detector, hopper_path, hopper_faces):
    from ufssd import anonymize

    out = anonymize(hopper_path, detector)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (512, 600)
    gray = Image.open(hopper_path).convert("L")
    out = anonymize(gray, detector)
    assert isinstance(out, Image.Image) and out.mode == "L" and out.size == gray.size
    assert np.abs(np.asarray(out, float) - np.asarray(gray, float)).max() > 0
    assert not out.info.get("exif")


@pytest.fixture
def decodes(monkeypatch) -> list:
    """The image files Pillow decodes from now on (one entry per decode)."""
    from PIL import ImageFile

    real = ImageFile.ImageFile.load
    calls = []

    def load(self):
        if self.tile:  # pixels still to decode (later calls on a loaded image decode nothing)
            calls.append(getattr(self, "filename", None))
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


def test_a_file_is_decoded_once(detector, hopper_path, tmp_path, decodes):
    from ufssd import anonymize
    from ufssd.inference.anonymize_files import anonymize_files

    anonymize(hopper_path, detector)
    assert decodes == [str(hopper_path)]
    gray = tmp_path / "in" / "gray.png"  # a mode that is hidden as it is, not in RGB
    gray.parent.mkdir()
    Image.open(hopper_path).convert("L").save(gray)
    decodes.clear()
    summary = anonymize_files(detector, [gray], tmp_path / "out", AnonymizeConfig(), progress=False)
    assert summary.processed == 1 and not summary.failed
    assert decodes == [str(gray)]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "I", "F", "CMYK"])
def test_hide_faces_keeps_every_pil_mode(hopper, hopper_faces, mode):
    image = Image.fromarray(hopper).convert(mode)
    out = hide_faces(image, hopper_faces, AnonymizeConfig())
    assert out.mode == mode and out.size == image.size
    before, after = np.asarray(image), np.asarray(out)
    keep = outside(face_regions(hopper_faces, hopper.shape[:2], 0.25), hopper.shape[:2])
    if mode != "P":  # re-quantising may remap other pixels' indices to equal colours
        np.testing.assert_array_equal(after[keep], before[keep])
    if mode in ("RGBA", "LA"):
        np.testing.assert_array_equal(after[..., -1], before[..., -1])  # alpha kept
    assert not np.array_equal(after, before)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((60, 80), np.uint8),
        np.zeros((60, 80, 1), np.uint16),
        np.zeros((60, 80, 3), np.float32),
        np.zeros((60, 80, 4), np.uint8),
        np.zeros((60, 80, 3), np.float64),
        np.zeros((60, 80, 3), np.int32),
    ],
    ids=lambda a: f"{a.shape}-{a.dtype}",
)
def test_hide_faces_keeps_array_shape_and_dtype_and_alpha(array):
    rng = np.random.default_rng(0)
    high = 1.0 if array.dtype.kind == "f" else (255 if array.dtype != np.uint16 else 65535)
    image = (rng.random(array.shape) * high).astype(array.dtype)
    if array.ndim == 3 and array.shape[2] == 4:
        image[..., 3] = 200
    copy = image.copy()
    out = hide_faces(image, np.array([[20.0, 10.0, 60.0, 50.0]]), AnonymizeConfig(shape="box"))
    np.testing.assert_array_equal(image, copy)  # the input is not modified
    assert out.shape == image.shape and out.dtype == image.dtype
    assert not np.array_equal(out, image)
    if array.ndim == 3 and array.shape[2] == 4:
        assert (out[..., 3] == 200).all()


def test_face_regions_by_hand():
    boxes = np.array([[10.0, 20.0, 30.0, 60.0], [0.5, 1.5, 4.5, 5.5], [70.0, 90.0, 90.0, 130.0]])
    # box 1: 20 x 40 grows 5 px left/right, 10 px up/down; box 2: 4 x 4 grows 1 px, floor/ceil
    # outwards; box 3 is clipped to the 100 x 120 (h x w) image
    regions = face_regions(boxes, (100, 120), 0.25)
    np.testing.assert_array_equal(regions, [[5, 10, 35, 70], [0, 0, 6, 7], [65, 80, 95, 100]])
    np.testing.assert_array_equal(face_regions(boxes[:1], (100, 120), 0.0), [[10, 20, 30, 60]])
    assert face_regions(np.zeros((0, 4)), (10, 10), 0.25).shape == (0, 4)


def test_ellipse_leaves_the_corners_and_box_fills_them():
    image = np.full((40, 40, 3), 255, np.uint8)
    box = np.array([[10.0, 10.0, 30.0, 30.0]])
    ellipse = hide_faces(image, box, AnonymizeConfig(method="fill", expand=0.0))
    full = hide_faces(image, box, AnonymizeConfig(method="fill", expand=0.0, shape="box"))
    assert (full[10:30, 10:30] == 0).all() and (full[:10] == 255).all()
    assert (ellipse[20, 10:30] == 0).all() and (ellipse[10:30, 20] == 0).all()  # the axes
    assert (ellipse[10, 10] == 255).all() and (ellipse[29, 29] == 255).all()  # the corners
    # with expand 0.25 the inscribed ellipse covers the whole face box
    covered = hide_faces(image, box, AnonymizeConfig(method="fill"))
    assert (covered[10:30, 10:30] == 0).all()


def test_pixelate_makes_constant_blocks():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cfg = AnonymizeConfig(method="pixelate", expand=0.0, shape="box")
    out = hide_faces(image, np.array([[0.0, 0.0, 64.0, 64.0]]), cfg)
    blocks = out.reshape(8, 8, 8, 8, 3)  # 8 blocks of 8 px across the 64 px side
    assert (blocks == blocks[:, :1, :, :1]).all()
    np.testing.assert_allclose(blocks[:, 0, :, 0].astype(float), image.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3)), atol=1)


def test_face_records_and_config_errors():
    records = face_records(np.array([[10.0, 20.0, 30.0, 60.0]]), np.array([0.5]), (100, 120), 0.25, held=np.array([2]))
    assert records == [
        {"x1": 10.0, "y1": 20.0, "x2": 30.0, "y2": 60.0, "score": 0.5, "held": 2, "region": [5, 10, 35, 70]}
    ]
    for bad in ({"method": "smudge"}, {"shape": "star"}, {"expand": -0.1}, {"score_threshold": 1.5}):
        with pytest.raises(ValueError):
            AnonymizeConfig(**bad)
    # no threshold: the blur threshold, resolved in AnonymizeConfig.resolve only
    assert AnonymizeConfig.resolve(None, method="fill") == AnonymizeConfig(method="fill")
    assert AnonymizeConfig.resolve(None).score_threshold == BLUR_SCORE_THRESHOLD
    assert AnonymizeConfig.resolve(0.7, shape="box") == AnonymizeConfig(shape="box", score_threshold=0.7)
