"""The shipped model's accuracy figures, which ``tests/inference/test_default_accuracy.py`` checks.

    python scripts/accuracy_figures.py [--data-root ../shared/data/widerface] [--check]

Runs ``ufssd predict-widerface`` with the embedded default model
(``src/ufssd/weights/default.safetensors``) on a fixed part of the dev slice (every
``EVERY``-th line of ``dev_images.txt``: 32 of its 156 images, from 9 of its 10 events), scores the
prediction files with the official protocol (``ufssd.evaluation.evaluate``) and writes the
easy / medium / hard APs, the image list and the weight file's SHA-256 to
``src/ufssd/weights/default.accuracy.json``, beside the weights.

When a new default model ships, run this script and commit the JSON in the same commit as the
weights: the test compares a fresh run with these figures to within 1e-3, and fails if the JSON
belongs to another weight file. ``--check`` compares instead of writing (exit 1 on a mismatch).
The part of the slice is small so that the test takes seconds on two cores (one torch thread);
``scripts/model_card.py`` gives the figures on the whole slice and the dev set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "ufssd" / "weights" / "default.safetensors"
FIGURES = WEIGHTS.with_name("default.accuracy.json")
EVERY = 5  # every 5th image of dev_images.txt: 32 of 156
TOLERANCE = 1e-3
SETTINGS = ("easy", "medium", "hard")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def subset(data_root: Path, every: int = EVERY) -> list[str]:
    """The fixed part of the dev slice: lines 0, every, 2 * every, ... of ``dev_images.txt``."""
    from ufssd.widerface_files import DEV_LIST, read_image_list

    return [f"{n}.jpg" for n in read_image_list(Path(data_root) / DEV_LIST)][::every]


def measure(data_root: Path, names: list[str], weights: Path = WEIGHTS, threads: int = 1) -> dict[str, float]:
    """``ufssd predict-widerface`` (the CLI, as a user runs it) then the official evaluation:
    ``{"easy", "medium", "hard"}`` APs of ``weights`` on ``names`` (``<event>/<name>.jpg``)."""
    from ufssd.cli import main
    from ufssd.evaluation import evaluate

    data_root = Path(data_root)
    with tempfile.TemporaryDirectory(prefix="ufssd-accuracy-") as tmp:
        tmp = Path(tmp)
        (tmp / "subset.txt").write_text("\n".join(names) + "\n")
        pred = tmp / "pred"
        args = ["predict-widerface", "--data-root", str(data_root), "--split", "val",
                "--subset", str(tmp / "subset.txt"), "--out", str(pred), "--weights", str(weights),
                "--threads", str(threads), "--no-progress"]  # fmt: skip
        if main(args) != 0:
            raise RuntimeError(f"ufssd {' '.join(args)} failed")
        result = evaluate(pred, data_root / "eval_tools", subset=names, protocol="official", strict=True)
        if result.missing or result.invalid:
            raise RuntimeError(f"{len(result.missing)} missing, {len(result.invalid)} invalid prediction files")
    return {key: float(result.aps[key]) for key in SETTINGS}


def figures(data_root: Path, weights: Path = WEIGHTS, every: int = EVERY) -> dict:
    names = subset(data_root, every)
    return {
        "weights": weights.name,
        "weights_sha256": sha256(weights),
        "data": f"every {every}th image of the dev slice (dev_images.txt of ../shared/data/widerface)",
        "protocol": "official",
        "single_scale": True,
        "tolerance": TOLERANCE,
        "ap": measure(data_root, names, weights),
        "images": names,
        "command": "python scripts/accuracy_figures.py",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "widerface")
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--out", type=Path, default=FIGURES)
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    new = figures(args.data_root, args.weights)
    line = ", ".join(f"{k} {new['ap'][k]:.4f}" for k in SETTINGS)
    if args.check:
        old = json.loads(args.out.read_text())
        bad = [k for k in SETTINGS if abs(old["ap"][k] - new["ap"][k]) > TOLERANCE]
        same_file = old.get("weights_sha256") == new["weights_sha256"]
        print(f"{args.weights.name} on {len(new['images'])} dev-slice images: {line}; stored: "
              + ", ".join(f"{k} {old['ap'][k]:.4f}" for k in SETTINGS)
              + ("" if same_file else " (stored figures are for another weight file)"))  # fmt: skip
        return 1 if bad or not same_file else 0
    from ufssd.atomic import atomic_write_text

    atomic_write_text(args.out, json.dumps(new, indent=1) + "\n")
    print(f"wrote {args.out}: {line} ({len(new['images'])} dev-slice images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
