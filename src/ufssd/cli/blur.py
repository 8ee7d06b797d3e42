"""``ufssd blur``: hide the faces of images, folders (recursively) and videos."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from ufssd.cli import CLIError
from ufssd.cli.detect import add_model_arguments, detector_from_args

HELP = "hide faces (blur, pixelate or fill) in images, folders and videos"

DESCRIPTION = """\
Hide the faces of images, folders (searched recursively) and video files, into --out with the
same names (images in their format and mode, videos in their container with their frame rate,
size and audio). The face box is enlarged by --expand and hidden inside an ellipse (or the box).
Recall first: faces scoring at least --threshold (default: the blur threshold chosen on the dev
set, lower than detection's) are hidden; in videos a face stays hidden --persist frames after the
detector loses it. Outputs are written atomically (an interrupted run leaves no partly anonymised
file) and never overwrite an input. A bad input gets one line on stderr
(`ufssd blur: <path>: <what is wrong>`), the other inputs go on, and the exit code is 1. A video
whose audio cannot be kept is written without it and gets one line saying so.
"""


# the choices and defaults of ufssd.inference.anonymize / face_tracker, written out so that building
# the parser imports no torch (tests/cli/test_blur_cli.py checks that they agree)
METHODS = ("blur", "pixelate", "fill")
SHAPES = ("ellipse", "box")
PERSIST = 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "blur", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or video files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (inputs keep their names)")
    p.add_argument(
        "--json", action="store_true",
        help="also write <out>/<name>.json: the faces hidden per image or video frame",
    )
    p.add_argument("--method", choices=METHODS, default="blur", help="how faces are hidden (default: blur)")
    p.add_argument(
        "--expand", type=float, default=0.25, metavar="F",
        help="enlarge each face box by F times its width/height on every side (default 0.25)",
    )
    p.add_argument(
        "--shape", choices=SHAPES, default="ellipse", help="shape hidden in the enlarged box (default: ellipse)"
    )
    p.add_argument(
        "--threshold", type=float, default=None, metavar="T",
        help="hide faces scoring >= T (default: the blur threshold chosen for the embedded model, "
        "lower than its detection threshold; see docs/anonymize.md)",
    )
    p.add_argument(
        "--persist", type=int, default=PERSIST, metavar="N",
        help=f"videos: keep a face hidden N frames after the detector loses it (default {PERSIST}; 0: off)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_arguments(p)
    p.set_defaults(func=run)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # so that temporary outputs are removed on SIGTERM too


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ufssd.inference.anonymize import AnonymizeConfig
    from ufssd.inference.anonymize_files import anonymize_files
    from ufssd.inference.face_tracker import check_persist

    try:  # checked before the model loads
        check_persist(args.persist)
        cfg = AnonymizeConfig.resolve(args.threshold, method=args.method, expand=args.expand, shape=args.shape)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    detector = detector_from_args(args)

    def report(line: str) -> None:
        tqdm.write(f"ufssd blur: {line}", file=sys.stderr)

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = anonymize_files(
            detector, args.inputs, args.out, cfg, persist=args.persist, write_json=args.json,
            progress=not args.no_progress, on_error=lambda err: report(str(err)), on_note=report,
        )
    finally:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)
    frames = f", {summary.frames} video frames" if summary.frames else ""
    print(
        f"ufssd blur: {summary.processed} inputs{frames}, {summary.faces} faces hidden, "
        f"{len(summary.failed)} failed; outputs in {args.out}",
        file=sys.stderr,
    )
    return 1 if summary.failed else 0
