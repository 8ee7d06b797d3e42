"""Images/s of the batched augmentation (``ufssd.data.batch_augment``) against the CPU path.

The data path alone (issue 16): a pool of real WIDER FACE training images is decoded once and
kept on ``--device`` as uint8 (``pad_images``), with its faces padded (``pad_boxes``); each timed
round draws a batch of indices and runs ``augment_batch`` on it (crop, resize, flip, photometric
distortion; the targets are not built). Two ways to feed ``roi_align``, which needs float input:

* ``gather``: ``pool[index]`` (uint8) per batch, converted to float inside ``augment_batch``;
* ``float-pool``: the pool converted to float once, the batch read through ``index`` (no copy).

``--compile`` passes ``torch.compile(photometric_distort_batch, fullgraph=True)`` (the step with
~30 elementwise passes; the first round, untimed, compiles it).

For comparison, the CPU path: ``ufssd.data.augment`` per image on one thread (what one DataLoader
worker does after decoding). Median of ``--reps`` rounds after one warm-up round; on CUDA the
device is synchronised around each round. Other processes slow every number down; the script
prints the load average before and after.

Usage::

    python benchmarks/bench_batch_augment.py                          # CPU tensors, batch 8 and 16
    python benchmarks/bench_batch_augment.py --device cuda --batch 64 128 256 --pool 512
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ufssd.config import TrainConfig  # noqa: E402
from ufssd.data import augment, load_image, read_split  # noqa: E402
from ufssd.data.batch_augment import augment_batch, pad_boxes, pad_images, photometric_distort_batch  # noqa: E402


def _default_data() -> Path:
    shared = Path(os.environ.get("UFSSD_SHARED", REPO.parent / "shared"))
    return shared / "data" / "widerface"


def load_pool(data_root: Path, count: int):
    """The first ``count`` training images (numpy, for the CPU path) and their samples."""
    samples = read_split(data_root, "train")[:count]
    return samples, [load_image(s.image_path) for s in samples]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_batch(samples, arrays, device, batch: int, reps: int, mode: str, cfg: TrainConfig, distort) -> float:
    """Median seconds of one ``augment_batch`` round of ``batch`` images drawn from the pool."""
    pool, sizes = pad_images([torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).to(device) for a in arrays])
    boxes, ignore, present = pad_boxes([s.boxes for s in samples], [s.ignore for s in samples], device)
    if mode == "float-pool":
        pool = pool.float()
    gen = torch.Generator(device=device).manual_seed(0)
    times = []
    for r in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        index = torch.randint(0, len(samples), (batch,), generator=gen, device=device)
        source, pick = (pool, index) if mode == "float-pool" else (pool[index], None)
        out = augment_batch(
            source, sizes[index], boxes[index], ignore[index], present[index], gen, cfg, index=pick, distort=distort
        )
        _sync(device)
        if r:
            times.append(time.perf_counter() - t0)
        del out
    return statistics.median(times)


def bench_cpu_path(samples, arrays, reps: int, cfg: TrainConfig) -> float:
    """Median seconds of ``augment`` on one image (over ``reps * 8`` calls, one thread)."""
    rng = np.random.default_rng(0)
    times = []
    for k in range(reps * 8):
        i = k % len(samples)
        t0 = time.perf_counter()
        augment(arrays[i], samples[i].boxes, samples[i].ignore, rng, cfg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--resolution", type=int, default=640)
    p.add_argument("--batch", type=int, nargs="+", default=[8, 16])
    p.add_argument("--pool", type=int, default=32, help="training images kept on the device")
    p.add_argument("--reps", type=int, default=5, help="timed rounds (after one warm-up round)")
    p.add_argument("--mode", nargs="+", default=["gather", "float-pool"], choices=["gather", "float-pool"])
    p.add_argument("--compile", action="store_true", help="torch.compile the photometric step (fullgraph)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    p.add_argument("--data-root", type=Path, default=_default_data())
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = TrainConfig(resolution=args.resolution)
    samples, arrays = load_pool(args.data_root, args.pool)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {name}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load avg {os.getloadavg()}")  # fmt: skip
    print(f"pool: {len(samples)} WIDER FACE train images on {device}; S = {args.resolution}; photometric on; "
          f"median of {args.reps} rounds; photometric step {'compiled' if args.compile else 'eager'}")  # fmt: skip
    cv2.setNumThreads(1)  # the CPU path as one loader worker runs it
    cpu_s = bench_cpu_path(samples, arrays, args.reps, cfg)
    print(f"CPU path (ufssd.data.augment, 1 thread): {cpu_s * 1e3:.1f} ms/image, {1 / cpu_s:.1f} images/s")
    distort = torch.compile(photometric_distort_batch, fullgraph=True) if args.compile else photometric_distort_batch
    print(f"{'mode':<11} {'batch':>5} {'s/batch':>8} {'images/s':>9}")
    for mode in args.mode:
        for batch in args.batch:
            s = bench_batch(samples, arrays, device, batch, args.reps, mode, cfg, distort)
            print(f"{mode:<11} {batch:>5} {s:>8.3f} {batch / s:>9.1f}", flush=True)
    print(f"load avg after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
