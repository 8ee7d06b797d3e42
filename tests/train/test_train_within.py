"""scripts/train_within.py: the probe's speed and the split of the arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

@pytest.fixture(scope="module")
def within(load_script):
    return load_script("train_within")


def test_speed_leaves_out_the_start_up_interval(within, tmp_path: Path) -> None:
    log = tmp_path / "train_log.csv"
    log.write_text("step,images_per_s\n25,50\n50,600\n75,640\n100,560\n")
    assert within.measured_steps_per_s(log, 64) == pytest.approx(600 / 64)


def test_empty_probe_log_is_an_error(within, tmp_path: Path) -> None:
    log = tmp_path / "train_log.csv"
    log.write_text("step,images_per_s\n")
    with pytest.raises(SystemExit, match="no step"):
        within.measured_steps_per_s(log, 64)


def test_runs_probe_then_sized_schedule(within, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_train(python, args):
        calls.append(args)
        (tmp_path / "train_log.csv").write_text("step,images_per_s\n10,1\n20,100\n")

    monkeypatch.setattr(within, "_train", fake_train)
    within.main(["--budget", "100", "--probe-steps", "20", "--margin", "0", "--",
                 "--preset", "p", "--out", str(tmp_path), "--batch-size", "10"])  # fmt: skip
    probe, full = calls
    assert probe[-4:] == ["--iters", str(within.PROBE_ITERS), "--stop-at", "20"]
    assert full[-3] == "--resume" and full[-2] == "--iters"
    assert 20 + 990 <= int(full[-1]) <= 20 + 1000  # 10 steps/s over the ~100 s left
