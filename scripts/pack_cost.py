"""What re-encoding the training images for the device costs: pack size and dev-set AP per setting.

    nice -n 5 python scripts/pack_cost.py --threads 1 [--settings original 1024:90 1024:75 800:85 640:85]
        [--data-root ~/widerface-all] [--limit N] [--out ~/ufssd_runs/pack_cost]

A setting is ``MAX_SIDE:QUALITY`` (``ufssd.data.pack.encode_image``), ``original`` (the files as
they are), or ``MAX_SIDE:QUALITY:restored``: the packed image resized back to its original size
(``cv2.INTER_LINEAR``) before detection, which separates what the pixels lose from what the
detector loses by looking at a smaller image (the plain setting measures both). For each one:

1. Size: the mean bytes per image of the 4,885 trainable images (train + ``val_train_images.txt``)
   and the pack size that makes for all of them. ``original`` sums the files' sizes (exact); a
   re-encoded setting encodes a fixed random sample of ``--size-sample`` images (500, seed 0;
   ``0``: all of them, exact) and extrapolates its mean. Device calls: the pack size over
   ``--call-mib`` (60) MiB, rounded up.
2. Accuracy: every dev image (``dev_images.txt``, 1,045 val images never trained on; the first
   ``--limit`` for a quick run) goes through ``encode_image`` and back through
   ``ufssd.data.pack.decode_jpegs`` (the decoder of ``load_pack``, on the CPU), the shipped default
   detector finds faces in it as ``predict-widerface`` does (``FaceDetector.resolve(evaluation=True)``:
   the evaluation score threshold 0.01; single scale, at the image's own size), the boxes are
   divided by the scale (original pixels) and written as WIDER prediction files, and the official
   protocol scores them (``ufssd.evaluation.evaluate``, the organisers' ``.mat`` files).

Writes ``pack_cost.csv`` and ``pack_cost.md`` to ``--out`` (atomically, after each setting; the
prediction files go to ``--out/pred/<setting>/``). Resumable: a setting with a row for the same
dev images and size method is not redone.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

log = logging.getLogger("pack_cost")

DEFAULT_SETTINGS = ("original", "1024:90", "1024:75", "800:85", "640:85")
FIELDS = (
    "setting", "bytes_per_image", "pack_mib", "device_calls", "size_method", "train_images",
    "dev_images", "ap_easy", "ap_medium", "ap_hard", "seconds",
)
_MIB = 2**20


class Setting(NamedTuple):
    """``MAX_SIDE:QUALITY[:restored]``; ``restored``: the decoded image is resized back to its
    original size (``cv2.INTER_LINEAR``) before detection."""

    max_side: int
    quality: int
    restored: bool = False


def parse_setting(text: str) -> Setting | None:
    """``"original"`` -> None; ``"MAX_SIDE:QUALITY[:restored]"`` -> a :class:`Setting`."""
    if text == "original":
        return None
    parts = text.split(":")
    restored = len(parts) == 3 and parts[2] == "restored"
    try:
        if len(parts) != 2 and not restored:
            raise ValueError
        max_side, quality = int(parts[0]), int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a setting is 'original' or 'MAX_SIDE:QUALITY[:restored]', got {text!r}"
        ) from None
    if max_side < 1 or not 1 <= quality <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: MAX_SIDE must be >= 1 and QUALITY 1..100")
    return Setting(max_side, quality, restored)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    repo = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS),
                   help="'original' and MAX_SIDE:QUALITY settings (default: %(default)s)")
    p.add_argument("--data-root", type=Path, default=Path("~/widerface-all"), help="WIDER FACE root")
    p.add_argument("--subset", type=Path, default=None, help="dev image list (default DATA_ROOT/dev_images.txt)")
    p.add_argument("--gt", type=Path, default=None,
                   help="the organisers' .mat folder (default DATA_ROOT/eval_tools, else the shared subset's)")
    p.add_argument("--limit", type=int, default=None, help="only the first N dev images (a quick run)")
    p.add_argument("--size-sample", type=int, default=500,
                   help="training images encoded for the size (default 500; 0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the size sample")
    p.add_argument("--call-mib", type=float, default=60, help="carried MiB per device call (default 60)")
    p.add_argument("--weights", default=None, help="weights file (default: the shipped model)")
    p.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (default 1)")
    p.add_argument("--out", type=Path, default=Path("~/ufssd_runs/pack_cost"))
    args = p.parse_args(argv)
    for text in args.settings:
        try:
            parse_setting(text)
        except argparse.ArgumentTypeError as exc:
            p.error(str(exc))
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    args.data_root, args.out = args.data_root.expanduser(), args.out.expanduser()
    args.shared_gt = repo.parent / "shared" / "data" / "widerface" / "eval_tools"
    return args


# ---------------------------------------------------------------------------------------------
# size


def size_of(samples: list, setting: Setting | None, sample_size: int, seed: int) -> tuple[float, str]:
    """``(mean bytes per image, how it was measured)`` over the training ``samples``."""
    from ufssd.data import load_image
    from ufssd.data.pack import encode_image

    if setting is None:
        return float(np.mean([s.image_path.stat().st_size for s in samples])), size_method(None, 0, 0, 0)
    chosen = samples
    if 0 < sample_size < len(samples):
        rng = np.random.default_rng(seed)
        chosen = [samples[i] for i in sorted(rng.choice(len(samples), sample_size, replace=False))]
    sizes = [len(encode_image(load_image(s.image_path, s.origin), *setting[:2])[0]) for s in chosen]
    return float(np.mean(sizes)), size_method(setting, sample_size, seed, len(samples))


def size_method(setting: Setting | None, sample_size: int, seed: int, num_images: int) -> str:
    """How :func:`size_of` measures ``setting`` (a row measured otherwise is redone)."""
    if setting is None:
        return "exact (file sizes)"
    if 0 < sample_size < num_images:
        return f"sample of {sample_size} (seed {seed})"
    return "exact (all encoded)"


# ---------------------------------------------------------------------------------------------
# accuracy


def predict_dev(detector, samples: list, setting: Setting | None, pred_dir: Path) -> None:
    """Prediction files of ``samples`` seen through ``setting``, boxes in original pixels."""
    import cv2
    import torch

    from ufssd.data import load_image
    from ufssd.data.pack import decode_jpegs, encode_image
    from ufssd.evaluation import write_predictions

    cfg = detector.resolve(evaluation=True)  # as predict_widerface: the 0.01 evaluation threshold
    t0 = time.perf_counter()
    for k, sample in enumerate(samples, start=1):
        rgb, scale = load_image(sample.image_path, sample.origin), 1.0
        if setting is not None:
            data, scale = encode_image(rgb, setting.max_side, setting.quality)
            chw = decode_jpegs([torch.frombuffer(bytearray(data), dtype=torch.uint8)])[0]
            packed = chw.permute(1, 2, 0).contiguous().numpy()
            if setting.restored:
                packed, scale = cv2.resize(packed, rgb.shape[1::-1], interpolation=cv2.INTER_LINEAR), 1.0
            rgb = packed
        result = detector.detect(rgb, score_threshold=cfg.score_threshold, tta=None)
        write_predictions(pred_dir / f"{sample.name}.txt", sample.name, result.boxes / scale, result.scores)
        if k % 100 == 0 or k == len(samples):
            log.info("  %d/%d dev images (%.2f s/image)", k, len(samples), (time.perf_counter() - t0) / k)


# ---------------------------------------------------------------------------------------------
# the table


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    from ufssd.atomic import read_csv

    return {row["setting"]: row for row in read_csv(path)}


def markdown(rows: list[dict], call_mib: float) -> str:
    """The table: one line per setting, AP differences to ``original`` when it has a row."""
    base = next((r for r in rows if r["setting"] == "original"), None)
    lines = [
        f"| setting | bytes/image | pack MiB | device calls ({call_mib:g} MiB) | dev AP easy | medium | hard "
        "| Δ easy | Δ medium | Δ hard |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        aps = [float(r[f"ap_{s}"]) for s in ("easy", "medium", "hard")]
        if base is not None and base["dev_images"] == r["dev_images"]:
            deltas = [f"{a - float(base[f'ap_{s}']):+.4f}" for a, s in zip(aps, ("easy", "medium", "hard"))]
        else:
            deltas = ["n/a"] * 3
        lines.append(
            f"| {r['setting']} | {float(r['bytes_per_image']):,.0f} | {float(r['pack_mib']):.1f} | "
            f"{r['device_calls']} | " + " | ".join(f"{a:.4f}" for a in aps) + " | " + " | ".join(deltas) + " |"
        )
    methods = "; ".join(f"{r['setting']} {r['size_method']}" for r in rows)
    train = ", ".join(sorted({r["train_images"] for r in rows}))
    dev = ", ".join(sorted({r["dev_images"] for r in rows}))
    lines += [
        "",
        f"Pack MiB: bytes/image x {train} trainable images; bytes/image: {methods}. "
        f"Device calls: pack MiB / {call_mib:g}, rounded up. AP: official protocol on {dev} dev images, "
        "single scale at the packed image's size, boxes mapped back to original pixels (`:restored`: "
        "the packed image resized back to the original size first); "
        "Δ: difference to `original`.",
    ]
    return "\n".join(lines) + "\n"


def run_setting(text: str, args, train: list, dev: list, names: list[str], gt_dir: Path, detector) -> dict:
    from ufssd.evaluation import evaluate

    setting = parse_setting(text)
    t0 = time.perf_counter()
    per_image, how = size_of(train, setting, args.size_sample, args.seed)
    pack_mib = per_image * len(train) / _MIB
    log.info("%s: %.0f bytes/image, %.1f MiB for %d images (%s)", text, per_image, pack_mib, len(train), how)
    pred_dir = args.out / "pred" / text.replace(":", "_")
    predict_dev(detector, dev, setting, pred_dir)
    aps = evaluate(pred_dir, gt_dir, subset=names).aps
    log.info("%s: AP easy %.4f medium %.4f hard %.4f", text, aps["easy"], aps["medium"], aps["hard"])
    return {
        "setting": text, "bytes_per_image": f"{per_image:.1f}", "pack_mib": f"{pack_mib:.2f}",
        "device_calls": str(math.ceil(pack_mib / args.call_mib)), "size_method": how,
        "train_images": str(len(train)), "dev_images": str(len(dev)),
        **{f"ap_{s}": f"{aps[s]:.4f}" for s in ("easy", "medium", "hard")},
        "seconds": f"{time.perf_counter() - t0:.0f}",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    import cv2
    import torch

    from ufssd.atomic import atomic_write_csv, atomic_write_text
    from ufssd.inference import FaceDetector
    from ufssd.widerface_files import DEV_LIST, VAL_TRAIN_LIST, ground_truth_folder, read_image_list, read_split

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    root = args.data_root
    names = [f"{n}.jpg" for n in read_image_list(args.subset or root / DEV_LIST)][: args.limit]
    dev = read_split(root, "val", subset=names)
    train = read_split(root, "train") + read_split(root, "val", subset=root / VAL_TRAIN_LIST)
    gt_dir = args.gt or (ground_truth_folder(root) if ground_truth_folder(root).is_dir() else args.shared_gt)
    detector = FaceDetector(weights=args.weights, num_threads=args.threads)
    csv_path, md_path = args.out / "pack_cost.csv", args.out / "pack_cost.md"
    done = read_rows(csv_path)
    for text in args.settings:
        row = done.get(text)
        if row and row["dev_images"] == str(len(dev)) and row["size_method"] == size_method(
            parse_setting(text), args.size_sample, args.seed, len(train)
        ):
            log.info("%s: done already (%s), skipped", text, csv_path)
            continue
        done[text] = run_setting(text, args, train, dev, names, gt_dir, detector)
        rows = [done[t] for t in args.settings if t in done] + [r for t, r in done.items() if t not in args.settings]
        atomic_write_csv(csv_path, rows, FIELDS)
        atomic_write_text(md_path, markdown(rows, args.call_mib))
    print(md_path.read_text(encoding="utf-8") if md_path.is_file() else "no settings measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
