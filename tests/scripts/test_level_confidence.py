"""scripts/level_confidence.py: confident anchors per level, at the detector's input policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ufssd.inference import FaceDetector
from ufssd.model import build_model


@pytest.fixture(scope="module")
def level_confidence(load_script):
    return load_script("level_confidence")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("ufssd_light").eval()


def test_every_anchor_counts_at_threshold_zero(level_confidence, model):
    """A 200 x 300 image pads to 256 x 384: level l has (256 / s) x (384 / s) cells, one anchor
    each; with --max-size 128 it is scaled to 85 x 128 and pads to 128 x 128."""
    image = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    strides = (4, 8, 16, 32, 64, 128)
    counts = level_confidence.confident_per_level(FaceDetector.from_model(model), image, 0.0)
    assert counts.tolist() == [-(-256 // s) * -(-384 // s) for s in strides]
    small = level_confidence.confident_per_level(FaceDetector.from_model(model, max_size=128), image, 0.0)
    assert small.tolist() == [-(-128 // s) * -(-128 // s) for s in strides]


def test_counts_match_the_network_output(level_confidence, model):
    image = np.random.default_rng(1).integers(0, 256, (130, 140, 3), dtype=np.uint8)
    detector = FaceDetector.from_model(model)
    with torch.inference_mode():
        logits = model(detector.transform.batch([image], [(130, 140)], [False], (256, 256))).cls_logits
    p = logits[0].softmax(-1)[:, 1]
    threshold = float(p.median())
    counts = level_confidence.confident_per_level(detector, image, threshold)
    assert counts.sum() == int((p >= threshold).sum()) and 0 < counts.sum() < p.numel()
    table = level_confidence.markdown([{"label": "m", "max_size": 0, "per_level": counts.tolist()}], threshold, 1)
    assert "| m | original | " in table and table.count("| level ") == 6


def test_silencing_a_level_zeroes_its_face_probability_only(level_confidence, model):
    image = np.random.default_rng(2).integers(0, 256, (130, 140, 3), dtype=np.uint8)
    detector = FaceDetector.from_model(model)
    batch = detector.transform.batch([image], [(130, 140)], [False], (256, 256))
    parts = level_confidence.level_slices((256, 256), detector.config.anchors.strides)
    assert [p.stop - p.start for p in parts] == [(256 // s) ** 2 for s in (4, 8, 16, 32, 64, 128)]
    with torch.inference_mode():
        plain = detector.runner(batch)[0].softmax(-1)[0, :, 1]
        with level_confidence.silenced(detector, (0, 5)):
            quiet = detector.runner(batch)[0].softmax(-1)[0, :, 1]
    assert quiet[parts[0]].max() == 0 and quiet[parts[5]].max() == 0
    assert torch.equal(quiet[parts[1].start : parts[4].stop], plain[parts[1].start : parts[4].stop])
    assert detector.runner(batch)[0].softmax(-1)[0, :, 1].equal(plain)  # restored after the block


def test_silencing_every_level_leaves_no_detection_to_score(level_confidence, widerface_dir):
    from ufssd.widerface_files import read_image_list

    folder = widerface_dir / "WIDER_val" / "images"
    names = sorted(read_image_list(widerface_dir / "dev_images.txt"), key=lambda n: (folder / f"{n}.jpg").stat().st_size)
    rows = level_confidence.silenced_aps({"default": "default"}, widerface_dir, widerface_dir / "eval_tools",
                                         names[:3], [320], tuple(range(6)), threads=1)
    assert len(rows) == 1 and rows[0]["max_size"] == 320
    assert rows[0]["silenced"]["medium"] == rows[0]["silenced"]["hard"] == 0
    assert rows[0]["all"]["medium"] > 0  # (easy may be NaN: an image set without easy faces)
    table = level_confidence.silenced_markdown(rows, tuple(range(6)), 3)
    assert "| default | <= 320 px |" in table


def test_existing_predictions_stand_for_all_levels(level_confidence, widerface_dir, tmp_path):
    """--all-pred: the folder is scored as the model's all-level row, not predicted again (here a
    folder of empty predictions, which a fresh prediction would not match)."""
    from ufssd.evaluation import write_predictions
    from ufssd.widerface_files import read_image_list

    names = read_image_list(widerface_dir / "dev_images.txt")[:2]
    for n in names:
        write_predictions(tmp_path / f"{n}.txt", n, np.zeros((0, 4)), np.zeros(0))
    rows = level_confidence.silenced_aps({"default": "default"}, widerface_dir, widerface_dir / "eval_tools",
                                         names, [320], (5,), threads=1, all_pred={"default": tmp_path})
    # (these two images have no easy face: easy AP is NaN, undefined, either way)
    assert rows[0]["all"]["medium"] == rows[0]["all"]["hard"] == 0 < rows[0]["silenced"]["medium"], rows


def test_the_page_of_silenced_runs_averages_each_row_over_its_seeds(level_confidence, tmp_path):
    import json

    def aps(e, m, h):
        return {"easy": e, "medium": m, "hard": h}

    runs = [{"silenced": [5], "images": 10, "rows": [
                {"label": "fem@seed0", "max_size": 0, "all": aps(0.1, 0.1, 0.1), "silenced": aps(0.3, 0.2, 0.1)}]},
            {"silenced": [5], "images": 10, "rows": [
                {"label": "fem@seed1", "max_size": 0, "all": aps(0.2, 0.1, 0.1), "silenced": aps(0.4, 0.3, 0.2)},
                {"label": "uf-ssd@seed1", "max_size": 0, "all": aps(0.2, 0.2, 0.1), "silenced": aps(0.2, 0.2, 0.1)}]}]
    files = []
    for i, run in enumerate(runs):
        files.append(tmp_path / f"r{i}.json")
        files[-1].write_text(json.dumps(run))
    page = tmp_path / "page.md"
    assert level_confidence.main(["--page", str(page), "--from-json", *map(str, files)]) == 0
    text = page.read_text()
    assert "| fem | original | seed0, seed1 | 15.0 / 10.0 / 10.0 | 35.0 / 25.0 / 15.0 | +20.0 / +15.0 / +5.0 |" in text
    assert "| uf-ssd | original | seed1 | 20.0 / 20.0 / 10.0 | 20.0 / 20.0 / 10.0 | +0.0 / +0.0 / +0.0 |" in text
    runs[1]["silenced"] = [4]
    files[1].write_text(json.dumps(runs[1]))
    with pytest.raises(ValueError, match="different levels"):
        level_confidence.main(["--page", str(page), "--from-json", *map(str, files)])
    assert "seed0, seed1" in page.read_text()  # the old page is kept whole
