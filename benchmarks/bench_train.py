"""Training throughput (images/s) on this machine.

Two measurements:

* ``step``: one optimizer step (normalise + forward + loss + backward + SGD step) on a fixed batch
  of real WIDER FACE crops (or synthetic images), targets prepared beforehand; median over
  ``--iters`` timed steps after ``--warmup`` untimed ones. This is the network's cost.
* ``pipeline`` (``--pipeline``): the whole trainer (``ufssd.train.train``) on real data with
  augmentation for ``--pipeline-iters`` steps, once with the targets (matching + GT masks) built
  in the DataLoader workers and once in the main process; images/s from its log (first log
  interval dropped). This answers where the targets should be computed.

* ``--device cuda|cpu``: the device data path of ``ufssd train --data-device`` (issue 16), three
  ways, for each ``--batches`` size: the data path alone (``DeviceBatches``: augmentation and
  targets of a batch from the resident pool), the training step alone (``Trainer.step`` on one
  fixed batch; bf16 autocast on CUDA as in training) and both together (the trainer's loop),
  each the median over ``--iters`` batches after ``--warmup``, the device synchronised around
  each. The pool: ``--pack DIR`` (decoded on the device), else the first ``--pool-images``
  training images of ``--data-root``.

Usage::

    python benchmarks/bench_train.py                       # light + vgg16_ffmm_x1 at 640
    python benchmarks/bench_train.py --presets ufssd_light_ffmm_x1 --pipeline --threads 2
    python benchmarks/bench_train.py --device cuda --pack .device_data/pack --batches 64 128 256
    python benchmarks/bench_train.py --device cpu --batches 4 8 --iters 3 --threads 2

Threads: ``--threads`` (default: torch's default, the number of cores). ``OMP_WAIT_POLICY`` is
PASSIVE unless set (as in ``ufssd train``): on a busy machine spinning OpenMP threads make a
step ~10x slower. Other processes on the machine slow every number down; the script prints the
load average before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# as `ufssd train` does: OpenMP threads sleep instead of spinning while they wait (set
# OMP_WAIT_POLICY=ACTIVE to measure spinning threads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ufssd.presets import get_preset, replace  # noqa: E402
from ufssd.train.targets import TargetBuilder  # noqa: E402

DEFAULT_BATCH = {"ufssd_light": 4, "ufssd_light_ffmm_x1": 4}  # others: 1


def _default_data() -> Path:
    shared = Path(os.environ.get("UFSSD_SHARED", REPO.parent / "shared"))
    return shared / "data" / "widerface"


def real_batch(cfg, data_root: Path, batch: int):
    from ufssd.data import WiderFaceDataset, collate, read_split

    samples = read_split(data_root, "train")[: batch * 4]
    ds = WiderFaceDataset(samples, cfg.train, train=True)
    return collate([ds[(0, i)] for i in range(batch)])


def synthetic_batch(cfg, batch: int):
    from ufssd.data import Batch

    g = torch.Generator().manual_seed(0)
    s = cfg.train.resolution
    images = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=g)
    boxes, ignore = [], []
    for _ in range(batch):
        xy = torch.rand((8, 2), generator=g) * (s - 64)
        wh = 8 + torch.rand((8, 1), generator=g) * 56
        boxes.append(torch.cat([xy, xy + wh], dim=1))
        ignore.append(torch.zeros(8, dtype=torch.bool))
    return Batch(images, boxes, ignore, [f"synthetic/{i}" for i in range(batch)])


def bench_step(preset: str, resolution: int, batch: int, iters: int, warmup: int, data_root: Path | None) -> dict:
    """The trainer's own step (``Trainer.step``) on one fixed batch, its targets built beforehand."""
    from ufssd.train import RunConfig
    from ufssd.train import distributed as D
    from ufssd.train.trainer import Trainer

    cfg = replace(get_preset(preset), train={"resolution": resolution, "batch_size": batch, "iters": 10**6})
    data = real_batch(cfg, data_root, batch) if data_root else synthetic_batch(cfg, batch)
    builder = TargetBuilder(cfg)
    target_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        tb = builder.from_batch(data)
        target_times.append(time.perf_counter() - t0)
    target_s = statistics.median(target_times)
    info = D.init_distributed("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, [], tmp, RunConfig(device="cpu", progress=False, tensorboard=False), info)
        trainer.model.train()
        med = _timed(lambda: trainer.step(tb), iters, warmup, info.device)
        params = sum(p.numel() for p in trainer.bare.parameters()) / 1e6
    D.cleanup(info)
    return {
        "preset": preset,
        "resolution": resolution,
        "batch": batch,
        "step_s": med,
        "images_per_s": batch / med,
        "targets_s_per_batch": target_s,
        "params_M": params,
    }


def bench_pipeline(preset: str, resolution: int, batch: int, iters: int, workers: int, data_root: Path) -> dict:
    from ufssd.atomic import read_csv
    from ufssd.data import read_split
    from ufssd.train import train

    samples = read_split(data_root, "train")
    cfg = replace(get_preset(preset), train={"resolution": resolution, "batch_size": batch, "iters": iters,
                                             "checkpoint_every": 10**9})  # fmt: skip
    out = {}
    for targets in ("workers", "main"):
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, samples, tmp, workers=workers, targets=targets, progress=False, tensorboard=False,
                  log_every=max(iters // 4, 1))  # fmt: skip
            rows = read_csv(Path(tmp) / "train_log.csv")
        rates = [float(r["images_per_s"]) for r in rows[1:]] or [float(rows[0]["images_per_s"])]
        out[targets] = statistics.median(rates)
    return out


def _timed(fn, iters: int, warmup: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``iters`` calls after ``warmup``, the device synchronised."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_device(
    preset: str, resolution: int, batches: list[int], device: str, pack: Path | None, data_root: Path | None,
    pool_images: int, iters: int, warmup: int,
) -> list[dict]:
    """Images/s of the device data path alone, the step alone and both, per batch size."""
    from ufssd.data import read_split
    from ufssd.train import RunConfig
    from ufssd.train import distributed as D
    from ufssd.train.device_data import pool_from_pack, pool_from_samples
    from ufssd.train.trainer import Trainer

    if pack is None and data_root is None:
        raise SystemExit("--device needs --pack or the WIDER data (--data-root)")
    samples = [] if pack is not None else read_split(data_root, "train")[:pool_images]
    info = D.init_distributed(device)
    rows = []
    t0 = time.perf_counter()
    pool = pool_from_pack(pack, device) if pack is not None else pool_from_samples(samples, device, max_side=1024)
    print(f"pool: {len(pool)} images, {pool.nbytes / 2**30:.2f} GiB on {device}, in {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in batches:
            cfg = replace(get_preset(preset), train={"resolution": resolution, "batch_size": batch, "iters": 10**6})
            run = RunConfig(data_device=device, progress=False, tensorboard=False, device=device)
            trainer = Trainer(cfg, samples, Path(tmp) / f"b{batch}", run, info, pool=pool)
            trainer.model.train()
            stream = trainer.open_device_batches()
            data_s = _timed(lambda: next(stream), iters, warmup, info.device)
            fixed = next(stream)
            step_s = _timed(lambda: trainer.step(fixed), iters, warmup, info.device)
            both_s = _timed(lambda: trainer.step(next(stream)), iters, warmup, info.device)
            rows.append({"batch": batch, "data": batch / data_s, "step": batch / step_s, "both": batch / both_s,
                         "pool": len(pool), "pool_gib": pool.nbytes / 2**30})  # fmt: skip
            print(f"{preset} @{resolution} batch {batch:>4} on {info.device}: data path {batch / data_s:9.1f} img/s, "
                  f"step {batch / step_s:9.1f} img/s, both {batch / both_s:9.1f} img/s  "
                  f"(pool {len(pool)} images, {pool.nbytes / 2**30:.2f} GiB)", flush=True)  # fmt: skip
    D.cleanup(info)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["ufssd_light_ffmm_x1", "ufssd_vgg16_ffmm_x1"])
    p.add_argument("--resolution", type=int, default=640)
    p.add_argument("--batch", type=int, help="batch size (default: 4 for light presets, 1 otherwise)")
    p.add_argument("--iters", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    p.add_argument("--synthetic", action="store_true", help="random images and boxes instead of WIDER crops")
    p.add_argument("--data-root", type=Path, default=_default_data())
    p.add_argument("--pipeline", action="store_true", help="also time the whole trainer: targets in workers vs main")
    p.add_argument("--pipeline-iters", type=int, default=24)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers for --pipeline")
    p.add_argument("--device", help="cuda or cpu: benchmark the device data path (--data-device) instead")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256], help="batch sizes of --device")
    p.add_argument("--pack", type=Path, help="--device: the pool from this pack (default: --data-root's train)")
    p.add_argument("--pool-images", type=int, default=256, help="--device without --pack: images in the pool")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data_root = None if args.synthetic else args.data_root
    if data_root is not None and not data_root.is_dir():
        print(f"no data at {data_root}: using synthetic batches")
        data_root = None
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load avg {os.getloadavg()}")  # fmt: skip
    if args.device:
        for preset in args.presets[:1] if args.presets == ["ufssd_light_ffmm_x1", "ufssd_vgg16_ffmm_x1"] else args.presets:
            bench_device(preset, args.resolution, args.batches, args.device, args.pack, data_root,
                         args.pool_images, args.iters, args.warmup)  # fmt: skip
        print(f"load avg after: {os.getloadavg()}")
        return 0
    print(f"data: {'WIDER FACE train crops (augmented)' if data_root else 'synthetic'}; "
          f"median of {args.iters} steps after {args.warmup} warm-up; float32 on the CPU")  # fmt: skip
    print(f"{'preset':<24} {'res':>5} {'batch':>5} {'params(M)':>9} {'s/step':>8} {'img/s':>7} {'targets s/batch':>16}")
    for preset in args.presets:
        batch = args.batch or DEFAULT_BATCH.get(preset, 1)
        r = bench_step(preset, args.resolution, batch, args.iters, args.warmup, data_root)
        print(f"{r['preset']:<24} {r['resolution']:>5} {r['batch']:>5} {r['params_M']:>9.2f} {r['step_s']:>8.3f} "
              f"{r['images_per_s']:>7.2f} {r['targets_s_per_batch']:>16.3f}", flush=True)  # fmt: skip
    if args.pipeline:
        if data_root is None:
            print("--pipeline needs the WIDER FACE data")
        else:
            for preset in args.presets:
                batch = args.batch or DEFAULT_BATCH.get(preset, 1)
                r = bench_pipeline(preset, args.resolution, batch, args.pipeline_iters, args.workers, data_root)
                print(f"pipeline {preset} @{args.resolution} batch {batch}, {args.workers} worker(s): "
                      f"targets in workers {r['workers']:.2f} img/s, in main {r['main']:.2f} img/s", flush=True)  # fmt: skip
    print(f"load avg after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
