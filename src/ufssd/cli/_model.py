"""The ``--weights`` / ``--preset`` choice that every command taking a network shares."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ufssd.cli import CLIError

if TYPE_CHECKING:
    from ufssd.model import UFSSD


def add_weights_or_preset(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, onnx: bool,
                          preset_help: str = "a preset with random weights (testing, benchmarks)") -> None:  # fmt: skip
    """Mutually exclusive ``--weights W`` (default: the embedded model) and ``--preset P``."""
    kinds = "a .safetensors, .pt or .onnx file" if onnx else "a .safetensors or .pt file"
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--weights", metavar="W", help=f"{kinds} (default: the embedded model)")
    src.add_argument("--preset", metavar="P", help=preset_help)


def load_model(args: argparse.Namespace, purpose: str) -> UFSSD:
    """The network that ``--weights`` / ``--preset`` name (the embedded model by default), in eval mode."""
    from ufssd.inference.face_detector import default_weights_path
    from ufssd.model import build_model, load_weights

    if args.preset:
        try:
            model = build_model(args.preset)
        except KeyError as exc:
            raise CLIError(str(exc).strip("'\"")) from exc
        logging.getLogger(f"ufssd.{purpose}").warning("%s preset %r with random weights (untrained)", purpose, args.preset)
        return model.eval()
    path = Path(args.weights) if args.weights else default_weights_path()
    if not args.weights and not path.is_file():
        raise CLIError(f"no embedded default model: {path} does not exist yet; use --weights W or --preset P")
    try:
        return load_weights(path)
    except (FileNotFoundError, ValueError) as exc:  # WeightFileError: one line naming the file
        raise CLIError(str(exc)) from exc
