"""Loader workers: same weights as loading in the main process, and no deadlock after OpenCV ran.

A forked worker whose parent has already used OpenCV's thread pool hangs in its first OpenCV
call; the trainer starts workers with ``forkserver``. Run in a subprocess with a timeout so a
regression fails instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys, tempfile
    import cv2, numpy as np, torch
    from ufssd.data import read_split
    from ufssd.presets import get_preset, replace
    from ufssd.train import train

    torch.set_num_threads(1)
    cv2.setNumThreads(2)
    big = np.random.default_rng(0).integers(0, 255, (2000, 2000, 3), dtype=np.uint8)
    for _ in range(3):
        cv2.resize(big, (700, 700))  # OpenCV's thread pool is now running in this process
    names = ["0--Parade/0_Parade_marchingband_1_1038", "1--Handshaking/1_Handshaking_Handshaking_1_234",
             "13--Interview/13_Interview_Interview_On_Location_13_536"]
    samples = read_split(sys.argv[1], "train", subset=names)
    cfg = replace(get_preset("ufssd_light"), train={"iters": 3, "batch_size": 2, "resolution": 128})
    sums = []
    for workers in (0, 2):
        with tempfile.TemporaryDirectory() as out:
            r = train(cfg, samples, out, workers=workers, progress=False, tensorboard=False)
            sums.append(r.checksum)
    print("CHECKSUMS", *sums)
    """
)


def test_workers_match_main_process_and_survive_opencv(widerface_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(widerface_dir)], env=env, capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("CHECKSUMS")][-1]
    _, in_main, in_workers = line.split()
    assert in_main == in_workers
