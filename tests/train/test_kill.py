"""Killing a training process (SIGKILL, no cleanup) while it checkpoints every step leaves a
readable ``last.pt``, and the run resumes from it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ufssd.train import load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="SIGKILL")]

REPO = Path(__file__).resolve().parents[2]


def _cmd(widerface_dir, subset, out, iters, resume=False):
    return [
        sys.executable, "-m", "ufssd", "train", "--preset", "ufssd_light",
        "--source", f"{widerface_dir}:train:{subset}", "--iters", str(iters), "--batch-size", "2",
        "--resolution", "128", "--workers", "0", "--threads", "1", "--checkpoint-every", "1",
        "--out", str(out), "--no-progress", "--no-tensorboard", "--log-every", "1",
        *(["--resume"] if resume else []),
    ]  # fmt: skip


def test_sigkill_during_checkpointing_leaves_a_resumable_run(widerface_dir, tmp_path):
    subset = tmp_path / "subset.txt"
    subset.write_text("0--Parade/0_Parade_marchingband_1_1038.jpg\n1--Handshaking/1_Handshaking_Handshaking_1_234.jpg\n")
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    for kill_after_s in (0.0, 0.37):  # two kills at different moments of the write cycle
        proc = subprocess.Popen(
            _cmd(widerface_dir, subset, out, 10_000, resume=True), env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 240
            start = load_checkpoint(out / "last.pt")["step"] if (out / "last.pt").exists() else 0
            while time.monotonic() < deadline:  # wait for at least 2 new checkpoints
                if (out / "last.pt").exists() and load_checkpoint(out / "last.pt")["step"] >= start + 2:
                    break
                assert proc.poll() is None, "training exited early"
                time.sleep(0.05)
            else:
                pytest.fail("no checkpoint within 240 s")
            time.sleep(kill_after_s)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        ckpt = load_checkpoint(out / "last.pt")  # never half-written
        assert ckpt["step"] >= start + 2
    # the killed run resumes (here: to 2 more steps) and finishes
    step = load_checkpoint(out / "last.pt")["step"]
    done = subprocess.run(_cmd(widerface_dir, subset, out, step + 2, resume=True), env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {out / 'last.pt'} at step {step}" in done.stderr
    assert load_checkpoint(out / "last.pt")["step"] == step + 2
    assert (out / "final.safetensors").is_file()
    assert not list(out.glob(".*.tmp"))  # what the kills left behind was cleaned up
