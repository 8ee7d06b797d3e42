"""The box-fix loss options reach the trainer (docs/boxes.md): the same step from the same weights
logs the IoU-loss and QFL terms when the config asks for them."""

from __future__ import annotations

from pathlib import Path

import pytest

import ufssd
from ufssd.presets import get_preset, replace
from ufssd.train import train

DEFAULT_WEIGHTS = Path(ufssd.__file__).resolve().parent / "weights" / "default.safetensors"
TRAIN = ["0--Parade/0_Parade_marchingband_1_1038", "1--Handshaking/1_Handshaking_Handshaking_1_234"]


@pytest.fixture(scope="module")
def samples(widerface_dir):
    from ufssd.data import read_split

    return read_split(widerface_dir, "train", subset=TRAIN)


def _first_row(samples, out: Path, **loss):
    cfg = replace(
        get_preset("ufssd_light_ffmm_x1"),
        loss=loss,
        train={"iters": 1, "batch_size": 2, "resolution": 256, "lr": 0.0, "warmup_iters": 0, "checkpoint_every": 1000},
    )
    result = train(cfg, samples, out, init=DEFAULT_WEIGHTS, workers=0, augment=False, progress=False,
                   tensorboard=False, log_every=1)  # fmt: skip
    return result.history[0]


def test_iou_box_loss_and_qfl_through_train(samples, tmp_path):
    paper = _first_row(samples, tmp_path / "paper")
    diou = _first_row(samples, tmp_path / "diou", box_loss="diou", lambda_loc=2.0)
    qfl = _first_row(samples, tmp_path / "qfl", cls_loss="qfl", lambda_conf=1.0)
    # DIoU loss per positive lies in [0, 2); times lambda_loc 2 -> [0, 4); Smooth L1 is unbounded
    assert 0.0 < diou["loc"] < 4.0 and diou["loc"] != paper["loc"]
    assert diou["cls"] == paper["cls"]  # the class term did not change
    assert qfl["loc"] == paper["loc"] and qfl["cls"] != paper["cls"]
