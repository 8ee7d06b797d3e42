"""ONNX export: parity with PyTorch, dynamic shapes, the onnxruntime backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from ufssd.inference import FaceDetector  # noqa: E402
from ufssd.inference.export import ExportParityError, export_onnx, output_names  # noqa: E402
from ufssd.inference.onnx_backend import OnnxRunner, create_session, read_onnx_config  # noqa: E402


@pytest.fixture(scope="module")
def exported(spread_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "light_ffmm.onnx"
    result = export_onnx(spread_model, path)
    return path, result


def test_export_parity_report(exported, spread_model):
    path, result = exported
    report = result.parity
    assert path.is_file() and path.read_bytes() == result.data
    assert report.ok, report.summary()
    assert report.max_abs_diff < 1e-4
    assert report.boxes > 0 and report.box_max_diff <= 0.5
    assert 0.0 <= report.mask_flip_fraction < 1e-3
    assert len(report.inputs) == 2  # a real photo, then a batch of two (dynamic batch/height/width)


def test_graph_io_and_metadata(exported, spread_model):
    path, _ = exported
    session = create_session(path, num_threads=1)
    assert [i.name for i in session.get_inputs()] == ["images"]
    names = [o.name for o in session.get_outputs()]
    assert names == output_names((0,)) == ["cls_logits", "box_deltas", "mask_logits_l0"]
    assert read_onnx_config(session) == spread_model.config
    # dynamic shapes: an input size never seen at export
    x = torch.randn(3, 3, 128, 640)
    cls, box, masks = OnnxRunner(session)(x)
    with torch.inference_mode():
        ref = spread_model(x)
    assert cls.shape == ref.cls_logits.shape and box.shape == ref.box_deltas.shape
    torch.testing.assert_close(cls, ref.cls_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(masks[0], ref.mask_logits[0], atol=1e-4, rtol=0)


def test_onnxruntime_backend_same_boxes(exported, spread_model):
    path, _ = exported
    image = np.random.default_rng(5).integers(0, 256, (333, 517, 3), dtype=np.uint8)
    # a high threshold: a few hundred candidates, so neither the pre-NMS top-k nor the cap of
    # 750 cuts through near-ties (1e-5 differences would legitimately swap boxes there)
    ort_det = FaceDetector(weights=path, score_threshold=0.999, num_threads=1)
    assert ort_det.backend == "onnxruntime"
    torch_det = FaceDetector.from_model(spread_model, score_threshold=0.999)
    a, b = ort_det.detect(image), torch_det.detect(image)
    assert len(a) == len(b) > 10
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    # an in-memory export when the backend is asked for with a torch model
    mem = FaceDetector.from_model(spread_model, backend="onnxruntime", score_threshold=0.999)
    np.testing.assert_allclose(mem.detect(image).boxes, b.boxes, atol=0.5)
    # Soft-NMS runs after either backend alike
    soft = [
        FaceDetector(weights=path, score_threshold=0.999, num_threads=1, soft_nms_sigma=0.5).detect(image),
        FaceDetector.from_model(spread_model, score_threshold=0.999, soft_nms_sigma=0.5).detect(image),
    ]
    assert len(soft[0]) == len(soft[1]) > 10 and len(soft[0]) != len(b)  # decay drops some below 0.999
    np.testing.assert_allclose(soft[0].boxes, soft[1].boxes, atol=0.5)
    np.testing.assert_allclose(soft[0].scores, soft[1].scores, atol=1e-4)


def test_parity_failure_writes_nothing(spread_model, tmp_path, monkeypatch):
    import ufssd.inference.export as export

    changed = __import__("copy").deepcopy(spread_model)
    with torch.no_grad():
        next(p for n, p in changed.named_parameters() if "heads" in n).add_(0.5)
    bad_onnx = export._export_bytes(changed.eval(), 17)
    monkeypatch.setattr(export, "_export_bytes", lambda model, opset: bad_onnx)
    target = tmp_path / "bad.onnx"
    with pytest.raises(ExportParityError, match="FAILED"):
        export_onnx(spread_model, target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_onnxruntime_batch_equals_one_by_one(exported, monkeypatch):
    import onnxruntime

    path, _ = exported
    rng = np.random.default_rng(7)
    # three images with the same padded size (384 x 640: one batch of three) and one alone (256 x 384)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((333, 517, 3), (300, 600, 3), (257, 520, 3))]
    images.append(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    batches = []
    run = onnxruntime.InferenceSession.run

    def recording_run(self, output_names, feed, *args, **kwargs):
        batches.append(tuple(next(iter(feed.values())).shape))
        return run(self, output_names, feed, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", recording_run)
    det = FaceDetector(weights=path, score_threshold=0.999, num_threads=1)
    together = det.detect(images, batch_size=4)
    assert sorted(batches) == [(1, 3, 256, 384), (3, 3, 384, 640)]  # it did batch
    batches.clear()
    alone = [det.detect(image) for image in images]
    assert len(batches) == 4 and all(b[0] == 1 for b in batches)
    for t, a in zip(together, alone):
        assert len(t) == len(a) > 0
        np.testing.assert_allclose(t.boxes, a.boxes, atol=1e-3)
        np.testing.assert_allclose(t.scores, a.scores, atol=1e-5)



def _calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """``spread_init`` weights with BatchNorm statistics of two random batches, as training leaves
    them: activations of trained scale (spread weights alone grow them to ~1e3 through the PAN
    adds, where float rounding exceeds 1e-4), then class logits spread to about +-5."""
    from .conftest import spread_init

    spread_init(model, seed=1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
    g = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, 256, 384, generator=g))
        for head in model.heads:
            head.cls.weight.mul_(4.0)
    return model.eval()


def _check_structure(preset: str, model) -> None:
    if preset == "ufssd_light_v4_pan_deep":  # one more block at levels 0-1, FPN into every level, PAN
        assert model.backbone.bottomup and len(model.backbone.laterals) == 5
    else:  # a separable level-0 head (depthwise 3x3 + BN + ReLU, then 1x1) on the PAN neck
        assert model.heads[0].depthwise is not None and model.heads[1].depthwise is None


@pytest.mark.parametrize("preset, seed", [("ufssd_light_v4_pan_deep", 3), ("ufssd_light_v4_pan_sephead", 4)])
def test_v4_candidate_exports_with_parity(preset, seed, tmp_path):
    """The v4 candidates' new parts (the light backbone's depth, FPN and PAN fields; the separable
    head, its BatchNorm folded like the backbone's) export, and run in onnxruntime and
    FaceDetector with the default's parity."""
    from ufssd.model import build_model

    model = _calibrated(build_model(preset))
    _check_structure(preset, model)
    image = np.random.default_rng(seed).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    path = tmp_path / f"{preset}.onnx"
    report = export_onnx(model, path, check_image=image).parity
    assert report.ok and report.max_abs_diff < 1e-4, report.summary()
    assert report.inputs == [(1, 3, 256, 384), (2, 3, 256, 384)]
    ort_det = FaceDetector(weights=path, score_threshold=0.99, num_threads=1)
    torch_det = FaceDetector.from_model(model, score_threshold=0.99)
    a, b = ort_det.detect(image), torch_det.detect(image)
    assert len(a) == len(b) > 10
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
