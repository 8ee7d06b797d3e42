"""Which pyramid level fires: confident anchors per image, by level, at an input size.

For each model (``--weights LABEL=PATH``, repeatable; ``default`` is the shipped model) and each
input size (``--max-size``: ``0`` is the original size, the protocol's; ``N`` downscales the
longer side to at most N px), on every ``--every``-th dev image: the mean number of anchors per
image whose face probability (the network's softmax, before NMS) is at least ``--threshold``,
per level (0 = stride 4, ..., 5 = stride 128). A level whose count jumps between input sizes
scores content it never saw in training (issue 18: the FEM rows, trained on 320 px crops, fire
at level 5 on original-size images). Prints a Markdown table; ``--json`` keeps it.

    python scripts/level_confidence.py --max-size 0 640 \\
        --weights uf-ssd@seed1=~/ufssd_runs/ablation/runs/ufssd_light/seed1/final.safetensors \\
        --weights fem@seed0=~/ufssd_runs/ablation/runs/ufssd_light_fem/seed0/final.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def confident_per_level(detector, image: np.ndarray, threshold: float) -> np.ndarray:
    """(L,) anchors of each level whose face probability is >= ``threshold`` on one RGB image,
    at the detector's input policy (its ``max_size``); anchors of the zero padding included."""
    import torch

    from ufssd.geometry.anchors import feature_sizes

    size = detector.network_size(*image.shape[:2])
    padded = detector.transform.padded_size(*size)
    with torch.inference_mode():
        cls_logits, _, _ = detector.runner(detector.transform.batch([image], [size], [False], padded).to(detector.device))
    confident = (cls_logits[0].softmax(-1)[:, 1] >= threshold).cpu()
    cells = [h * w for h, w in feature_sizes(*padded, detector.config.anchors.strides)]
    return np.array([int(part.sum()) for part in confident.split(cells)], dtype=np.int64)


def measure(weights: dict[str, str], images: list[np.ndarray], sizes: list[int], threshold: float,
            threads: int) -> list[dict]:
    """One row per (model, input size): label, max_size (0 = original) and per-level means."""
    from ufssd.inference import FaceDetector

    rows = []
    for label, path in weights.items():
        for max_size in sizes:
            kw = {} if path == "default" else {"weights": Path(path).expanduser()}
            detector = FaceDetector(**kw, max_size=max_size or None, num_threads=threads)
            counts = np.mean([confident_per_level(detector, a, threshold) for a in images], axis=0)
            rows.append({"label": label, "max_size": max_size, "per_level": [round(float(c), 2) for c in counts]})
    return rows


def markdown(rows: list[dict], threshold: float, n_images: int) -> str:
    levels = len(rows[0]["per_level"]) if rows else 0
    lines = [f"Anchors per image with face probability >= {threshold:g}, by level ({n_images} dev images):", "",
             "| model | input | " + " | ".join(f"level {l}" for l in range(levels)) + " |",
             "|---|---|" + "---:|" * levels]
    for r in rows:
        size = "original" if not r["max_size"] else f"<= {r['max_size']} px"
        lines.append(f"| {r['label']} | {size} | " + " | ".join(f"{c:.1f}" for c in r["per_level"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", action="append", default=[], metavar="LABEL=PATH",
                   help="a model (repeatable); PATH (or the whole argument) 'default' is the shipped model")
    p.add_argument("--max-size", type=int, nargs="+", default=[0, 640],
                   help="input sizes: 0 = original, N = longer side at most N px (default 0 640)")
    p.add_argument("--threshold", type=float, default=0.9, help="face probability counted (default 0.9)")
    p.add_argument("--data-root", type=Path, default=Path("~/widerface-all").expanduser())
    p.add_argument("--subset", type=Path, help="dev image list (default: DATA_ROOT/dev_images.txt)")
    p.add_argument("--every", type=int, default=35, help="every k-th image of the list (default 35: 30 images)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the rows here too")
    args = p.parse_args(argv)
    if not args.weights:
        p.error("give at least one --weights LABEL=PATH")
    if not 0.0 < args.threshold <= 1.0:
        p.error(f"--threshold must be in (0, 1], got {args.threshold}")
    if any(s < 0 for s in args.max_size):
        p.error(f"--max-size values must be >= 0 (0 = original size), got {args.max_size}")

    from ufssd.inference import load_image
    from ufssd.widerface_files import DEV_LIST, image_folder, read_image_list

    weights = {w.partition("=")[0]: w.partition("=")[2] or w for w in args.weights}
    names = read_image_list(args.subset or args.data_root / DEV_LIST)[:: args.every]
    images = [load_image(image_folder(args.data_root, "val") / f"{n}.jpg") for n in names]
    rows = measure(weights, images, args.max_size, args.threshold, args.threads)
    print(markdown(rows, args.threshold, len(images)))
    if args.json:
        from ufssd.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps({"threshold": args.threshold, "images": len(images), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
