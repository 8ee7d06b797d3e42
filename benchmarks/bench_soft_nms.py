"""What Gaussian Soft-NMS (``--soft-nms SIGMA``) costs beside NMS at IoU 0.3: post-processing time
per image, on real photos, with the model's real candidates.

For every ``--every``-th image of ``--subset`` (at most ``--images``), at each score threshold of
``--thresholds`` (0.01: WIDER prediction files, where up to 5,000 candidates reach suppression;
0.7: the shipped model's user threshold), the image is detected ``--repeats`` times with NMS and
with Soft-NMS, interleaved, and the post-processing time (``FaceDetector.last_timings["post"]``:
decoding, suppression, mapping back) of each run is recorded. The table gives, per threshold and
method, the median over images of each image's median, the 90th percentile over images, and the
mean number of boxes returned. The network runs once per detection and is not part of the figure.

    python benchmarks/bench_soft_nms.py --data-root ~/widerface-all --images 100 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

import numpy as np
import torch

from ufssd.inference import FaceDetector
from ufssd.inference.bench import machine_info
from ufssd.inference.io import load_image


def post_ms(detector: FaceDetector, image: np.ndarray, threshold: float, sigma: float) -> tuple[float, int]:
    detector.inference = dataclasses.replace(detector.inference, soft_nms_sigma=sigma)
    result = detector.detect(image, score_threshold=threshold)
    return 1000 * detector.last_timings["post"], len(result)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="weights (default: the shipped model)")
    p.add_argument("--data-root", type=Path, default=Path("~/widerface-all").expanduser())
    p.add_argument("--subset", type=Path, help="image list (default: DATA_ROOT/dev_images.txt)")
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.7])
    p.add_argument("--sigma", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    subset = args.subset or args.data_root / "dev_images.txt"
    names = [n for n in subset.read_text().split() if n][:: args.every][: args.images]
    images = [load_image(args.data_root / "WIDER_val" / "images" / n) for n in names]
    detector = FaceDetector(weights=args.weights, num_threads=args.threads)
    methods = {"NMS (IoU 0.3)": 0.0, f"Soft-NMS (sigma {args.sigma:g})": args.sigma}
    rows = []
    for threshold in args.thresholds:
        per_image = {m: [] for m in methods}
        boxes = {m: [] for m in methods}
        for image in images:
            post_ms(detector, image, threshold, 0.0)  # warm-up: caches, allocator
            runs = {m: [] for m in methods}
            for _ in range(args.repeats):
                for m, sigma in methods.items():
                    ms, count = post_ms(detector, image, threshold, sigma)
                    runs[m].append(ms)
                    if len(runs[m]) == 1:
                        boxes[m].append(count)
            for m in methods:
                per_image[m].append(statistics.median(runs[m]))
        for m in methods:
            rows.append((threshold, m, statistics.median(per_image[m]), float(np.quantile(per_image[m], 0.9)),
                         statistics.fmean(boxes[m])))
    info = machine_info(args.threads, "cpu")
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    print(f"{len(images)} images of {subset} (every {args.every}th), original size, {args.repeats} runs each; {machine}")
    print()
    print("| score threshold | suppression | post-processing ms / image, median | p90 | boxes / image |")
    print("|---|---|---|---|---|")
    for threshold, m, median, p90, count in rows:
        print(f"| {threshold:g} | {m} | {median:.2f} | {p90:.2f} | {count:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
