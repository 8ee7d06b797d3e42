"""``ufssd evaluate``: WIDER FACE val AP of prediction folders (argument parsing only).

Every number comes from :func:`ufssd.evaluation.evaluate`; see ``docs/evaluation.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ufssd.cli import CLIError

DESCRIPTION = """\
Score WIDER FACE val predictions (PRED_DIR/<event>/<stem>.txt, official format) against the
organisers' ground truth, exactly as their MATLAB eval_tools do (--protocol official), or as the
popular Python port does (--protocol port). Prints one line per setting: AP and the counts of
images, counted faces, missing and invalid prediction files.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="WIDER FACE val AP (bit-exact with the official tool), PR curves",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pred_dir", metavar="PRED_DIR", type=Path, help="prediction folder")
    p.add_argument(
        "--gt",
        required=True,
        metavar="GT_DIR",
        type=Path,
        help="folder with wider_{face,easy,medium,hard}_val.mat",
    )
    p.add_argument(
        "--subset",
        metavar="LIST",
        type=Path,
        help="text file of <event>/<name>.jpg lines: evaluate only these images (only their "
        "faces count)",
    )
    p.add_argument(
        "--protocol",
        choices=("official", "port"),
        default="official",
        help="official: the organisers' tool (default); port: the popular Python port "
        "(wondervictor/WiderFace-Evaluation), for comparison with numbers computed with it",
    )
    p.add_argument("--json", metavar="OUT", type=Path, help="write APs, curves and counts as JSON")
    p.add_argument(
        "--plot", metavar="OUT.png", type=Path, help="draw the PR curves (one panel per setting)"
    )
    p.add_argument("--name", metavar="NAME", help="method name (default: PRED_DIR's folder name)")
    p.add_argument(
        "--compare",
        metavar="NAME=DIR",
        action="append",
        default=[],
        help="another prediction folder to evaluate and plot on the same axes (repeatable)",
    )
    p.add_argument(
        "--save-mat",
        metavar="DIR",
        type=Path,
        help="write DIR/<name>/wider_pr_info_<name>_<setting>_val.mat for the organisers' "
        "wider_plot.m (every method)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="an invalid prediction file is an error (exit code 2) instead of a warning",
    )
    p.set_defaults(func=run)


def _methods(args: argparse.Namespace) -> list[tuple[str, Path]]:
    name = args.name or args.pred_dir.resolve().name or "method"
    methods = [(name, args.pred_dir)]
    for item in args.compare:
        other, sep, folder = item.partition("=")
        if not sep or not other or not folder:
            raise CLIError(f"--compare {item!r}: expected NAME=DIR")
        methods.append((other, Path(folder)))
    names = [n for n, _ in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CLIError(f"method name(s) used twice: {', '.join(duplicates)} (use --name)")
    for n, folder in methods:
        if not folder.is_dir():
            raise CLIError(f"{folder}: prediction folder of {n!r} not found")
    return methods


def run(args: argparse.Namespace) -> int:
    from ufssd.evaluation import EvaluationError, evaluate, plot_pr_curves, save_json, save_pr_mat

    if not args.gt.is_dir():
        raise CLIError(f"{args.gt}: ground-truth folder not found")
    results = {}
    for name, folder in _methods(args):
        try:
            result = evaluate(
                folder, args.gt, subset=args.subset, protocol=args.protocol, strict=args.strict
            )
        except EvaluationError as exc:
            raise CLIError(str(exc)) from exc
        results[name] = result
        print(f"{name} ({folder}, protocol {args.protocol}):")
        for line in result.summary_lines():
            print(f"  {line}")
    main_name = next(iter(results))
    try:
        if args.json:
            payload = results[main_name].to_dict()
            payload["name"] = main_name
            if len(results) > 1:
                payload["compare"] = {n: r.to_dict() for n, r in results.items() if n != main_name}
            save_json(args.json, payload)
        if args.plot:
            plot_pr_curves(results, args.plot)
        if args.save_mat:
            for name, result in results.items():
                save_pr_mat(args.save_mat, name, result)
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    return 0
