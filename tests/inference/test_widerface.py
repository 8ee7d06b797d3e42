"""One resolved inference config: ``detect`` resolves a call's overrides once, ``postprocess`` gets
only that config, and ``predict_widerface`` reports the threshold it used (the evaluation floor
``InferenceConfig.eval_score_threshold`` by default)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ufssd.inference import FaceDetector, predict_widerface
from ufssd.inference import face_detector as face_detector_module


@pytest.fixture
def detector(spread_model):
    return FaceDetector.from_model(spread_model, score_threshold=0.9)


def test_resolve_applies_a_call_override_or_the_evaluation_floor(detector):
    assert detector.resolve() is detector.inference
    assert detector.resolve(0.25).score_threshold == 0.25
    floor = detector.inference.eval_score_threshold
    assert floor == 0.01 and detector.resolve(evaluation=True).score_threshold == floor
    assert detector.resolve(0.3, evaluation=True).score_threshold == 0.3
    # everything but the threshold is the detector's
    resolved = detector.resolve(0.25)
    assert (resolved.nms_iou, resolved.top_k, resolved.max_pixels) == (
        detector.inference.nms_iou, detector.inference.top_k, detector.inference.max_pixels
    )


def test_postprocess_gets_only_the_resolved_config(detector, monkeypatch):
    seen = []
    real = face_detector_module.postprocess

    def spy(*args, **kwargs):
        assert len(args) == 4  # logits, deltas, anchors, cfg: no separate threshold argument
        seen.append(args[3].score_threshold)
        return real(*args, **kwargs)

    monkeypatch.setattr(face_detector_module, "postprocess", spy)
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    low = detector.detect(image, score_threshold=0.3)
    default = detector.detect(image)
    assert seen == [0.3, 0.9]
    assert len(low) >= len(default) and (low.scores >= 0.3).all() and (default.scores >= 0.9).all()


def test_a_call_override_equals_a_detector_built_with_it(spread_model):
    image = np.random.default_rng(1).integers(0, 256, (100, 140, 3), dtype=np.uint8)
    a = FaceDetector.from_model(spread_model, score_threshold=0.9).detect(image, score_threshold=0.4)
    b = FaceDetector.from_model(spread_model, score_threshold=0.4).detect(image)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)


def test_prediction_summary_reports_the_threshold_used(detector, tmp_path):
    root = tmp_path / "images"
    (root / "0--Parade").mkdir(parents=True)
    pixels = np.random.default_rng(2).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "0--Parade" / "a.jpg", quality=95)

    summary = predict_widerface(detector, root, ["0--Parade/a.jpg"], tmp_path / "pred", progress=False)
    assert "score >= 0.01," in summary.input_policy and "score >= 0.9" not in summary.input_policy
    assert "TTA none" in summary.input_policy
    lines = (tmp_path / "pred" / "0--Parade" / "a.txt").read_text().splitlines()
    scores = np.array([float(ln.split()[4]) for ln in lines[2:]])
    assert int(lines[1]) == len(scores) == summary.detections > 0
    assert scores.min() >= 0.01 and scores.min() < 0.9  # the floor was used, not the detector's 0.9

    summary = predict_widerface(
        detector, root, ["0--Parade/a.jpg"], tmp_path / "pred", progress=False, score_threshold=0.5, tta="flip"
    )
    assert "score >= 0.5," in summary.input_policy and "TTA flip" in summary.input_policy
