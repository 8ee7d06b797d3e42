"""``ufssd bench``: end-to-end latency per size, backend and batch (method: docs/inference.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ufssd.cli import CLIError
from ufssd.cli._model import add_weights_or_preset, load_model

HELP = "measure end-to-end detection latency (the source of the README's speed figures)"

DESCRIPTION = """\
Median, minimum and 90th percentile of the end-to-end time per image of FaceDetector.detect
(pre-processing, network, post-processing) over --repeats runs after --warmup runs, for every
size, backend and batch size; prints a Markdown table with the machine and thread count, and
writes JSON with --json.
"""


def _list(text: str, cast=str):
    return [cast(v.strip()) for v in text.split(",") if v.strip()]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_weights_or_preset(p, onnx=False)
    p.add_argument(
        "--sizes", default="640x480", metavar="WxH,...", help="image sizes, width x height (default 640x480)"
    )
    p.add_argument("--backend", default="torch,onnxruntime", metavar="B,...", help="default: torch,onnxruntime")
    p.add_argument("--batch", default="1", metavar="N,...", help="batch sizes (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per row (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--threshold", type=float, default=None, help="score threshold (default: the model's)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ufssd.inference.bench import format_markdown, machine_info, parse_sizes, run_bench, to_json
    from ufssd.atomic import atomic_write_text

    try:
        sizes = parse_sizes(args.sizes)
        batches = _list(args.batch, int)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    backends = _list(args.backend)
    unknown = [b for b in backends if b not in ("torch", "onnxruntime")]
    if unknown or not backends:
        raise CLIError(f"--backend takes torch and/or onnxruntime, got {args.backend!r}")
    if not batches or min(batches) < 1 or args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        raise CLIError("--batch, --threads and --repeats must be >= 1 (--warmup >= 0)")
    model = load_model(args)

    def progress(row) -> None:
        print(
            f"  {row.backend} {row.width}x{row.height} batch {row.batch}: median {row.median_ms:.1f} ms/img",
            file=sys.stderr,
        )

    rows = run_bench(
        model, sizes, backends, batches, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
        device=args.device, score_threshold=args.threshold, progress=progress,
    )
    info = machine_info(args.threads, args.device)
    print(format_markdown(rows, info, model.config.name))
    if args.json:
        atomic_write_text(Path(args.json), to_json(rows, info, model.config.name) + "\n")
    return 0
