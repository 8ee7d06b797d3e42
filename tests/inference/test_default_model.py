"""The embedded default model finds the one face in matplotlib's grace_hopper.jpg, and only it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ufssd.inference import FaceDetector
from ufssd.inference.face_detector import default_weights_path

# measured by hand on the 512x600 image (x1, y1, x2, y2): ear to ear, hat brim to chin
HOPPER_FACE = np.array([170.0, 145.0, 355.0, 335.0])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def hopper() -> Path:
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def test_default_weights_ship_with_the_package():
    path = default_weights_path()
    assert path.is_file(), f"{path} missing: the package must embed its default model"
    assert path.stat().st_size < 20 * 2**20


def test_default_model_finds_grace_hopper_and_nothing_else(hopper: Path):
    torch.manual_seed(0)
    result = FaceDetector().detect(hopper)
    assert len(result.boxes) == 1, f"expected one face, got {len(result.boxes)}: {result.boxes}"
    assert iou(result.boxes[0], HOPPER_FACE) > 0.5, result.boxes[0]


def test_default_model_onnxruntime_agrees(hopper: Path):
    pytest.importorskip("onnxruntime")
    ours = FaceDetector().detect(hopper)
    ort = FaceDetector(backend="onnxruntime").detect(hopper)
    assert len(ours.boxes) == len(ort.boxes)
    np.testing.assert_allclose(ours.boxes, ort.boxes, atol=0.5)
