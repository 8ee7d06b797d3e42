#!/usr/bin/env python3
"""How well a model fits its box targets on augmented training crops (docs/boxes.md).

For seeded training crops (the trainer's augmentation, ``--resolution`` px), the anchors are
matched as in training and, at every positive anchor of a face at least ``--min-face`` px high
(in the crop), the predicted box is decoded and compared with the face:

- the box loss per positive (Smooth L1 on the deltas, Eq. 5's loc term);
- the IoU of the decoded box with its face: median, and the share >= 0.8 and < 0.5;
- the slope of the predicted deltas against the targets (least squares through 0; 1 = no shrink
  toward the anchor), and the median height ratio predicted / face;
- the face probability of the positives, and the Spearman correlation of score with IoU
  (does the score follow box quality?);
- the face probability of background anchors per level (the level-0 score floor), and the
  positives per crop on each level (all faces: how much training signal each level gets);
- per face (``--per-face``): the best IoU any anchor's decoded box reaches (the oracle: can the
  regressor place a box at all?) against the IoU of the box NMS would keep (the highest-scored box
  overlapping the face with IoU > 0.3), and that box's score: does the loss come from regression or
  from which box is scored first, and from faces the classifier does not find?

usage: python scripts/box_fit.py --weights W [W ...] [--data-root ROOT] [--images N] [--seed S] [--per-face]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from torchvision.ops import box_iou

from ufssd.config import TrainConfig
from ufssd.data import WiderFaceDataset, collate, read_sources
from ufssd.geometry import BACKGROUND, POSITIVE, decode
from ufssd.geometry.pairs import paired_iou
from ufssd.inference.postprocess import postprocess
from ufssd.model import load_weights, normalize, pad_to_multiple
from ufssd.model.serialization import read_config
from ufssd.train.sources import read_training_samples
from ufssd.train.targets import TargetBuilder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def crops(cfg, data_root: str, list_file: str | None, images: int, seed: int, resolution: int):
    """The first ``images`` of a seeded shuffle of the training images, augmented once each."""
    spec = f"{data_root}:train" + (f":{list_file}" if list_file else "")
    samples = read_training_samples([spec])
    order = np.random.default_rng(seed).permutation(len(samples))[:images]
    tcfg = dataclasses.replace(cfg.train, resolution=resolution, seed=seed)
    data = WiderFaceDataset([samples[i] for i in order], tcfg, train=True)
    return [data[(0, i)] for i in range(len(data))]


def originals(data_root: str, split: str, list_file: str | None, images: int, seed: int):
    """The first ``images`` of a seeded shuffle of ``split``'s images, whole and at their original
    size (what evaluation sees), for :func:`per_face_stats` with ``batch=1``."""
    spec = f"{data_root}:{split}" + (f":{list_file}" if list_file else "")
    samples = read_sources([spec])  # not read_training_samples: it drops the dev images, on purpose
    order = np.random.default_rng(seed).permutation(len(samples))[:images]
    data = WiderFaceDataset([samples[i] for i in order], TrainConfig(), train=False)
    return [data[i] for i in range(len(data))]


def _decoded(model, builder: TargetBuilder, images):
    """The network on a uint8 batch (normalised, padded as in training): its outputs, the padded
    size, the anchors of that size, every anchor's decoded box and its face probability."""
    anchor_cfg = model.config.anchors
    padded = pad_to_multiple(normalize(images, model.config.model), anchor_cfg.pad_multiple)
    out = model(padded)
    anchors = builder.anchors(*padded.shape[-2:])
    boxes = decode(out.box_deltas, anchors, anchor_cfg.variances, anchor_cfg.max_log_size)
    return out, padded.shape[-2:], anchors, boxes, out.cls_logits.softmax(-1)[..., 1]


