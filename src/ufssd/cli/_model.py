"""The ``--weights`` / ``--preset`` choice that every command taking a network shares, and the
translation of the inference layer's loading errors into :class:`CLIError`."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
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


@contextlib.contextmanager
def loading_errors() -> Iterator[None]:
    """The errors of loading a network (no embedded model, a bad weight file, an unknown preset)
    as one-line :class:`CLIError`\\ s."""
    from ufssd.inference.loading import DefaultWeightsMissingError

    try:
        yield
    except DefaultWeightsMissingError as exc:
        raise CLIError(f"{exc} (use --weights W or --preset P)") from exc
    except (FileNotFoundError, KeyError, ValueError) as exc:  # WeightFileError: one line naming the file
        raise CLIError(str(exc).strip("'\"")) from exc


def load_model(args: argparse.Namespace) -> UFSSD:
    """The network that ``--weights`` / ``--preset`` name (the embedded model by default), in
    eval mode: :func:`ufssd.inference.loading.load_model`."""
    from ufssd.inference.loading import load_model as load

    with loading_errors():
        return load(args.weights, args.preset)
