"""Benchmark ``ufssd.evaluation.evaluate`` on a full-size synthetic WIDER FACE val submission.

Generates, in a temporary folder, one prediction file for each of the 3,226 val images listed in
the real ``wider_face_val.mat``: every ground-truth box jittered by a few pixels plus random
boxes, up to ``--boxes`` (default 1,000) per image, written as ``write_predictions`` writes them
(``%.2f`` coordinates, ``%.6f`` scores, sorted by score). Then it runs the whole evaluation
(reading and parsing included) several times on one core and prints the median, min and max.

    python benchmarks/bench_evaluate.py [--gt DIR] [--boxes 1000] [--repeats 5] [--protocol P]

``--gt`` defaults to ``$UFSSD_SHARED/data/widerface/eval_tools`` (``UFSSD_SHARED`` defaults to
``../shared`` beside the repository).
"""

from __future__ import annotations

import os

# one core: no BLAS / OpenMP threads (set before NumPy is imported)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ufssd.evaluation import evaluate, load_ground_truth  # noqa: E402
from ufssd.widerface_files import ground_truth_folder  # noqa: E402


def generate(pred_dir: Path, gt_dir: Path, boxes_per_image: int, seed: int = 0) -> int:
    """Write the synthetic submission; returns the number of box lines."""
    gt = load_ground_truth(gt_dir)
    rng = np.random.default_rng(seed)
    total = 0
    for i, (event, stem) in enumerate(zip(gt.events, gt.stems)):
        g = gt.boxes[gt.box_offsets[i] : gt.box_offsets[i + 1]].astype(np.float64)
        g = g[(g[:, 2] > 0) & (g[:, 3] > 0)][:boxes_per_image]
        size = np.maximum(g[:, 2:], 1.0)
        jit = g.copy()
        jit[:, :2] += rng.normal(0, 0.08, (len(g), 2)) * size
        jit[:, 2:] = size * np.exp(rng.normal(0, 0.1, (len(g), 2)))
        n_rand = boxes_per_image - len(jit)
        w = np.exp(rng.uniform(np.log(4), np.log(400), n_rand))
        h = w * rng.uniform(0.8, 1.4, n_rand)
        rand = np.column_stack([rng.uniform(0, 1024, n_rand), rng.uniform(0, 768, n_rand), w, h])
        xywh = np.concatenate([jit, rand])
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(jit)), rng.uniform(0.01, 0.7, n_rand)])
        order = np.argsort(-scores, kind="stable")
        lines = [stem, str(len(xywh))]
        lines += [
            f"{x:.2f} {y:.2f} {bw:.2f} {bh:.2f} {s:.6f}"
            for (x, y, bw, bh), s in zip(xywh[order].tolist(), scores[order].tolist())
        ]
        folder = pred_dir / event
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        total += len(xywh)
    return total


def machine() -> str:
    # the benchmarks' one cpu_name; it lives in the inference layer (torch), so it is imported
    # here, after the timed runs, which stay torch-free like the evaluation they time
    from ufssd.inference.bench import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main() -> int:
    shared = Path(os.environ.get("UFSSD_SHARED", REPO.parent / "shared"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gt", type=Path, default=ground_truth_folder(shared / "data" / "widerface"))
    ap.add_argument("--boxes", type=int, default=1000, help="boxes per image (default 1000)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (default 5)")
    ap.add_argument("--protocol", default="official", choices=("official", "port"))
    ap.add_argument(
        "--keep",
        type=Path,
        help="write the submission here instead of a temporary folder (reused when it exists)",
    )
    args = ap.parse_args()
    if not (args.gt / "wider_face_val.mat").is_file():
        print(f"ground truth not found in {args.gt} (use --gt)", file=sys.stderr)
        return 2
    pinned = "no"
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f"CPU {cpu}"
    load_before = (
        ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    )
    with tempfile.TemporaryDirectory(prefix="ufssd_bench_") as tmp:
        pred_dir = args.keep or Path(tmp) / "pred"
        if args.keep and any(args.keep.glob("*/*.txt")):
            print(f"reusing the submission in {args.keep}")
        else:
            t0 = time.perf_counter()
            n_lines = generate(pred_dir, args.gt, args.boxes)
            took = time.perf_counter() - t0
            print(f"generated {n_lines:,} box lines in {took:.0f} s")
        size = sum(f.stat().st_size for f in pred_dir.rglob("*.txt"))
        result = evaluate(pred_dir, args.gt, protocol=args.protocol)  # warm-up (page cache)
        load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        times, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            result = evaluate(pred_dir, args.gt, protocol=args.protocol)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    print(f"machine: {machine()}; pinned to {pinned}; BLAS/OpenMP threads 1")
    print(f"load average before the runs: {load_before}")
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    print(
        f"evaluate({result.images} images, {result.detections:,} boxes, {size / 1e6:.0f} MB, "
        f"protocol={args.protocol}), reading and parsing included, {len(times)} runs:"
    )
    print(
        f"  wall median {statistics.median(times):.2f} s (min {min(times):.2f}, "
        f"max {max(times):.2f}); CPU median {statistics.median(cpu):.2f} s "
        f"(min {min(cpu):.2f}, max {max(cpu):.2f})"
    )
    print("APs: " + ", ".join(f"{k} {v:.4f}" for k, v in result.aps.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
