"""``ufssd detect``: faces in images, folders (recursively) and videos.

Also holds the model-selection arguments that ``predict-widerface``, ``export`` and ``bench``
share (:func:`add_model_arguments`, :func:`detector_from_args`).
"""

from __future__ import annotations

import argparse
import sys

from ufssd.cli import CLIError
from ufssd.cli._model import add_weights_or_preset, loading_errors

HELP = "find faces in images, folders (recursively) and videos"

DESCRIPTION = """\
Find faces in images, folders (searched recursively) and video files. Without --json, --jsonl or
--save-images the results go to stdout as JSON lines (one per image or video frame). Outputs are
written atomically under --out and never overwrite an input. A bad input gets one line on stderr
(`ufssd detect: <path>: <what is wrong>`), the other inputs go on, and the exit code is 1.
Boxes are x1 y1 x2 y2 in original-image pixels.
"""


def add_model_arguments(p: argparse.ArgumentParser, *, backend: bool = True, tta: bool = True) -> None:
    g = p.add_argument_group("model")
    add_weights_or_preset(g, onnx=True)
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    if backend:
        g.add_argument(
            "--backend", choices=("torch", "onnxruntime"), default=None,
            help="default: onnxruntime for .onnx weights, else torch",
        )
    g.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch and onnxruntime")
    g.add_argument(
        "--max-size", type=int, default=None, metavar="PX", help="downscale images whose longer side exceeds PX"
    )
    g.add_argument(
        "--max-pixels", type=int, default=None, metavar="N",
        help="downscale images with more than N pixels (default 16777216 = 4096x4096)",
    )
    g.add_argument(
        "--soft-nms", type=float, default=None, metavar="SIGMA",
        help="Gaussian Soft-NMS with this sigma (0.5 is usual) instead of NMS at IoU 0.3 (default: the model's)",
    )
    if tta:
        g.add_argument(
            "--tta", default=None, metavar="PARTS",
            help="test-time augmentation: comma-separated flip,scales,vote, or 'all' (default: none)",
        )


def detector_from_args(args: argparse.Namespace, **overrides):
    """A FaceDetector from the shared model arguments (errors become CLIError)."""
    import torch

    from ufssd.inference import FaceDetector

    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs = dict(
        weights=args.weights,
        preset=args.preset,
        device=args.device,
        backend=getattr(args, "backend", None),
        max_size=args.max_size,
        max_pixels=args.max_pixels,
        tta=getattr(args, "tta", None),
        num_threads=args.threads,
        soft_nms_sigma=getattr(args, "soft_nms", None),
    )
    kwargs.update(overrides)
    with loading_errors():
        return FaceDetector(**kwargs)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "detect", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or video files")
    o = p.add_argument_group("output")
    o.add_argument(
        "--out", default="detections", metavar="DIR",
        help="output folder for --json and --save-images (default: detections)",
    )
    o.add_argument(
        "--json", action="store_true", help="write <out>/<name>.json per image (per video: one with a frames list)"
    )
    o.add_argument("--jsonl", metavar="FILE", help="write one JSON lines file with every image / frame")
    o.add_argument(
        "--save-images", action="store_true", help="write annotated copies <out>/<name>_faces.<ext> (videos: .mp4)"
    )
    p.add_argument("--threshold", type=float, default=None, metavar="T", help="score threshold (default: the model's)")
    p.add_argument("--batch-size", type=int, default=1, metavar="B", help="images per forward pass (default 1)")
    p.add_argument(
        "--video-stride", type=int, default=1, metavar="N", help="process every N-th video frame (default 1)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ufssd.inference.files import OutputClashError, detect_files

    if args.batch_size < 1 or args.video_stride < 1:
        raise CLIError("--batch-size and --video-stride must be >= 1")
    detector = detector_from_args(args, score_threshold=args.threshold)

    def on_error(err: Exception) -> None:
        tqdm.write(f"ufssd detect: {err}", file=sys.stderr)

    to_stdout = not (args.json or args.jsonl or args.save_images)
    try:
        summary = detect_files(
            detector,
            args.inputs,
            out_dir=args.out if (args.json or args.save_images) else None,
            write_json=args.json,
            jsonl=sys.stdout if to_stdout else args.jsonl,
            save_images=args.save_images,
            batch_size=args.batch_size,
            video_stride=args.video_stride,
            progress=not args.no_progress,
            on_error=on_error,
        )
    except OutputClashError as exc:
        raise CLIError(str(exc)) from exc
    frames = f", {summary.frames} video frames" if summary.frames else ""
    where = f"; outputs in {args.out}" if args.json or args.save_images else ""
    print(
        f"ufssd detect: {summary.processed} inputs{frames}, {summary.faces} faces, {len(summary.failed)} failed{where}",
        file=sys.stderr,
    )
    return 1 if summary.failed else 0
