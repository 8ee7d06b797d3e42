"""The diagnosis tables (recall ceiling, best-box IoU, false positives) on hand-made cases, and
against the shared tools/diagnose_dev.py on the v3 figures of diagnosis-v3.md."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ufssd.evaluation import write_predictions
from ufssd.evaluation.diagnosis import IOU_BINS, diagnose, pairwise_iou_xyxy
from ufssd.widerface_files import Sample


def _sample(name, boxes, ignore=None):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    ignore = np.zeros(len(boxes), bool) if ignore is None else np.asarray(ignore, bool)
    return Sample(image_path=Path(f"/nowhere/{name}.jpg"), name=name, boxes=boxes, ignore=ignore, origin="test")


def test_pairwise_iou_hand_values():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    np.testing.assert_allclose(pairwise_iou_xyxy(a, b), [[1.0, 50 / 150, 0.0]])


def test_diagnose_hand_case(tmp_path):
    # image 1: a 100 px face found at IoU 0.81 (score 0.9), a 12 px face found at IoU 0.5 (0.4),
    # an ignored face overlapped by a box that is therefore a false positive (0.95)
    # image 2: a 40 px face whose best box has IoU 0.25; one background box at 0.6
    s1 = _sample("ev/a", [[0, 0, 100, 100], [200, 200, 212, 212], [300, 300, 340, 340]], [False, False, True])
    s2 = _sample("ev/b", [[0, 0, 40, 40]])
    write_predictions(tmp_path / "ev" / "a.txt", "a",
                      np.array([[0, 0, 90, 90], [200, 200, 212, 218], [300, 300, 340, 340]], dtype=float),
                      np.array([0.9, 0.4, 0.95]))
    write_predictions(tmp_path / "ev" / "b.txt", "b",
                      np.array([[0, 0, 20, 20], [500, 500, 540, 540]], dtype=float), np.array([0.3, 0.6]))
    d = diagnose(tmp_path, [s1, s2])
    assert d.images == 2 and d.large_faces == 2
    # height bins <10, 10-16, 16-24, 24-32, 32-48, 48-64, 64-128, >=128
    assert d.faces_by_height == (0, 1, 0, 0, 1, 0, 1, 0)
    assert d.recall_ceiling[1] == 1.0 and d.recall_ceiling[4] == 0.0 and d.recall_ceiling[6] == 1.0
    assert math.isnan(d.recall_ceiling[0])
    # best IoUs of the large faces: 0.81 (>= .8) and 0.25 (< .3)
    assert d.best_iou_shares[0] == 0.5 and d.best_iou_shares[-1] == 0.5
    assert d.share_below_05 == 0.5 and d.share_at_08 == 0.5
    # FPs: image a 0.95 (ignored face), image b 0.6 (background) and 0.3 (IoU .25 < .3) -> per image
    assert d.fp_per_image == (3 / 2, 2 / 2, 1 / 2, 1 / 2)
    assert "| ours |" in d.markdown()
    assert len(d.best_iou_shares) == len(IOU_BINS) - 1


def test_missing_prediction_file_is_an_image_without_boxes(tmp_path):
    d = diagnose(tmp_path, [_sample("ev/a", [[0, 0, 50, 50]])])
    assert d.recall_ceiling[5] == 0.0 and d.best_iou_shares[0] == 1.0 and d.fp_per_image == (0, 0, 0, 0)


def test_same_tables_as_the_shared_diagnose_dev_tool(widerface_dir, shared_dir, tmp_path):
    """Random boxes around the faces of the 156-image dev slice: our tables equal those of
    ``shared/tools/diagnose_dev.py`` (the tool of diagnosis-v3.md) to its printed 3 decimals."""
    import re
    import subprocess
    import sys

    from ufssd.widerface_files import read_split

    tool = shared_dir / "tools" / "diagnose_dev.py"
    gt_txt = shared_dir / "data" / "widerface-all" / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    if not tool.is_file() or not gt_txt.is_file():
        pytest.skip(f"{tool} or {gt_txt} not found")
    samples = read_split(widerface_dir, "val", subset=widerface_dir / "dev_images.txt")
    rng = np.random.default_rng(0)
    for s in samples:
        faces = s.boxes[~s.ignore].astype(np.float64)
        jitter = rng.normal(1.0, 0.25, size=(len(faces), 4)) * (faces[:, 2:] - faces[:, :2]).repeat(2, axis=1) * 0.2
        boxes = np.concatenate([faces + jitter, rng.uniform(0, 800, (5, 2)).repeat(2, axis=1) + [0, 0, 40, 40]])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        event, stem = s.name.split("/")
        write_predictions(tmp_path / event / f"{stem}.txt", stem, boxes, rng.uniform(0.01, 1.0, len(boxes)))
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{s.name}.jpg\n" for s in samples))
    out = subprocess.run([sys.executable, str(tool), str(tmp_path), "--gt", str(gt_txt), "--list", str(listing)],
                         capture_output=True, text=True, check=True).stdout
    theirs = {key: [float(v) for v in re.findall(r" (\d+\.\d+)(?=\s|$)", line.split(":", 1)[1])]
              for key, line in ((l.strip().split(":")[0], l) for l in out.splitlines() if ":" in l)}
    d = diagnose(tmp_path, samples)
    np.testing.assert_allclose(d.recall_ceiling, theirs["recall ceiling by height"], atol=5e-4)
    np.testing.assert_allclose(d.best_iou_shares, theirs["best IoU, faces >= 32 px"], atol=5e-4)
    np.testing.assert_allclose(d.fp_per_image, theirs["false positives per image"], atol=5e-3)
