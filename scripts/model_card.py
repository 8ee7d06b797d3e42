"""Figures of a trained model on the dev set: the source of every accuracy number in MODEL_CARD.

    python scripts/model_card.py --weights W [--data-root DIR] [--subset dev_images.txt]
        [--gt EVAL_TOOLS] [--peers DIR | --peers-json FILE] [--tta flip] [--out runs/model_card]

The dev set (1,045 images of all 61 events) is ``--data-root ~/widerface-all --peers-json
../shared/data/widerface-all/peers_dev_aps.json`` (its ``.mat`` files are found in
``../shared/data/widerface/eval_tools``); the defaults are the 156-image dev slice of
``../shared/data/widerface``, a quick check.

1. Detects faces in the dev-slice images at their original size (single scale; and with the
   given TTA), writes WIDER prediction files (threshold 0.01, top-k 750) and scores them with the
   official protocol (``ufssd.evaluation``).
2. Scores every peer detector of ``--peers`` on the same images, and draws one PR-curve figure
   with all of them (``pr_curves.png``).
3. Chooses the user score threshold: the lowest score at which dev-slice precision on *easy*
   is >= ``--precision`` (0.95), on a 0.05 grid (conventions: "Inference").
4. Diagnoses the single-scale predictions (``ufssd.evaluation.diagnosis``): recall ceiling by
   face height, best-box IoU of faces >= 32 px (the localisation table), false positives.
5. Writes ``summary.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np


def detect_all(
    detector, image_root: Path, names: list[str], tta: str | None = None, score_threshold: float | None = None
) -> dict[str, tuple]:
    """name -> (boxes (K,4) xyxy, scores (K,)) at ``score_threshold`` (default: the detector's)."""
    from tqdm import tqdm

    out = {}
    for name in tqdm(names, desc="detect", unit="img"):
        result = detector.detect(str(image_root / name), score_threshold=score_threshold, tta=tta or False)
        out[name] = (result.boxes, result.scores)
    return out


def write_all(dets: dict[str, tuple], out_dir: Path, min_score: float = 0.0) -> Path:
    from ufssd.evaluation import write_predictions

    for name, (boxes, scores) in dets.items():
        keep = scores >= min_score
        stem = name[: -len(".jpg")] if name.endswith(".jpg") else name
        write_predictions(out_dir / f"{stem}.txt", Path(stem).name, boxes[keep], scores[keep])
    return out_dir


def choose_threshold(dets, gt_dir, names, work: Path, precision: float) -> tuple[float, str, list]:
    """Lowest score on a 0.05 grid whose easy precision (all detections kept) is >= precision;
    when no threshold reaches it, the one with the best F1 on easy (the rule used is returned)."""
    from ufssd.evaluation import evaluate

    rows = []
    chosen = None
    for thr in np.round(np.arange(0.05, 1.0, 0.05), 2):
        res = evaluate(write_all(dets, work / f"thr_{thr:.2f}", float(thr)), gt_dir, subset=names)
        easy = res["easy"]
        p = float(easy.precision[-1]) if np.isfinite(easy.precision[-1]) else float("nan")
        r = float(easy.recall[-1])
        rows.append({"threshold": float(thr), "easy_precision": p, "easy_recall": r,
                     "hard_recall": float(res["hard"].recall[-1])})
        if chosen is None and p >= precision:
            chosen = float(thr)
    if chosen is not None:
        return chosen, f"lowest threshold with easy precision >= {precision}", rows

    def f1(row):
        p, r = row["easy_precision"], row["easy_recall"]
        return 2 * p * r / (p + r) if np.isfinite(p) and p + r > 0 else 0.0

    best = max(rows, key=f1)
    return best["threshold"], f"easy precision never reaches {precision}: best F1 on easy ({f1(best):.3f})", rows


SIZE_BINS = (0, 10, 20, 40, 80, 160, 10_000)  # face height in original pixels


def recall_by_size(dets: dict[str, tuple], samples, thresholds: tuple[float, ...]) -> list[dict]:
    """Share of the dev faces (``invalid`` ones left out) that some detection scoring at least
    ``t`` overlaps with IoU >= 0.5, per face-height bin. Not one-to-one matching: a size profile of
    what the model misses, not an AP."""
    import torch
    from torchvision.ops import box_iou

    heights, best = [], {t: [] for t in thresholds}
    for s in samples:
        boxes, scores = dets[f"{s.name}.jpg"]
        gt = torch.as_tensor(s.boxes[~s.ignore], dtype=torch.float32)
        heights.append((gt[:, 3] - gt[:, 1]).numpy())
        iou = box_iou(gt, torch.as_tensor(np.asarray(boxes), dtype=torch.float32)).numpy()  # (G, K)
        scores = np.asarray(scores)
        for t in thresholds:
            above = iou[:, scores >= t]
            best[t].append(above.max(axis=1) if above.shape[1] else np.zeros(len(gt), np.float32))
    height = np.concatenate(heights)
    rows = []
    for lo, hi in zip(SIZE_BINS[:-1], SIZE_BINS[1:]):
        in_bin = (height >= lo) & (height < hi)
        row = {"height": f"{lo}-{hi}" if hi < SIZE_BINS[-1] else f">={lo}", "faces": int(in_bin.sum())}
        for t in thresholds:
            found = np.concatenate(best[t])[in_bin] >= 0.5
            row[f"recall@{t:g}"] = float(found.mean()) if in_bin.any() else float("nan")
        rows.append(row)
    return rows


def peers_from_json(path: Path) -> dict:
    """name -> EvaluationResult of the peers' dev-set APs and PR curves (``peers_dev_aps.json``)."""
    from ufssd.evaluation import EvaluationResult, SettingResult

    out = {}
    for name, entry in json.loads(path.read_text())["peers"].items():
        settings = {
            k: SettingResult(k, v["ap"], np.asarray(v["precision"]), np.asarray(v["recall"]),
                             np.zeros(0), np.zeros(0), v["faces"])
            for k, v in entry["dev"].items()
            if k in ("easy", "medium", "hard")
        }
        out[name] = EvaluationResult(settings, "official", 0, 0)
    return out


def default_gt(data_root: Path, shared: Path):
    """The ``.mat`` folder of ``data_root``, else the shared subset's (it covers the whole val set)."""
    from ufssd.widerface_files import ground_truth_folder

    own = ground_truth_folder(data_root)
    return own if own.is_dir() else ground_truth_folder(shared)


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    wider = repo.parent / "shared" / "data" / "widerface"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="weights file (default: the embedded model)")
    parser.add_argument("--data-root", type=Path, default=wider)
    parser.add_argument("--subset", type=Path, default=None, help="default: DATA_ROOT/dev_images.txt")
    parser.add_argument("--gt", type=Path, default=None, help="the organisers' .mat folder (eval_tools)")
    parser.add_argument("--peers", type=Path, default=repo.parent / "shared" / "data" / "peers",
                        help="peers' prediction folders (they cover the 462 val images of the subset)")
    parser.add_argument("--peers-json", type=Path, default=None,
                        help="peers' dev-set APs and PR curves instead (peers_dev_aps.json)")
    parser.add_argument("--tta", default="flip", help="TTA for the second run ('none' to skip)")
    parser.add_argument("--precision", type=float, default=0.95)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="ufssd")
    parser.add_argument("--out", type=Path, default=repo / "runs" / "model_card")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    import torch

    from ufssd.evaluation import evaluate, plot_pr_curves
    from ufssd.evaluation.diagnosis import diagnose
    from ufssd.inference import FaceDetector
    from ufssd.widerface_files import DEV_LIST, image_folder, read_image_list, read_split

    torch.set_num_threads(args.threads)
    subset = args.subset or args.data_root / DEV_LIST
    names = [n if n.endswith(".jpg") else f"{n}.jpg" for n in read_image_list(subset)]
    gt_dir = args.gt or default_gt(args.data_root, wider)
    image_root = image_folder(args.data_root, "val")
    detector = FaceDetector(weights=args.weights, num_threads=args.threads)
    eval_cfg = detector.resolve(evaluation=True)  # the model's eval_score_threshold (0.01)
    args.out.mkdir(parents=True, exist_ok=True)

    results, timings = {}, {}
    runs = [("single-scale", None)] + ([(f"TTA {args.tta}", args.tta)] if args.tta != "none" else [])
    dets_single = None
    for label, tta in runs:
        t0 = time.perf_counter()
        dets = detect_all(detector, image_root, names, tta, eval_cfg.score_threshold)
        timings[label] = (time.perf_counter() - t0) / len(names)
        pred_dir = write_all(dets, args.out / f"pred_{label.replace(' ', '_')}")
        results[f"{args.name} ({label})"] = evaluate(pred_dir, gt_dir, subset=names)
        dets_single = dets_single or dets
    threshold, rule, rows = choose_threshold(dets_single, gt_dir, names, args.out / "thresholds", args.precision)
    dev_samples = read_split(args.data_root, "val", subset=subset)
    by_size = recall_by_size(dets_single, dev_samples, (0.3, threshold))
    diagnosis = diagnose(args.out / "pred_single-scale", dev_samples)

    peers = {}
    if args.peers_json:
        peers = peers_from_json(args.peers_json)
    elif args.peers.is_dir():
        for peer in sorted(p for p in args.peers.iterdir() if p.is_dir()):
            peers[peer.name] = evaluate(peer, gt_dir, subset=names)
    plot_pr_curves({**results, **peers}, args.out / "pr_curves.png")

    summary = {
        "weights": args.weights or "embedded default",
        "subset": str(subset),
        "images": len(names),
        "input_policy": detector.describe_input_policy(eval_cfg),
        "ours": {k: v.aps for k, v in results.items()},
        "seconds_per_image_full_size": timings,
        "peers": {k: v.aps for k, v in peers.items()},
        "threshold_precision_target": args.precision,
        "chosen_score_threshold": threshold,
        "threshold_rule": rule,
        "threshold_sweep": rows,
        "recall_by_face_height": by_size,
        "diagnosis_single_scale": diagnosis.to_dict(),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))

    print(f"{len(names)} images ({subset}); official protocol; input: {summary['input_policy']}")
    print("| method | easy | medium | hard |\n|---|---|---|---|")
    for name, res in sorted({**results, **peers}.items(), key=lambda kv: -kv[1].aps["hard"]):
        a = res.aps
        print(f"| {name} | {a['easy']:.4f} | {a['medium']:.4f} | {a['hard']:.4f} |")
    print(f"\nscore threshold: {threshold} ({rule})")
    print("| threshold | easy precision | easy recall | hard recall |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['threshold']:.2f} | {r['easy_precision']:.3f} | {r['easy_recall']:.3f} | {r['hard_recall']:.3f} |")
    keys = [k for k in by_size[0] if k.startswith("recall@")]
    print("\nrecall by face height (single-scale; IoU >= 0.5 with any detection at or above the score)")
    print("| face height (px) | faces | " + " | ".join(keys) + " |\n|---|---|" + "---|" * len(keys))
    for r in by_size:
        print(f"| {r['height']} | {r['faces']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    print("\n" + diagnosis.markdown(args.name))
    print(f"\nwritten: {args.out / 'summary.json'}, {args.out / 'pr_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
