"""A tiny model overfits two real WIDER FACE images: the loss falls a lot, the large faces come back."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou, nms

from ufssd.presets import get_preset, replace
from ufssd.train import train

pytestmark = pytest.mark.slow

# two train images with a few large faces (sides 46-66 px once fitted into 256 px)
NAMES = [
    "0--Parade/0_Parade_marchingband_1_1038",
    "1--Handshaking/1_Handshaking_Handshaking_1_234",
]
RESOLUTION = 256
LARGE_FACE_PX = 40


def test_overfit_two_images(widerface_dir, tmp_path):
    from ufssd.data import collate, read_split
    from ufssd.geometry.anchors import anchors_for_input
    from ufssd.geometry.boxes import decode
    from ufssd.model import normalize
    from ufssd.data import FitDataset

    samples = read_split(widerface_dir, "train", subset=NAMES)
    assert len(samples) == 2
    cfg = replace(
        get_preset("ufssd_light_ffmm_x1"),
        train={"iters": 100, "batch_size": 2, "resolution": RESOLUTION, "lr": 0.2,
               "warmup_iters": 10, "lr_milestones": (0.8,), "checkpoint_every": 10_000},
    )  # fmt: skip
    result = train(
        cfg, samples, tmp_path / "run", workers=0, augment=False, progress=False,
        tensorboard=False, warmup_max_fraction=None, log_every=10,
    )  # fmt: skip
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < first / 10, [round(r["loss"], 3) for r in result.history]

    # decode the trained model's detections on the same (fitted, unaugmented) inputs
    model = result.model.eval()
    data = FitDataset(samples, RESOLUTION, cfg.train.min_face_px)
    batch = collate([data[i] for i in range(2)])
    with torch.no_grad():
        out = model(normalize(batch.images, cfg.model))
    anchors = anchors_for_input(RESOLUTION, RESOLUTION, cfg.anchors)
    scores = out.cls_logits.softmax(-1)[..., 1]
    boxes = decode(out.box_deltas, anchors, cfg.anchors.variances, cfg.anchors.max_log_size)
    checked = 0
    for n in range(2):
        keep = scores[n] > 0.5
        b, s = boxes[n][keep], scores[n][keep]
        b = b[nms(b, s, 0.3)]
        gt = batch.boxes[n][~batch.ignore[n]]
        large = gt[torch.minimum(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]) >= LARGE_FACE_PX]
        assert len(b) > 0, f"no detection on {NAMES[n]}"
        best_iou = box_iou(large, b).amax(dim=1)
        assert (best_iou > 0.5).all(), (NAMES[n], best_iou.tolist())
        checked += len(large)
    assert checked >= 3
