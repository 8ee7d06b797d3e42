"""The blur threshold of ``ufssd blur`` / ``ufssd.anonymize``: recall by face size on the dev set.

    python scripts/blur_threshold.py --pred PRED_DIR [--data-root /root/widerface-all]
        [--subset DATA_ROOT/dev_images.txt] [--plateau 1] [--json OUT.json]

``PRED_DIR`` holds WIDER prediction files of the dev images at the score floor 0.01
(``ufssd predict-widerface --data-root ROOT --subset ROOT/dev_images.txt --out PRED_DIR``).

A face (not ``invalid``, positive size) counts as found at threshold ``t`` when some predicted box
scoring at least ``t`` overlaps it with IoU >= 0.5 (not one-to-one: one box may find two faces,
as one blurred region may hide two). Recall is reported per face height: < 20, 20-32, 32-64,
64-128, >= 128 px, and for all faces >= 20 px. ``boxes/img`` is the mean number of boxes at or
above ``t`` per image, ``unmatched/img`` those overlapping no annotated face (invalid ones
included) with IoU >= 0.5 — what is blurred for nothing — and ``precision`` the share of boxes
that do overlap one. ``gain`` is what the step down to ``t`` from the grid point above added to
recall on faces >= 20 px, in points.

The plateau rule (the threshold below which a 0.05 step gains less than ``--plateau`` points)
is checked first and reported; the default model has no such plateau above its score floor
(below about 0.2 it returns the top 750 boxes of every image, and recall jumps). So the rule
applied is: recall first, as long as at least half of what is blurred is a face — the **lowest**
threshold on the grid (0.05 steps) whose precision is at least ``--min-precision`` (0.5). Prints
a Markdown table and the chosen threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

BINS = ((0, 20, "< 20"), (20, 32, "20-32"), (32, 64, "32-64"), (64, 128, "64-128"), (128, np.inf, ">= 128"))
FLOOR = 0.01
GRID = (FLOOR, *np.round(np.arange(0.05, 1.0, 0.05), 2).tolist())


def face_scores(samples, boxes_of, min_iou: float = 0.5):
    """Per valid face: its height and the best score of a box overlapping it with IoU >= min_iou
    (0 when none); per predicted box: its score and whether it overlaps any annotated face."""
    from ufssd.evaluation.diagnosis import pairwise_iou_xyxy

    heights, best, box_scores, box_hits = [], [], [], []
    for s in samples:
        pred, scores = boxes_of(s.name)
        valid = ~s.ignore & (s.boxes[:, 2] > s.boxes[:, 0]) & (s.boxes[:, 3] > s.boxes[:, 1])
        iou = pairwise_iou_xyxy(s.boxes, pred)  # (G, K)
        hit = iou >= min_iou
        gt_best = np.where(hit[valid], scores[None, :], 0.0).max(axis=1, initial=0.0)
        heights.append(s.boxes[valid, 3] - s.boxes[valid, 1])
        best.append(gt_best)
        box_scores.append(scores)
        box_hits.append(hit.any(axis=0))
    return np.concatenate(heights), np.concatenate(best), np.concatenate(box_scores), np.concatenate(box_hits)


def recall_table(heights, best, box_scores, box_hits, n_images: int, thresholds=GRID) -> list[dict]:
    rows = []
    for t in thresholds:
        found = best >= t
        row = {"threshold": float(t)}
        for lo, hi, label in BINS:
            in_bin = (heights >= lo) & (heights < hi)
            row[label] = float(found[in_bin].mean()) if in_bin.any() else float("nan")
        row[">= 20"] = float(found[heights >= 20].mean())
        kept = box_scores >= t
        row["boxes/img"] = float(kept.sum() / n_images)
        row["unmatched/img"] = float((kept & ~box_hits).sum() / n_images)
        row["precision"] = float((kept & box_hits).sum() / max(1, kept.sum()))
        rows.append(row)
    return rows


def add_gains(rows: list[dict]) -> None:
    """``gain``: recall points on faces >= 20 px that the step down to each threshold added."""
    for above, row in zip(rows[1:], rows[:-1]):
        row["gain"] = 100 * (row[">= 20"] - above[">= 20"])
    rows[-1]["gain"] = float("nan")


def plateau_threshold(rows: list[dict], plateau: float, max_boxes: float = 100.0) -> float | None:
    """The highest threshold from which the next step down gains less than ``plateau`` points,
    among thresholds above the score floor (fewer than ``max_boxes`` boxes per image); None."""
    meaningful = [r for r in rows if r["boxes/img"] < max_boxes]
    flat = [upper["threshold"] for lower, upper in zip(meaningful[:-1], meaningful[1:]) if lower["gain"] < plateau]
    return max(flat) if flat else None


def choose(rows: list[dict], min_precision: float) -> float:
    """The lowest threshold whose kept boxes overlap a face at least ``min_precision`` of the time.

    Raises:
        ValueError: no threshold of ``rows`` reaches ``min_precision`` (the message gives the best
        precision reached, and where).
    """
    passing = [r["threshold"] for r in rows if r["precision"] >= min_precision]
    if passing:
        return min(passing)
    if not rows:
        raise ValueError("no thresholds to choose from (empty table)")
    best = max(rows, key=lambda r: r["precision"])
    raise ValueError(
        f"no threshold on the grid keeps boxes that overlap a face with precision >= {min_precision:g}: "
        f"the best is {best['precision']:.2f}, at score >= {best['threshold']:.2f} (lower --min-precision?)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", type=Path, required=True, help="prediction folder <event>/<stem>.txt (floor 0.01)")
    parser.add_argument("--data-root", type=Path, default=Path("/root/widerface-all"))
    parser.add_argument("--subset", type=Path, default=None, help="default: DATA_ROOT/dev_images.txt")
    parser.add_argument("--plateau", type=float, default=1.0, help="a step gaining fewer points is flat (default 1)")
    parser.add_argument("--min-precision", type=float, default=0.5, help="the rule's precision floor (default 0.5)")
    parser.add_argument("--json", type=Path, default=None, help="also write the table and the choice here")
    args = parser.parse_args(argv)

    from ufssd.evaluation.reader import read_predictions
    from ufssd.widerface_files import DEV_LIST, read_split

    subset = args.subset or args.data_root / DEV_LIST
    samples = read_split(args.data_root, "val", subset=subset)
    events = [s.name.split("/")[0] for s in samples]
    stems = [s.name.split("/")[1] for s in samples]
    preds = read_predictions(args.pred, events, stems)
    if preds.missing or preds.invalid:
        print(f"{len(preds.missing)} prediction files missing, {len(preds.invalid)} invalid", file=sys.stderr)
        return 1
    index = {s.name: i for i, s in enumerate(samples)}

    def boxes_of(name: str):
        i = index[name]
        xywh = preds.boxes[preds.offsets[i] : preds.offsets[i + 1]]
        return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1), preds.scores[
            preds.offsets[i] : preds.offsets[i + 1]
        ]

    heights, best, box_scores, box_hits = face_scores(samples, boxes_of)
    rows = recall_table(heights, best, box_scores, box_hits, len(samples))
    add_gains(rows)
    plateau = plateau_threshold(rows, args.plateau)
    try:
        chosen, failure = choose(rows, args.min_precision), None
    except ValueError as exc:
        chosen, failure = None, str(exc)

    counts = {label: int(((heights >= lo) & (heights < hi)).sum()) for lo, hi, label in BINS}
    counts[">= 20"] = int((heights >= 20).sum())
    cols = [label for *_, label in BINS] + [">= 20"]
    print(f"dev set: {len(samples)} images ({subset}), {len(heights)} valid faces; predictions {args.pred}")
    print("| score >= | " + " | ".join(f"{c} px" for c in cols) + " | gain | boxes/img | unmatched/img | precision |")
    print("|---|" + "---|" * (len(cols) + 4))
    print("| faces | " + " | ".join(str(counts[c]) for c in cols) + " | | | | |")
    for r in rows:
        mark = "**" if r["threshold"] == chosen else ""
        cells = " | ".join(f"{r[c]:.3f}" for c in cols)
        print(f"| {mark}{r['threshold']:.2f}{mark} | {cells} | {r['gain']:+.1f} | {r['boxes/img']:.1f} | "
              f"{r['unmatched/img']:.1f} | {r['precision']:.2f} |")
    print(f"\nplateau (a 0.05 step down gains < {args.plateau:g} point on faces >= 20 px, above the score floor): "
          + (f"from {plateau:.2f}" if plateau is not None else "none"))
    if chosen is None:
        print(f"blur_threshold.py: {failure}", file=sys.stderr)
        return 1
    print(f"blur threshold: {chosen:.2f} (lowest score whose boxes overlap a face with precision "
          f">= {args.min_precision:g})")
    if args.json:
        doc = {"faces": counts, "rows": rows, "plateau": plateau, "chosen": chosen, "min_precision": args.min_precision}
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
