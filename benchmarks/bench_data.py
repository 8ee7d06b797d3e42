"""Data-loading cost per training image: decode, and decode + the paper's augmentation.

Median over N random real WIDER FACE train images, 1 thread (cv2 and torch), resolution from
TrainConfig (640 by default). Usage: python benchmarks/bench_data.py [--root DIR] [--n 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ufssd.config import TrainConfig
from ufssd.data import WiderFaceDataset, augment, item_rng, load_image, read_split
from ufssd.inference.bench import cpu_name


def timed(fn, items) -> list[float]:
    out = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    default_root = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface"
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("UFSSD_WIDER", default_root)))
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--resolution", type=int, default=640)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    samples = read_split(args.root, "train")
    cfg = TrainConfig(resolution=args.resolution)
    idx = [int(i) for i in np.random.default_rng(1).choice(len(samples), args.n, replace=False)]
    dataset = WiderFaceDataset(samples, cfg)
    images = {i: load_image(samples[i].image_path) for i in idx}
    rows = {
        "decode (ufssd.images, Pillow)": timed(lambda i: load_image(samples[i].image_path), idx),
        "augment only": timed(
            lambda i: augment(images[i], samples[i].boxes, samples[i].ignore, item_rng(0, 0, i), cfg), idx
        ),
        "dataset item (decode + augment)": timed(lambda i: dataset[i], idx),
    }
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; 1 thread; "
          f"{args.n} train images, resolution {args.resolution}")
    print("| step | median ms | min ms |\n|---|---|---|")
    for name, ts in rows.items():
        print(f"| {name} | {statistics.median(ts):.1f} | {min(ts):.1f} |")


if __name__ == "__main__":
    main()
