"""Atomic checkpoint writes, RNG states, and the CSV logs' resume behaviour."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ufssd.train.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    load_checkpoint,
    preserved_rng,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ufssd.train.logging_utils import CSVLog, EvalHistory


def _checkpoint(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}, "config": {"name": "x"}, "rng": rng_state()}


def test_save_load_round_trip_is_weights_only(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _checkpoint(7))
    ckpt = load_checkpoint(path)  # torch.load(weights_only=True) inside
    assert ckpt["step"] == 7
    assert torch.equal(ckpt["model"]["w"], torch.full((3,), 7.0))
    assert ckpt["format"] == "ufssd-train-checkpoint"
    # nothing but the checkpoint in the folder: no temporary files left behind
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_exception_while_writing_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _checkpoint(1))
    before = path.read_bytes()

    def dies_half_way(obj, f):
        torch.save(obj, f)
        f.seek(0)
        f.write(b"garbage, as if the process died mid-write")
        raise KeyboardInterrupt("killed while writing")

    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save(_checkpoint(2), path, _serialize=dies_half_way)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_kill_leaves_only_an_ignored_temporary_file(tmp_path):
    """A hard kill cannot run the cleanup: a stray ``.last.pt.*.tmp`` may stay, ``last.pt`` is whole."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, _checkpoint(3))
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"PK\x03\x04 truncated")
    assert load_checkpoint(path)["step"] == 3


def test_truncated_or_foreign_files_are_refused(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _checkpoint(1))
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a ufssd training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_round_trip_through_a_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draws()
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    expected = _draws()
    _draws()
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert _draws() == expected


def test_preserved_rng_leaves_generators_untouched():
    torch.manual_seed(0)
    state = rng_state()
    expected = _draws()
    set_rng_state(state)
    with preserved_rng():
        _draws()
        torch.randn(100)
    assert _draws() == expected


def test_csv_log_drops_rows_past_the_resumed_step(tmp_path):
    path = tmp_path / "log.csv"
    log = CSVLog(path, ("step", "loss"))
    for step in (10, 20, 30):
        log.write({"step": step, "loss": 1.0 / step})
    log.close()
    log = CSVLog(path, ("step", "loss"), start_step=20)  # the run resumed from step 20
    log.write({"step": 30, "loss": 0.5})
    log.close()
    lines = path.read_text().splitlines()
    assert lines[0] == "step,loss"
    assert [line.split(",")[0] for line in lines[1:]] == ["10", "20", "30"]
    assert lines[-1] == "30,0.5"


def test_eval_history_best_and_resume(tmp_path):
    path = tmp_path / "eval_history.csv"
    h = EvalHistory(path)
    h.add({"step": 100, "easy": 0.5, "medium": 0.4, "hard": 0.2, "mean": 0.366})
    h.add({"step": 200, "easy": 0.6, "medium": 0.5, "hard": 0.3, "mean": 0.466})
    assert h.best("hard") == (0.3, 200)
    h2 = EvalHistory(path, start_step=150)
    assert h2.best("hard") == (0.2, 100)
    assert path.read_text().splitlines()[0] == "step,easy,medium,hard,mean"
    assert len(path.read_text().splitlines()) == 2


def test_atomic_write_text_replaces_whole_file(tmp_path):
    from ufssd.atomic import atomic_write_text

    path = tmp_path / "a.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"


def test_atomic_path_renames_on_success_and_cleans_up_on_error(tmp_path):
    from ufssd.atomic import atomic_path

    target = tmp_path / "sub" / "plot.png"
    with atomic_path(target, suffix=".png") as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and tmp != target
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError), atomic_path(target, suffix=".png") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["plot.png"]
