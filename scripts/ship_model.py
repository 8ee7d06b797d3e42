"""Embed a trained model as the package default: ``src/ufssd/weights/default.safetensors``.

    python scripts/ship_model.py CHECKPOINT --score-threshold T [--out PATH]

CHECKPOINT is a training checkpoint (``best.pt`` / ``last.pt``) or a ``.safetensors`` file. The
resolved config travels inside the file (safetensors metadata, with a sha256 of the tensors that
``load_weights`` checks); ``--score-threshold`` sets ``inference.score_threshold``, the user
default chosen on the dev slice by ``scripts/model_card.py``. Then run
``scripts/accuracy_figures.py`` and commit its ``default.accuracy.json`` with the new weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--score-threshold", type=float, required=True)
    parser.add_argument("--name", default=None, help="config name to record (default: keep)")
    parser.add_argument("--out", type=Path, default=repo / "src" / "ufssd" / "weights" / "default.safetensors")
    args = parser.parse_args(argv)

    from ufssd.model import load_weights, save_weights
    from ufssd.presets import replace

    model = load_weights(args.checkpoint)
    cfg = replace(model.config, inference={"score_threshold": args.score_threshold})
    if args.name:
        cfg = replace(cfg, name=args.name)
    model.config = cfg
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(args.out, model)
    size = args.out.stat().st_size
    if size > 20 * 2**20:
        raise SystemExit(f"{args.out} is {size / 2**20:.1f} MiB: over the 20 MB limit of a shipped model")
    check = load_weights(args.out)
    print(f"wrote {args.out} ({size / 1024:.0f} KiB; preset {check.config.name}, "
          f"score threshold {check.config.inference.score_threshold})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
