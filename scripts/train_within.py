"""Train for a wall-clock budget: a short probe, then a full schedule sized to the time left.

A lent GPU comes with a fixed number of minutes and an unknown speed (the data loader, not the
chip, usually sets it). The schedule is a function of ``--iters`` (milestones are fractions of
it), so the run is split in two calls of ``ufssd train`` on the same ``--out``:

1. a probe: ``--iters BIG --stop-at PROBE`` (warm-up and constant lr: the same steps any
   schedule starts with), which measures images per second;
2. ``--resume --iters N``, with ``N`` the steps that fit the budget left at that speed; the
   schedule resumes at step PROBE with its milestones at fractions of ``N``.

Usage (every argument after ``--`` goes to ``ufssd train``; it must hold --out and --batch-size)::

    python scripts/train_within.py --budget 520 --probe-steps 150 -- --preset ufssd_light_ffmm_x1 \\
        --data-root .device_data/widerface --batch-size 64 --out runs/gpu
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
import time
from pathlib import Path

PROBE_ITERS = 1_000_000  # milestones of the probe lie far beyond its end


def _train(python: str, args: list[str]) -> None:
    cmd = [python, "-m", "ufssd", "train", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def measured_steps_per_s(log_path: Path, batch_size: int) -> float:
    """Steps per second over the probe's logged intervals, the first (start-up) left out."""
    with log_path.open(newline="") as f:
        rates = [float(row["images_per_s"]) for row in csv.DictReader(f)]
    if not rates:
        raise SystemExit(f"{log_path}: the probe logged no step; lower --log-every")
    steady = rates[1:] or rates
    return sorted(steady)[len(steady) // 2] / batch_size


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: train_within.py [options] -- <ufssd train arguments>")
    cut = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, required=True, help="seconds from now until training must end")
    p.add_argument("--probe-steps", type=int, default=150, help="steps of the probe (default 150)")
    p.add_argument("--margin", type=float, default=40.0, help="seconds kept for start-up and saving (default 40)")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs ufssd")
    args = p.parse_args(argv[:cut])
    train_args = argv[cut + 1 :]
    known = argparse.ArgumentParser(add_help=False)
    known.add_argument("--out", type=Path, required=True)
    known.add_argument("--batch-size", type=int, required=True)
    paths, _ = known.parse_known_args(train_args)

    t0 = time.monotonic()
    _train(args.python, [*train_args, "--iters", str(PROBE_ITERS), "--stop-at", str(args.probe_steps)])
    rate = measured_steps_per_s(paths.out / "train_log.csv", paths.batch_size)
    left = args.budget - (time.monotonic() - t0) - args.margin
    iters = args.probe_steps + max(0, math.floor(rate * left))
    print(f"probe: {rate:.2f} steps/s; {left:.0f} s left -> --iters {iters}", flush=True)
    _train(args.python, [*train_args, "--resume", "--iters", str(iters)])
    print(f"done in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
