"""Forward-pass time of every preset's network on CPU (no pre/post-processing).

For each preset: parameter count, then the time of ``model(images)`` at 640x640 and at 640x480
(padded to 640x512, as the detector feeds it), batch 1, eval mode, ``torch.inference_mode()``:
median and min of several runs after warm-up (fewer runs for the heavy VGG-16/ResNet-152
presets). ``--fused`` adds a column with BatchNorm folded into the convs
(``ufssd.model.fuse_batchnorm``). Prints a Markdown table with the machine and thread count.

    python benchmarks/bench_forward.py                       # all presets, 2 threads
    python benchmarks/bench_forward.py --presets ufssd_light ufssd_light_ffmm_x1 --runs 50 --fused
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from ufssd.inference.bench import cpu_name
from ufssd.model import build_model, fuse_batchnorm
from ufssd.presets import get_preset, list_presets

SIZES = {"640x640": (640, 640), "640x480": (512, 640)}  # name -> padded (H, W)


def time_forward(model: torch.nn.Module, images: torch.Tensor, warmup: int, runs: int) -> tuple[float, float]:
    """(median, min) milliseconds of ``model(images)``."""
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(images)
        for _ in range(runs):
            start = time.perf_counter()
            model(images)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=None, help="preset names (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs for light presets (default 20)")
    parser.add_argument("--heavy-runs", type=int, default=3, help="timed runs for VGG-16/ResNet-152 (default 3)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up runs (heavy presets: 1)")
    parser.add_argument("--fused", action="store_true", help="also time the BatchNorm-fused model")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = args.presets or list_presets()
    rows = []
    for name in names:
        heavy = get_preset(name).model.backbone != "light"
        runs, warmup = (args.heavy_runs, 1) if heavy else (args.runs, args.warmup)
        model = build_model(name).eval()
        params = sum(p.numel() for p in model.parameters())
        fused = fuse_batchnorm(model) if args.fused else None
        cells = [name, f"{params / 1e6:.2f} M"]
        for h, w in SIZES.values():
            images = torch.randn(1, 3, h, w)
            med, low = time_forward(model, images, warmup, runs)
            cells.append(f"{med:.1f} / {low:.1f}")
            if fused is not None:
                med, low = time_forward(fused, images, warmup, runs)
                cells.append(f"{med:.1f} / {low:.1f}")
        cells.append(str(runs))
        rows.append(cells)

    header = ["preset", "params"]
    for size in SIZES:
        header.append(f"{size} ms (median / min)")
        if args.fused:
            header.append(f"{size} BN-fused ms")
    header.append("runs")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} logical cores; torch {torch.__version__}, "
        f"{args.threads} thread(s); batch 1, eval, inference_mode; 640x480 is padded to 640x512 "
        f"(W x H); load average at the end {load:.2f}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    print("\n".join(lines))  # noqa: T201 - a benchmark script's output


if __name__ == "__main__":
    main()
