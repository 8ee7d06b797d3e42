"""scripts/box_fit.py (docs/boxes.md): receptive fields against the hand-computed ones of the light
backbone, and the fit statistics on two real training crops."""

from __future__ import annotations

import pytest

from ufssd.inference import default_weights_path


@pytest.fixture(scope="module")
def box_fit(load_script):
    return load_script("box_fit")


def test_receptive_fields_of_the_light_backbone(box_fit):
    # by hand: stem 3x3/2 -> 3; stage 0 (dw 3x3/2 + 1 block) -> 15; stage 1 -> 39; stage 2 (2 blocks)
    # -> 119; + the 3x3 head: level 2 151; levels 0 and 1 see level 2 through the top-down path ->
    # 151; stage 3 -> 215 + head 64 = 279; stage 4 -> 279 + 128 = 407; stage 5 -> 407 + 256 = 663
    rows = box_fit.receptive_fields(str(default_weights_path()), size=896)  # level 5: 448 +- 332 px fits
    assert [r["theoretical_rf"] for r in rows] == [151, 151, 151, 279, 407, 663]
    assert all(0 < r["effective_rf_90"] <= r["theoretical_rf"] for r in rows)


def test_fit_stats_on_two_training_crops(box_fit, widerface_dir):
    from ufssd.model import load_weights

    cfg = load_weights(str(default_weights_path())).config
    items = box_fit.crops(cfg, str(widerface_dir), None, images=2, seed=0, resolution=256)
    stats = box_fit.fit_stats(str(default_weights_path()), items, min_face=8.0, batch=2)
    assert stats["positives"] > 0
    for key in ("iou_ge_0.8", "iou_lt_0.5", "iou_median"):
        assert 0.0 <= stats[key] <= 1.0
    assert stats["iou_ge_0.8"] + stats["iou_lt_0.5"] <= 1.0
    assert len(stats["positives_per_image_by_level"]) == 6


def test_per_face_stats_on_two_training_crops(box_fit, widerface_dir):
    from ufssd.model import load_weights

    cfg = load_weights(str(default_weights_path())).config
    items = box_fit.crops(cfg, str(widerface_dir), None, images=2, seed=0, resolution=256)
    stats = box_fit.per_face_stats(str(default_weights_path()), items, min_face=8.0, batch=2)
    assert stats["faces"] == sum(int((((it.boxes[:, 3] - it.boxes[:, 1]) >= 8.0) & ~it.ignore).sum()) for it in items) > 0
    # the kept box is one of the decoded boxes, so the oracle (the best of them) bounds it
    assert stats["oracle_iou_median"] >= stats["kept_iou_median"]
    assert stats["oracle_iou_ge_0.8"] >= stats["kept_iou_ge_0.8"]
    assert stats["oracle_iou_lt_0.5"] <= stats["kept_iou_lt_0.5"]
    # a trained regressor moves boxes toward the faces: better than the undecoded anchors
    assert stats["oracle_iou_median"] > stats["anchor_iou_median"]
    assert 0.0 <= stats["found_share"] <= 1.0


def test_per_face_stats_on_whole_val_images(box_fit, widerface_dir):
    # originals: whole images at their own sizes, one per batch; the val images are not dropped
    # (read_training_samples would drop them: they are the dev slice)
    items = box_fit.originals(str(widerface_dir), "val", None, images=2, seed=0)
    assert len(items) == 2
    stats = box_fit.per_face_stats(str(default_weights_path()), items, min_face=32.0, batch=1)
    kept = sum(int((((it.boxes[:, 3] - it.boxes[:, 1]) >= 32.0) & ~it.ignore).sum()) for it in items)
    assert stats["faces"] == kept > 0
    assert stats["oracle_iou_ge_0.8"] >= stats["kept_iou_ge_0.8"]
    # the prediction files' best box (after NMS) is one of the decoded boxes: never beats the oracle
    assert stats["oracle_iou_ge_0.8"] >= stats["nms_best_iou_ge_0.8"]
    assert stats["oracle_iou_lt_0.5"] <= stats["nms_best_iou_lt_0.5"]

