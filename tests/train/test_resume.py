"""Exact resume: k steps + resume + k steps give bit-identical weights to 2k steps straight (CPU)."""

from __future__ import annotations

import pytest
import torch

from ufssd.presets import get_preset, replace
from ufssd.train import TrainingError, load_checkpoint, train

NAMES = [
    "0--Parade/0_Parade_marchingband_1_1038",
    "1--Handshaking/1_Handshaking_Handshaking_1_234",
    "13--Interview/13_Interview_Interview_On_Location_13_536",
]


@pytest.fixture(scope="module")
def samples(widerface_dir):
    from ufssd.data import read_split

    return read_split(widerface_dir, "train", subset=NAMES)


def _cfg(iters: int):
    # tiny: light preset, 128 px, total batch 2; a warm-up of 2 and a milestone at step 3 so the
    # schedule's state matters; augmentation on, so the data stream position matters too
    return replace(
        get_preset("ufssd_light_ffmm_x1"),
        train={"iters": iters, "batch_size": 2, "resolution": 128, "warmup_iters": 2,
               "lr_milestones": (0.5,), "checkpoint_every": 1000, "lr": 0.02},
    )  # fmt: skip


def _run(samples, out, **kw):
    kw.setdefault("workers", 0)
    return train(_cfg(6), samples, out, progress=False, tensorboard=False, warmup_max_fraction=None, log_every=1, **kw)


def test_k_plus_resume_plus_k_equals_2k(samples, tmp_path):
    straight = _run(samples, tmp_path / "straight")
    assert straight.finished and straight.step == 6

    first = _run(samples, tmp_path / "split", stop_at=3)
    assert first.step == 3 and not first.finished
    assert load_checkpoint(tmp_path / "split" / "last.pt")["step"] == 3
    second = _run(samples, tmp_path / "split", resume=True)
    assert second.finished and second.step == 6

    a, b = straight.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.checksum == second.checksum
    # the loss curves agree too, and the training moved the weights at all
    assert [r["loss"] for r in straight.history[3:]] == [r["loss"] for r in second.history]
    assert straight.history[0]["loss"] != straight.history[-1]["loss"]
    # the resumed log reads as one run: steps 1..6 once each
    rows = (tmp_path / "split" / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4, 5, 6]
    # the final weights file and both last.pt hold the same tensors
    ck_a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    ck_b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert all(torch.equal(ck_a[k], ck_b[k]) for k in ck_a)
    assert (tmp_path / "split" / "final.safetensors").is_file()


def test_resume_without_checkpoint_starts_fresh_and_existing_run_is_not_overwritten(samples, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="ufssd.train"):
        result = _run(samples, out, resume=True, stop_at=1)
    assert result.step == 1
    assert any("starting a fresh run" in r.getMessage() for r in caplog.records)
    with pytest.raises(TrainingError, match="--resume"):
        _run(samples, out)
