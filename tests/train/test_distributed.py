"""A two-process ``torchrun`` run on the CPU (gloo) completes, and its ranks agree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_two_process_torchrun_on_cpu(widerface_dir, tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this PyTorch build has no torch.distributed")
    subset = tmp_path / "subset.txt"
    subset.write_text(
        "0--Parade/0_Parade_marchingband_1_1038.jpg\n"
        "1--Handshaking/1_Handshaking_Handshaking_1_234.jpg\n"
        "13--Interview/13_Interview_Interview_On_Location_13_536.jpg\n"
        "1--Handshaking/1_Handshaking_Handshaking_1_885.jpg\n"
    )
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "ufssd", "train", "--preset", "ufssd_light_ffmm_x1",
        "--source", f"{widerface_dir}:train:{subset}",
        "--iters", "3", "--batch-size", "4", "--resolution", "128", "--workers", "0",
        "--device", "cpu", "--threads", "1", "--out", str(out), "--no-progress", "--log-every", "1",
        "--no-tensorboard",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    sums = dict(re.findall(r"rank (\d+): final parameter checksum ([0-9a-f]{64})", log))
    assert set(sums) == {"0", "1"}, log[-4000:]
    assert sums["0"] == sums["1"]
    # rank 0 wrote the run (one process's files only); its weights are the ranks' weights
    assert (out / "last.pt").is_file() and (out / "final.safetensors").is_file()
    assert "batch 4 = 2 x 2 per process" in log
    from ufssd.model import load_weights
    from ufssd.train.distributed import parameter_checksum

    assert parameter_checksum(load_weights(out / "final.safetensors")) == sums["0"]
    rows = (out / "train_log.csv").read_text().splitlines()
    assert len(rows) == 1 + 3
