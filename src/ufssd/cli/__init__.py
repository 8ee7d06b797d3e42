"""The ``ufssd`` command line: argument parsing only; every command calls a library function.

One module per subcommand in this package. Each defines ``register(subparsers)``, which adds its
parser and sets ``func`` to a ``run(args) -> int`` that imports the heavy libraries it needs
lazily (``ufssd evaluate`` never imports torch).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ufssd import __version__

# subcommand modules, in the order of ``ufssd --help``
COMMANDS = ("detect", "blur", "predict_widerface", "evaluate", "train", "export", "bench")


class CLIError(Exception):
    """An error the CLI reports as one line (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ufssd", description="UF-SSD face detection: detect, train, evaluate, export, bench."
    )
    parser.add_argument("--version", action="version", version=f"ufssd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"ufssd.cli.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != f"ufssd.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"ufssd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
