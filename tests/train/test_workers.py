"""Loader workers: same weights as loading in the main process, and no deadlock after OpenCV ran.

A forked worker whose parent has already used OpenCV's thread pool hangs in its first OpenCV
call; the trainer starts workers with ``forkserver``. The test runs in the suite's own process
(a fresh interpreter costs seconds of imports) after making OpenCV's thread pool run here, with a
pytest-timeout limit so that a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ufssd.data import read_split
from ufssd.presets import get_preset, replace
from ufssd.train import train

pytestmark = pytest.mark.slow

NAMES = [
    "0--Parade/0_Parade_marchingband_1_1038",
    "1--Handshaking/1_Handshaking_Handshaking_1_234",
    "13--Interview/13_Interview_Interview_On_Location_13_536",
]


@pytest.mark.timeout(180)
def test_workers_match_main_process_and_survive_opencv(widerface_dir, tmp_path):
    threads = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        big = np.random.default_rng(0).integers(0, 255, (2000, 2000, 3), dtype=np.uint8)
        for _ in range(3):
            cv2.resize(big, (700, 700))  # OpenCV's thread pool is now running in this process
        samples = read_split(widerface_dir, "train", subset=NAMES)
        cfg = replace(get_preset("ufssd_light"), train={"iters": 3, "batch_size": 2, "resolution": 128})
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            sums = [
                train(cfg, samples, tmp_path / f"w{workers}", workers=workers, progress=False, tensorboard=False).checksum
                for workers in (0, 2)
            ]
        finally:
            torch.set_num_threads(torch_threads)
    finally:
        cv2.setNumThreads(threads)
    assert sums[0] == sums[1]
