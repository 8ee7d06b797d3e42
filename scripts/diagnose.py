#!/usr/bin/env python3
"""Where prediction folders lose their AP: the three tables of ``ufssd.evaluation.diagnosis``
(recall ceiling by face height, best-box IoU of faces >= 32 px, false positives per image), and
the official APs when the organisers' ``.mat`` files are at hand.

    python scripts/diagnose.py PRED_DIR [PRED_DIR ...] --data-root ~/widerface-all
        [--split val] [--subset LIST] [--gt EVAL_TOOLS] [--json OUT.json]

Defaults: the dev set, ``DATA_ROOT/dev_images.txt``; ``--gt`` defaults to the shared subset's
``eval_tools`` (it covers the whole val set) for the val split, none for train.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preds", nargs="+", type=Path)
    ap.add_argument("--data-root", type=Path, default=Path.home() / "widerface-all")
    ap.add_argument("--split", default="val", choices=("train", "val"))
    ap.add_argument("--subset", type=Path, default=None, help="default: DATA_ROOT/dev_images.txt (val)")
    ap.add_argument("--gt", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from ufssd.evaluation import evaluate
    from ufssd.evaluation.diagnosis import diagnose
    from ufssd.widerface_files import DEV_LIST, ground_truth_folder, read_image_list, read_split

    subset = args.subset or (args.data_root / DEV_LIST if args.split == "val" else None)
    samples = read_split(args.data_root, args.split, subset=subset)
    gt = args.gt or (ground_truth_folder(SHARED / "data" / "widerface") if args.split == "val" else None)
    names = read_image_list(subset) if subset else [s.name for s in samples]
    out = {}
    for pred in args.preds:
        d = diagnose(pred, samples)
        row = {"diagnosis": d.to_dict()}
        print(f"## {pred} ({len(samples)} images, {args.split})\n")
        if gt is not None and gt.is_dir():
            aps = evaluate(pred, gt, subset=names).aps
            row["aps"] = aps
            print("official AP easy / medium / hard: " + " / ".join(f"{aps[k]:.4f}" for k in ("easy", "medium", "hard")))
        print(f"faces >= 32 px: {d.share_below_05:.3f} with best IoU < 0.5, {d.share_at_08:.3f} at >= 0.8\n")
        print(d.markdown(pred.name) + "\n")
        out[str(pred)] = row
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
