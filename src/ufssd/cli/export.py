"""``ufssd export``: the network as ONNX, checked against PyTorch before the file is written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ufssd.cli import CLIError
from ufssd.cli._model import add_weights_or_preset, load_model

HELP = "export the network to ONNX (with a parity check against PyTorch)"

DESCRIPTION = """\
Export the raw network to ONNX: input `images` float32 (N, 3, H, W), normalised RGB padded to
multiples of 128, N/H/W dynamic; outputs `cls_logits` (N, A, 2, raw logits), `box_deltas`
(N, A, 4, undecoded) and `mask_logits_l<l>` per FFMM level. Anchors, decoding and NMS are not in
the graph (FaceDetector(backend="onnxruntime") does them, as for PyTorch). Before the file is
written, onnxruntime is compared with PyTorch (raw outputs within 1e-4, boxes after NMS within
0.5 px); on failure nothing is written and the exit code is 1.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_weights_or_preset(p, onnx=False, preset_help="a preset with random weights (testing)")
    p.add_argument("--format", default="onnx", choices=("onnx",), help="only onnx")
    p.add_argument("--out", required=True, metavar="F.onnx", help="output file (written atomically)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check (not recommended)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ufssd.inference.export import OPSET, ExportParityError, export_onnx

    out = Path(args.out)
    if args.weights and Path(args.weights).resolve() == out.resolve():
        raise CLIError("--out is the weight file itself; choose another path")
    if args.weights and Path(args.weights).suffix.lower() == ".onnx":
        raise CLIError(f"{args.weights}: already an ONNX file")
    model = load_model(args)
    try:
        result = export_onnx(model, out, opset=args.opset or OPSET, check=not args.no_check)
    except ExportParityError as exc:
        print(f"ufssd export: parity check failed, nothing written: {exc}", file=sys.stderr)
        return 1
    if result.parity is not None:
        print(f"ufssd export: {result.parity.summary()}", file=sys.stderr)
    print(f"ufssd export: wrote {out} ({len(result.data) / 1e6:.1f} MB, model {model.config.name})", file=sys.stderr)
    return 0
