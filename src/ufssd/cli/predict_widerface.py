"""``ufssd predict-widerface``: prediction files for the WIDER FACE evaluator (``ufssd evaluate``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ufssd.cli import CLIError
from ufssd.cli.detect import add_model_arguments, detector_from_args
from ufssd.widerface_files import IMAGE_SPLITS, DataError, image_folder, read_list_entries

HELP = "write WIDER FACE prediction files (then: ufssd evaluate)"

DESCRIPTION = """\
Detect faces in WIDER FACE images and write one <event>/<stem>.txt per image in the evaluator's
format (x y w h score, floats, sorted by score; score threshold 0.01, NMS IoU 0.3, top 750).
Prints the input policy used when done. Then: ufssd evaluate --pred PRED_DIR ...
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict-widerface", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-root", required=True, metavar="DIR",
        help="the WIDER FACE folder (with WIDER_<split>/images), or an images folder with event sub-folders",
    )
    p.add_argument("--split", default="val", choices=IMAGE_SPLITS, help="default: val")
    p.add_argument("--subset", metavar="LIST", help="a file of <event>/<name>.jpg lines (default: every image found)")
    p.add_argument("--out", required=True, metavar="PRED_DIR", help="prediction folder (<event>/<stem>.txt)")
    p.add_argument(
        "--threshold", type=float, default=None, metavar="T",
        help="score threshold (default: the model's eval_score_threshold, 0.01)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_arguments(p)
    p.set_defaults(func=run)


def image_root(data_root: Path, split: str) -> Path:
    official = image_folder(data_root, split)
    for candidate in (official, data_root / "images", data_root):
        if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
            return candidate
    raise CLIError(f"{data_root}: no {official.relative_to(data_root).as_posix()} folder with event sub-folders")


def read_subset(path: Path) -> list[str]:
    """The entries of a subset list as written (``<event>/<name>.jpg``), comments and blank lines
    skipped as in every image list (:func:`ufssd.widerface_files.list_entries`)."""
    try:
        names = [entry.text for entry in read_list_entries(path)]
    except DataError as exc:
        raise CLIError(str(exc)) from exc
    if not names:
        raise CLIError(f"{path}: the subset list is empty")
    return names


def run(args: argparse.Namespace) -> int:
    from ufssd.inference import InputError
    from ufssd.inference.widerface import list_images, predict_widerface

    data_root = Path(args.data_root)
    if not data_root.is_dir():
        raise CLIError(f"{data_root}: no such folder")
    root = image_root(data_root, args.split)
    names = read_subset(Path(args.subset)) if args.subset else list_images(root)
    if not names:
        raise CLIError(f"{root}: no <event>/<name>.jpg images")
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise CLIError(f"{len(missing)} listed image(s) not under {root}, e.g. {missing[0]}")
    detector = detector_from_args(args)
    print(
        f"ufssd predict-widerface: {len(names)} images from {root}; model {detector.config.name} "
        f"({detector.source}, {detector.backend})",
        file=sys.stderr,
    )
    try:  # --threshold is None unless given: predict_widerface resolves it (the eval floor, 0.01)
        summary = predict_widerface(
            detector, root, names, args.out, tta=detector.tta, progress=not args.no_progress,
            score_threshold=args.threshold,
        )
    except InputError as exc:
        raise CLIError(str(exc)) from exc
    print(
        f"ufssd predict-widerface: wrote {summary.images} files ({summary.detections} boxes) to {args.out}; "
        f"input policy: {summary.input_policy}",
        file=sys.stderr,
    )
    return 0