@torch.no_grad()
def fit_stats(weights: str, items, min_face: float, batch: int = 8) -> dict:
    model = load_weights(weights).eval()
    cfg = model.config
    builder = TargetBuilder(cfg)
    rows = {k: [] for k in ("iou", "loc", "score", "pred", "target", "hratio", "level")}
    background: dict[int, list[np.ndarray]] = {}
    positives: dict[int, int] = {}  # all faces, per level
    for start in range(0, len(items), batch):
        b = builder.from_batch(collate(items[start : start + batch]))
        out, (h, w), anchors, boxes, prob = _decoded(model, builder, b.images)
        faces = decode(b.target_deltas, anchors, cfg.anchors.variances, cfg.anchors.max_log_size)
        level_of = torch.repeat_interleave(
            torch.arange(len(cfg.anchors.strides)),
            torch.tensor([((h + s - 1) // s) * ((w + s - 1) // s) for s in cfg.anchors.strides]),
        )
        pos = (b.labels == POSITIVE) & ((faces[..., 3] - faces[..., 1]) >= min_face)
        rows["iou"].append(paired_iou(boxes[pos], faces[pos]).numpy())
        rows["loc"].append(
            torch.nn.functional.smooth_l1_loss(out.box_deltas[pos], b.target_deltas[pos], reduction="none").sum(-1).numpy()
        )
        rows["score"].append(prob[pos].numpy())
        rows["level"].append(level_of[None].expand_as(pos)[pos].numpy())
        rows["pred"].append(out.box_deltas[pos].numpy())
        rows["target"].append(b.target_deltas[pos].numpy())
        rows["hratio"].append(((boxes[pos][:, 3] - boxes[pos][:, 1]) / (faces[pos][:, 3] - faces[pos][:, 1])).numpy())
        for lvl in range(len(cfg.anchors.strides)):
            sel = (b.labels == BACKGROUND) & (level_of == lvl)[None]
            background.setdefault(lvl, []).append(prob[sel].numpy())
            positives[lvl] = positives.get(lvl, 0) + int(((b.labels == POSITIVE) & (level_of == lvl)[None]).sum())
    r = {k: np.concatenate(v) for k, v in rows.items()}
    pred, target = r["pred"].ravel(), r["target"].ravel()
    bg = {lvl: np.concatenate(v) for lvl, v in background.items()}
    return {
        "weights": weights,
        "positives": int(r["iou"].size),
        "loc_per_positive": float(r["loc"].mean()),
        "iou_median": float(np.median(r["iou"])),
        "iou_ge_0.8": float((r["iou"] >= 0.8).mean()),
        "iou_lt_0.5": float((r["iou"] < 0.5).mean()),
        "iou_ge_0.8_by_level": [
            round(float((r["iou"][r["level"] == l] >= 0.8).mean()), 3) if (r["level"] == l).any() else None
            for l in range(len(background))
        ],
        "delta_slope": float((pred * target).sum() / (target * target).sum()),
        "height_ratio_median": float(np.median(r["hratio"])),
        "positive_score_median": float(np.median(r["score"])),
        "score_iou_spearman": float(spearmanr(r["score"], r["iou"]).statistic),
        "positives_per_image_by_level": [round(positives[l] / len(items), 2) for l in sorted(positives)],
        "background_score_median_by_level": [float(np.median(bg[l])) if bg[l].size else None for l in sorted(bg)],
        "background_score_p99_by_level": [float(np.quantile(bg[l], 0.99)) if bg[l].size else None for l in sorted(bg)],
    }


# A box "overlaps" a face for the kept-box rule when their IoU exceeds the NMS IoU of inference (0.3):
# of the boxes on a face, NMS keeps the highest-scored one and suppresses the rest.
OVERLAP_IOU = 0.3
FOUND_SCORE = 0.3  # a face whose kept box scores below this is "not found" (the v3 floor is ~0.16)


@torch.no_grad()
def per_face_stats(weights: str, items, min_face: float, batch: int = 8) -> dict:
    """Per face >= ``min_face`` px (not ignored): the best undecoded anchor's IoU, the oracle IoU
    (best decoded box of any anchor), the kept box's IoU and score (highest score among boxes with
    IoU > OVERLAP_IOU), as shares. "Found" compares scores, so it is comparable between models
    trained with the same class loss only (QFL scores are IoU estimates, CE scores are not).
    ``items`` may be training crops or whole images (then ``batch=1``: sizes differ)."""
    model = load_weights(weights).eval()
    cfg = model.config
    builder = TargetBuilder(cfg)
    # what inference keeps: the evaluation floor (0.01), top-k, NMS, cap (the prediction files)
    post_cfg = dataclasses.replace(cfg.inference, score_threshold=cfg.inference.eval_score_threshold)
    oracle, kept, score, prior, after_nms = [], [], [], [], []
    for start in range(0, len(items), batch):
        b = collate(items[start : start + batch])
        out, _, anchors, boxes, prob = _decoded(model, builder, b.images)
        detections = postprocess(out.cls_logits, out.box_deltas, anchors, post_cfg, anchor_cfg=cfg.anchors)
        for i, (faces, ignore) in enumerate(zip(b.boxes, b.ignore)):
            faces = faces.float()[~ignore]
            faces = faces[(faces[:, 3] - faces[:, 1]) >= min_face]
            if not len(faces):
                continue
            iou = box_iou(faces, boxes[i])  # faces x anchors
            ranked = torch.where(iou > OVERLAP_IOU, prob[i][None], -1.0).argmax(1)
            oracle.append(iou.max(1).values.numpy())
            prior.append(box_iou(faces, anchors).max(1).values.numpy())
            kept.append(iou.gather(1, ranked[:, None])[:, 0].numpy())
            score.append(prob[i][ranked].numpy())
            nms_boxes = detections[i][0]
            after_nms.append(
                box_iou(faces, nms_boxes).max(1).values.numpy() if len(nms_boxes) else np.zeros(len(faces), np.float32)
            )
    oracle, kept, score, prior, after_nms = (np.concatenate(v) for v in (oracle, kept, score, prior, after_nms))
    found = score >= FOUND_SCORE
    return {
        "weights": weights,
        "faces": int(oracle.size),
        "anchor_iou_median": float(np.median(prior)),  # the best undecoded anchor: what regression starts from
        "anchor_iou_ge_0.8": float((prior >= 0.8).mean()),
        "oracle_iou_median": float(np.median(oracle)),
        "oracle_iou_ge_0.8": float((oracle >= 0.8).mean()),
        "oracle_iou_lt_0.5": float((oracle < 0.5).mean()),
        # the best box of the prediction files (any score >= the floor, after NMS): diagnose.py's measure
        "nms_best_iou_ge_0.8": float((after_nms >= 0.8).mean()),
        "nms_best_iou_lt_0.5": float((after_nms < 0.5).mean()),
        "kept_iou_median": float(np.median(kept)),
        "kept_iou_ge_0.8": float((kept >= 0.8).mean()),
        "kept_iou_lt_0.5": float((kept < 0.5).mean()),
        "found_share": float(found.mean()),
        "kept_iou_ge_0.8_found": float((kept[found] >= 0.8).mean()) if found.any() else None,
        "kept_iou_lt_0.5_found": float((kept[found] < 0.5).mean()) if found.any() else None,
        "kept_iou_lt_0.5_not_found": float((kept[~found] < 0.5).mean()) if (~found).any() else None,
        "share_of_lt_0.5_not_found": float((~found & (kept < 0.5)).sum() / max((kept < 0.5).sum(), 1)),
    }


def receptive_fields(weights: str, size: int = 1024) -> list[dict]:
    """Per level, the receptive field of the centre cell's box deltas, measured by back-propagation
    through the trained network (eval mode, on a mid-grey image): the theoretical side (pixels
    with any gradient) and the effective side (the central square that holds 90 % of the
    gradient magnitude), beside the anchor side."""
    model = load_weights(weights).eval()
    cfg = model.config
    image = torch.zeros(1, 3, size, size, requires_grad=True)
    deltas = model(image).box_deltas[0]  # one forward pass, one backward pass per level
    sizes = [(size + s - 1) // s for s in cfg.anchors.strides]
    rows = []
    for level, (stride, side) in enumerate(zip(cfg.anchors.strides, cfg.anchors.sides)):
        n = sizes[level]
        cell = sum(k * k for k in sizes[:level]) + (n // 2) * n + n // 2
        (grad,) = torch.autograd.grad(deltas[cell].abs().sum(), image, retain_graph=True)
        g = grad[0].abs().sum(0).numpy()
        ys, xs = np.nonzero(g)
        cy, cx = (n // 2 + 0.5) * stride, (n // 2 + 0.5) * stride
        radius = np.maximum(np.abs(ys + 0.5 - cy), np.abs(xs + 0.5 - cx))
        order = np.argsort(radius)
        mass = np.cumsum(g[ys, xs][order]) / g.sum()
        effective = 2 * radius[order][np.searchsorted(mass, 0.9)]
        rows.append({"level": level, "stride": stride, "anchor": side,
                     "theoretical_rf": int(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1),
                     "effective_rf_90": float(effective)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", required=True)
    ap.add_argument("--data-root", default=str(SHARED / "data" / "widerface"))
    ap.add_argument("--list", default=None, help="image list of the split (default: all)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=640)
    ap.add_argument("--min-face", type=float, default=32.0, help="face height in the crop, px")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--receptive-fields", action="store_true", help="also measure each level's receptive field")
    ap.add_argument("--per-face", action="store_true", help="also the per-face oracle / kept-box / found figures")
    ap.add_argument("--originals", default=None, metavar="SPLIT",
                    help="per-face figures only, on whole images of SPLIT (e.g. val with --list dev_images.txt) at their original size")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.originals:
        items = originals(args.data_root, args.originals, args.list, args.images, args.seed)
        results = [{"weights": w, "per_face": per_face_stats(w, items, args.min_face, batch=1)} for w in args.weights]
    else:
        cfg = read_config(args.weights[0])  # the crops need the training settings only
        items = crops(cfg, args.data_root, args.list, args.images, args.seed, args.resolution)
        results = [fit_stats(w, items, args.min_face) for w in args.weights]
        for res in results:
            if args.receptive_fields:
                res["receptive_fields"] = receptive_fields(res["weights"])
            if args.per_face:
                res["per_face"] = per_face_stats(res["weights"], items, args.min_face)
    for res in results:
        print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
