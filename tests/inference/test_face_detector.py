"""FaceDetector: exact mapping back to original pixels, input conversions, batches, the API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ufssd.inference import Detection, DetectionResult, FaceDetector


@pytest.mark.parametrize(
    "size, box",
    [
        ((480, 640), (100, 50, 180, 150)),  # padded to 512 x 640
        ((300, 517), (10, 20, 60, 90)),  # padded on both sides
        ((1000, 130), (5, 800, 125, 990)),  # tall and narrow
        ((128, 256), (0, 0, 256, 128)),  # already a multiple: no padding; box = the whole image
        ((37, 41), (3, 4, 20, 30)),  # smaller than one coarsest cell
    ],
)
def test_box_mapped_back_exactly_with_padding(red_box_detector, draw_box, size, box):
    det = red_box_detector(score_threshold=0.5)
    result = det.detect(draw_box(*size, box))
    assert result.image_size == size and result.input_size == size
    assert len(result) == 1
    np.testing.assert_allclose(result.boxes[0], box, atol=2e-3)
    assert result.scores[0] > 0.999


@pytest.mark.parametrize(
    "kwargs, size, box, tol",
    [
        ({"max_size": 400}, (600, 800), (100, 60, 300, 260), 2e-3),  # scale 1/2 exactly
        ({"max_pixels": 120_000}, (600, 800), (100, 60, 300, 260), 2e-3),  # sqrt(1/4): 1/2 again
        ({"max_size": 500}, (700, 900), (90, 120, 330, 400), 2.0),  # 500/900: edges blur by < 1 net px
    ],
)
def test_box_mapped_back_after_downscaling(red_box_detector, draw_box, kwargs, size, box, tol):
    det = red_box_detector(score_threshold=0.5, **kwargs)
    result = det.detect(draw_box(*size, box))
    h, w = result.input_size
    assert max(h, w) <= kwargs.get("max_size", 10**9) and h * w <= kwargs.get("max_pixels", 10**9)
    assert (h, w) != size
    assert len(result) == 1
    np.testing.assert_allclose(result.boxes[0], box, atol=tol)


def test_channel_order_bgr_flag(red_box_detector, draw_box):
    det = red_box_detector(score_threshold=0.5)
    box = (20, 30, 60, 90)
    bgr = draw_box(100, 120, box, colour=(0, 0, 255))  # red in OpenCV's order
    assert len(det.detect(bgr)) == 0  # read as RGB it is blue: no red box
    np.testing.assert_allclose(det.detect(bgr, bgr=True).boxes[0], box, atol=2e-3)


def test_input_kinds_and_conversions(red_box_detector, draw_box, tmp_path):
    det = red_box_detector(score_threshold=0.5)
    box = (10, 12, 50, 60)
    rgb = draw_box(90, 100, box)
    path = tmp_path / "red.png"
    Image.fromarray(rgb).save(path)
    inputs = {
        "path": str(path),
        "pathlib": path,
        "pil": Image.fromarray(rgb),
        "pil_rgba": Image.fromarray(draw_box(90, 100, box, channels=4)),
        "rgba": draw_box(90, 100, box, channels=4),
        "uint16": rgb.astype(np.uint16) * 257,
        "float01": rgb.astype(np.float32) / 255.0,
    }
    for name, x in inputs.items():
        result = det.detect(x)
        assert len(result) == 1, name
        np.testing.assert_allclose(result.boxes[0], box, atol=2e-3, err_msg=name)
    assert det.detect(str(path)).source == str(path)
    # grayscale: any value repeats in R, G and B, so there is no red
    gray = np.full((90, 100), 255, dtype=np.uint8)
    assert len(det.detect(gray)) == 0
    assert len(det.detect(Image.fromarray(gray))) == 0


def test_batch_equals_one_by_one_with_fixed_head(red_box_detector, draw_box):
    det = red_box_detector(score_threshold=0.5)
    specs = [
        ((480, 640), (100, 50, 180, 150)),
        ((500, 600), (7, 9, 70, 90)),  # same padded size as the first: one batch
        ((300, 300), (1, 2, 299, 298)),
        ((450, 620), (300, 200, 400, 330)),
    ]
    images = [draw_box(*s, b) for s, b in specs]
    batched = det.detect(images, batch_size=3)
    for (size, box), result in zip(specs, batched):
        assert len(result) == 1
        np.testing.assert_allclose(result.boxes[0], box, atol=2e-3)


def test_batch_equals_one_by_one_random_model(spread_model):
    det = FaceDetector.from_model(spread_model, score_threshold=0.999)  # no cut through near-ties
    rng = np.random.default_rng(1)
    # two sizes share the padded size 512 x 640 (batched together), one does not
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(480, 640, 3), (500, 600, 3), (200, 260, 3)]]
    batched = det.detect(images, batch_size=4)
    single = [det.detect(x) for x in images]
    for b, s in zip(batched, single):
        assert len(b) == len(s) and len(s) > 10
        np.testing.assert_allclose(b.boxes, s.boxes, atol=1e-4)
        np.testing.assert_allclose(b.scores, s.scores, atol=1e-4)
    # a 4-D array is a list of images too
    stacked = det.detect(np.stack([images[0], images[0]]), batch_size=2)
    assert isinstance(stacked, list) and len(stacked) == 2
    np.testing.assert_allclose(stacked[1].boxes, single[0].boxes, atol=1e-4)


def test_postprocess_caps_and_sorting(spread_model):
    det = FaceDetector.from_model(spread_model, score_threshold=0.0, top_k=25)
    result = det.detect(np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    assert len(result) == 25
    assert np.all(np.diff(result.scores) <= 0)
    assert result.boxes.dtype == np.float32 and result.scores.dtype == np.float32
    assert np.all(result.boxes[:, 0] >= 0) and np.all(result.boxes[:, 2] <= 256)
    assert np.all(result.boxes[:, 1] >= 0) and np.all(result.boxes[:, 3] <= 256)
    high = det.detect(np.zeros((64, 64, 3), np.uint8), score_threshold=1.0)
    assert len(high) == 0 and high.boxes.shape == (0, 4)


def test_result_dataclasses():
    r = DetectionResult(np.array([[1, 2, 11, 22]]), np.array([0.5]), image_size=(30, 40), source="a.jpg")
    (d,) = r.detections
    assert d == Detection(1.0, 2.0, 11.0, 22.0, 0.5)
    assert (d.width, d.height) == (10.0, 20.0)
    doc = json.loads(r.to_json())
    assert doc == {
        "image": "a.jpg", "width": 40, "height": 30,
        "detections": [{"x1": 1.0, "y1": 2.0, "x2": 11.0, "y2": 22.0, "score": 0.5}],
    }
    import ufssd

    assert ufssd.Detection is Detection and ufssd.FaceDetector is FaceDetector


def test_no_default_weights_is_a_clear_error(monkeypatch, tmp_path):
    from ufssd.inference import DefaultWeightsMissingError, loading

    monkeypatch.setattr(loading, "default_weights_path", lambda: tmp_path / "default.safetensors")
    with pytest.raises(DefaultWeightsMissingError, match="no embedded default model"):
        FaceDetector()


def test_constructor_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        FaceDetector(weights="x.safetensors", preset="ufssd_light")
    with pytest.raises(ValueError, match="backend"):
        FaceDetector(preset="ufssd_light", backend="tensorflow")
    with pytest.raises(FileNotFoundError):
        FaceDetector(weights=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="onnxruntime"):
        FaceDetector(weights=tmp_path / "m.onnx", backend="torch")


def test_weights_file_round_trip(tmp_path, spread_model):
    from ufssd.model import save_weights

    path = tmp_path / "w.safetensors"
    save_weights(path, spread_model)
    image = np.random.default_rng(3).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    a = FaceDetector(weights=path, score_threshold=0.999).detect(image)
    b = FaceDetector.from_model(spread_model, score_threshold=0.999).detect(image)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-5)


def test_from_model_leaves_the_model_alone(spread_model):
    import copy

    model = copy.deepcopy(spread_model).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    det = FaceDetector.from_model(model, score_threshold=0.999)
    det.detect(np.zeros((64, 64, 3), np.uint8))
    assert model.training and det.device == torch.device("cpu")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats untouched
    unfused = FaceDetector.from_model(spread_model, fuse_batchnorm=False, score_threshold=0.999)
    image = np.random.default_rng(6).integers(0, 256, (160, 200, 3), dtype=np.uint8)
    a, b = unfused.detect(image), FaceDetector.from_model(spread_model, score_threshold=0.999).detect(image)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_from_model_unwraps_wrappers(spread_model):
    class Wrapper(torch.nn.Module):  # like DistributedDataParallel: the model is .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    det = FaceDetector.from_model(Wrapper(spread_model))
    assert det.config == spread_model.config
    with pytest.raises(TypeError, match="UFSSD"):
        FaceDetector.from_model(torch.nn.Linear(2, 2))


def test_anchors_are_put_on_a_device_once_per_input_size(spread_model):
    """One copy per (size, device), not per batch: on ``meta`` every ``.to`` would be a new tensor."""
    det = FaceDetector.from_model(spread_model)
    meta = torch.device("meta")
    anchors = det._anchors_for(128, 256, meta)
    assert anchors.device == meta and anchors.shape[1] == 4
    assert det._anchors_for(128, 256, meta) is anchors
    on_cpu = det._anchors_for(128, 256, torch.device("cpu"))
    assert on_cpu.device.type == "cpu" and on_cpu.shape == anchors.shape
    assert det._anchors_for(128, 256, torch.device("cpu")) is on_cpu
