"""scripts/efficiency.py: the stage probe (NMS timed and counted, candidates >= 0.01), the mask's
kept share, Th_Mask copies, and one measured setting on a small synthetic image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ufssd.model import build_model


@pytest.fixture(scope="module")
def efficiency(load_script):
    return load_script("efficiency")


def test_kept_shares_count_the_cells_over_the_image_only(efficiency):
    # level 0 (stride 4) of a 16 x 16 padded input: 4 x 4 cells; the image is 10 x 6 -> 3 x 2 cells
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1, :3, :2] = torch.tensor([[5.0, -5.0], [5.0, -5.0], [5.0, 5.0]])  # face prob 0.99 / 0.007
    logits[0, 1, 3:, :] = 10.0  # padding: never counted
    shares = efficiency.kept_shares([logits], (0,), (10, 6), (4, 8, 16, 32, 64, 128), threshold=0.5)
    assert shares == {0: pytest.approx(4 / 6)}


def test_with_mask_threshold_keeps_the_weights(efficiency):
    model = build_model("ufssd_light_ffmm_x1").eval()
    copy = efficiency.with_mask_threshold(model, 0.3)
    assert copy.config.model.mask_threshold == 0.3 and copy.ffmm["0"].threshold == 0.3
    assert model.ffmm["0"].threshold == 0.01
    for (name, a), (_, b) in zip(model.state_dict().items(), copy.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("skip", [False, True])
def test_measure_one_setting(efficiency, skip):
    torch.manual_seed(0)
    model = build_model("ufssd_light_ffmm_x1").eval()
    image = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    row, dets = efficiency.measure(model, {"0--Parade/x.jpg": image}, threads=1, skip=skip)
    assert set(dets) == {"0--Parade/x.jpg"}
    assert float(row["total_ms"]) >= float(row["net_ms"]) > 0 and float(row["nms_ms"]) > 0
    # at init every score is about 0.01 (the face prior): most anchors are candidates
    above, to_nms = float(row["above_001"]), float(row["to_nms"])
    assert 0 < to_nms <= min(above, 5000)
    assert float(row["kept_l0"]) == 1.0  # the mask keeps every cell at init (M_face ~ 0.5)
    assert "kept_l1" not in row


def test_probe_restores_what_it_wraps(efficiency):
    import importlib

    from ufssd.inference import FaceDetector

    post = importlib.import_module("ufssd.inference.postprocess")
    detector = FaceDetector(preset="ufssd_light")
    nms, runner = post.nms, detector.runner
    with efficiency.StageProbe(detector).installed():
        assert post.nms is not nms and detector.runner is not runner
    assert post.nms is nms and detector.runner is runner


def test_a_new_measurement_replaces_only_its_models_rows(efficiency, tmp_path):
    path = tmp_path / "eff.csv"
    old = [{"label": "v3", "total_ms": "80"}, {"label": "x1", "total_ms": "70"}, {"label": "x1", "total_ms": "71"}]
    efficiency.write_csv(path, old)
    new = [{"label": "x1", "total_ms": "60"}, {"label": "light", "total_ms": "50"}]
    efficiency.write_csv(path, efficiency.merge_rows(efficiency.read_csv(path), new))
    assert [(r["label"], r["total_ms"]) for r in efficiency.read_csv(path)] == [
        ("v3", "80"), ("x1", "60"), ("light", "50")]


def test_run_repeats_every_setting_and_scores_it(efficiency, widerface_dir, tmp_path):
    from ufssd.inference import load_image

    from ufssd.widerface_files import read_image_list

    folder = widerface_dir / "WIDER_val" / "images"
    dev = [f"{n}.jpg" for n in read_image_list(widerface_dir / "dev_images.txt")]
    dev = sorted(dev, key=lambda n: (folder / n).stat().st_size)[:2]
    arrays = {n: load_image(folder / n) for n in dev}
    rows = efficiency.run({"default": "default"}, arrays, widerface_dir / "eval_tools", threads=1,
                          th_mask=(0.01, 0.2), work=tmp_path, repeats=2)
    assert [(r["skip_masked_anchors"], r["mask_threshold"]) for r in rows] == [(0, 0.01), (1, 0.01), (1, 0.2)]
    for r in rows:
        assert r["repeats"] == 2 and r["images"] == 2 and float(r["total_ms"]) >= float(r["net_ms"]) > 0
        assert 0 <= float(r["hard"]) <= 1
        # the median pass lies between the fastest and the slowest (they are kept to 0.1 ms)
        assert float(r["total_min_ms"]) - 0.05 <= float(r["total_ms"]) <= float(r["total_max_ms"]) + 0.05
    # a higher Th_Mask keeps fewer cells and so fewer candidates
    assert float(rows[2]["kept_l0"]) <= float(rows[1]["kept_l0"])
    assert float(rows[2]["above_001"]) <= float(rows[1]["above_001"])
