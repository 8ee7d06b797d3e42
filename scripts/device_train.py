"""The one training command of a GPU lease (issue 16): the data on the device, a speed probe, a
fully annealed schedule sized to the time left, the weights and logs brought back.

A lease is 15 minutes of device time in all, and one call of the ``device`` tool carries at most
64 MiB (the work tree, about 3 MiB, and the carried paths). The pack
(``scripts/pack_device_data.py``: JPEG shards of at most ~56 MiB and ``manifest.json``, under
the git-ignored ``.device_data/pack``) therefore travels over back-to-back calls to one warm
machine (it keeps ignored files about 30 s between calls), and the last shards travel with the
training call itself. ``plan`` prints those calls::

    python scripts/device_train.py plan --pack .device_data/pack --budget 480 -- --init weights.safetensors

    call 1/3: carry .device_data/pack/shard-000.bin
              python3 scripts/device_train.py receive --pack .device_data/pack
    ...
    call 3/3: carry .device_data/pack/manifest.json .device_data/pack/shard-002.bin
              python3 scripts/device_train.py train --pack .device_data/pack --budget 480 --out $OUT -- ...

``receive`` (on the device) says which shards have arrived whole (size and SHA-256 against the
manifest when it is there) and which are still missing: a transfer that broke off is seen at
once, not at training time. ``train`` (on the device):

1. prints the machine (torch, GPU) and verifies the whole pack against its manifest (refusing,
   with every difference named, a pack that does not match);
2. runs ``ufssd train --data-device cuda --pack ... --time-budget BUDGET`` (in this process: the pool
   is decoded once, on the GPU): a ``--probe-steps`` probe, then ``--iters`` sized to the time
   left, with the whole schedule (warm-up clip, milestones) following it, so the run ends
   annealed;
3. copies into ``$OUT``: ``final.safetensors``, ``train_log.csv``, ``config.json``, the console
   log, and ``summary.json`` (steps, images seen, images/s after the probe, wall seconds). Every
   file is under the tool's 16 MiB; ``last.pt`` (weights, momentum, RNG) comes back too when it
   fits, so that a later lease can resume.

Every argument after ``--`` goes to ``ufssd train`` (``--preset``, ``--init``, ``--lr``,
``--set ...``). ``compare --candidate NAME=ARGS ...`` trains up to six candidates one after the
other in one process (the pool decoded once, the compiled augmentation reused) with ``--budget``
seconds each (architecture or recipe candidates at an equal budget: issue
17) and brings back ``NAME.safetensors`` of each and ``compare.json``. On this CPU, the same command proves itself end to end with a tiny budget
(``tests/scripts/test_device_train.py``)::

    python scripts/device_train.py train --pack /tmp/pack --device cpu --budget 20 --out /tmp/out \\
        -- --resolution 160 --batch-size 4 --probe-steps 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

CALL_MIB = 64.0  # one call's carried data, work tree included
TREE_MIB = 4.0  # what the work tree takes of it (tracked files and the shipped model)
FILE_LIMIT = 16 * 2**20  # the largest file a call brings back
DEFAULT_TRAIN_ARGS = (
    "--preset", "ufssd_light_ffmm_x1", "--batch-size", "256", "--lr", "0.01", "--grad-clip", "10",
    "--resolution", "640", "--warmup", "100", "--log-every", "25", "--checkpoint-every", "250",
    "--no-progress", "--no-tensorboard",
)  # fmt: skip
RESULT_FILES = ("final.safetensors", "train_log.csv", "config.json", "last.pt")


# ---------------------------------------------------------------------------------------------
# plan: the calls that bring the pack over


def plan_calls(pack: Path, call_mib: float = CALL_MIB, tree_mib: float = TREE_MIB) -> list[list[Path]]:
    """The carried paths of each call, in order (``ufssd.data.pack.plan_transfer``: shards
    within ``call_mib - tree_mib``, at most 8 paths a call; the manifest with the last call)."""
    from ufssd.data.pack import MANIFEST_NAME, plan_transfer, read_manifest

    manifest = read_manifest(pack)
    files = [(str(pack / s.file), s.bytes) for s in manifest.shards]
    files.append((str(pack / MANIFEST_NAME), (pack / MANIFEST_NAME).stat().st_size))
    try:
        calls = plan_transfer(files, call_mib - tree_mib)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return [[Path(p) for p, _ in call] for call in calls]


def cmd_plan(args: argparse.Namespace, train_args: list[str]) -> int:
    calls = plan_calls(args.pack, args.call_mib, args.tree_mib)
    rel = [[os.path.relpath(p, REPO) for p in call] for call in calls]
    last = " ".join(["python3 scripts/device_train.py train --pack", os.path.relpath(args.pack, REPO),
                     "--budget", str(args.budget), "--out", "$OUT", "--", *train_args])  # fmt: skip
    for i, paths in enumerate(rel, 1):
        command = last if i == len(rel) else f"python3 scripts/device_train.py receive --pack {os.path.relpath(args.pack, REPO)}"
        print(f"call {i}/{len(rel)}: carry {' '.join(paths)}\n          {command}")
    print(f"(each call back-to-back: the machine stays warm {30} s; the training call's timeout_s must "
          f"exceed --budget plus start-up, about {args.budget + 90:.0f} s)")  # fmt: skip
    return 0


# ---------------------------------------------------------------------------------------------
# receive: what arrived


def cmd_receive(args: argparse.Namespace) -> int:
    """List the shards present (checked against the manifest once it is there)."""
    from ufssd.data.pack import MANIFEST_NAME, read_manifest, sha256_file

    pack = args.pack
    present = sorted(p.name for p in pack.glob("shard-*.bin")) if pack.is_dir() else []
    if not (pack / MANIFEST_NAME).is_file():
        for name in present:
            print(f"{name}: {(pack / name).stat().st_size} bytes (no manifest yet to check it against)")
        print(f"{len(present)} shard(s) here; the manifest travels with the last call")
        return 0
    manifest = read_manifest(pack)
    bad = []
    for shard in manifest.shards:
        path = pack / shard.file
        if not path.is_file():
            bad.append(f"{shard.file}: missing")
        elif path.stat().st_size != shard.bytes or sha256_file(path) != shard.sha256:
            bad.append(f"{shard.file}: differs from the manifest (a broken transfer?)")
    for line in bad:
        print(line)
    print(f"{len(manifest.shards) - len(bad)} of {len(manifest.shards)} shards whole")
    return 1 if bad else 0


# ---------------------------------------------------------------------------------------------
# train: the run and what comes back


def summarise(run_dir: Path, batch_size: int, wall_s: float) -> dict:
    """Steps, images seen and speed of a run from its ``train_log.csv`` (rows after the first
    quarter of the run: the probe, compilation and warm-up left out)."""
    from ufssd.atomic import read_csv

    rows = read_csv(run_dir / "train_log.csv")
    if not rows:
        raise SystemExit(f"{run_dir}/train_log.csv: no step was logged")
    steps = int(float(rows[-1]["step"]))
    steady = [float(r["images_per_s"]) for r in rows if float(r["step"]) > steps / 4] or [float(rows[-1]["images_per_s"])]
    return {
        "steps": steps,
        "batch_size": batch_size,
        "images_seen": steps * batch_size,
        "images_per_s_median": statistics.median(steady),
        "train_loop_s": float(rows[-1]["elapsed_s"]),
        "wall_s": round(wall_s, 1),
        "final_loss": float(rows[-1]["loss"]),
    }


def _value(args: list[str], flag: str, default: str) -> str:
    """The value of ``flag`` in an argument list (its last occurrence), else ``default``."""
    value = default
    for i, a in enumerate(args[:-1]):
        if a == flag:
            value = args[i + 1]
    return value


def _prepare(args: argparse.Namespace) -> tuple[Path, str]:
    """The out folder, the machine's line, and the pack verified (refused when it does not match)."""
    import torch

    from ufssd.data.pack import verify_pack

    t0 = time.monotonic()
    out = Path(os.path.expandvars(str(args.out))).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, GPU {gpu}, {os.cpu_count()} CPUs", flush=True)
    manifest = verify_pack(args.pack)
    print(f"pack {args.pack}: {len(manifest.images)} images in {len(manifest.shards)} shards, verified "
          f"({time.monotonic() - t0:.1f} s)", flush=True)  # fmt: skip
    return out, gpu


def cmd_train(args: argparse.Namespace, train_args: list[str]) -> int:
    out, _ = _prepare(args)
    run_dir = args.run_dir or REPO / ".device_data" / "run"  # not under $OUT: at most 8 files come back
    code, summary = train_in_process(args, train_args, args.budget, run_dir, out / "train_console.log")
    brought = bring_back(run_dir, out)
    if summary is not None:
        summary["files"] = brought
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(json.dumps({k: summary[k] for k in ("steps", "images_seen", "images_per_s_median", "wall_s")}))
    return code


def train_in_process(args: argparse.Namespace, train_args: list[str], budget: float, run_dir: Path,
                      console: Path) -> tuple[int, dict | None]:
    """One ``ufssd train`` on the device data path for ``budget`` seconds, in this process
    (``ufssd.cli.main``), its log also into ``console``; its exit code and summary (None when it
    logged no step). Inside :func:`ufssd.train.device_data.keep_pools` (``compare``) the pool is
    decoded once for every run, and the compiled augmentation is reused."""
    import logging

    import torch

    from ufssd.cli import main as ufssd_main

    t0 = time.monotonic()
    full_args = [*DEFAULT_TRAIN_ARGS, *train_args]
    argv = ["train", *full_args, "--data-device", args.device, "--pack", str(args.pack), "--time-budget", str(budget),
            "--out", str(run_dir), "--resume", "--device", args.device]  # fmt: skip
    print("+ ufssd", " ".join(argv), flush=True)
    handler = logging.FileHandler(console, mode="w")
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(min(level or logging.INFO, logging.INFO))  # the trainer's INFO lines reach the file
    try:
        code = ufssd_main(argv)
    except Exception as exc:  # noqa: BLE001 - one candidate's failure must not end the others
        logging.getLogger("device_train").exception("candidate failed: %s", exc)
        code = 1
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if not (run_dir / "train_log.csv").is_file():
        return code, None
    batch = int(_value(full_args, "--batch-size", "0"))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    summary = {**summarise(run_dir, batch, time.monotonic() - t0), "exit_code": code, "gpu": gpu,
               "torch": torch.__version__, "train_args": full_args}  # fmt: skip
    return code, summary


def cmd_compare(args: argparse.Namespace, train_args: list[str]) -> int:
    """Train each ``--candidate NAME=ARGS`` for ``--budget`` seconds, one after the other in this
    process (the pool decoded once; the same pack, schedule rule and budget each); bring back
    ``NAME.safetensors`` of each and one ``compare.json`` of their summaries (at most 8 files
    come back: at most 6 candidates)."""
    from ufssd.train.device_data import keep_pools

    out, _ = _prepare(args)
    candidates = [c.split("=", 1) for c in args.candidate]
    if not candidates or any(len(c) != 2 or not c[0].replace("_", "").replace("-", "").isalnum() for c in candidates):
        raise SystemExit("give --candidate NAME=ARGS (NAME of letters, digits, - and _) at least once")
    if len(candidates) > 6:
        raise SystemExit(f"{len(candidates)} candidates: at most 6 (8 files come back)")
    root = args.run_dir or REPO / ".device_data" / "compare"
    root.mkdir(parents=True, exist_ok=True)
    results, worst = {}, 0
    with keep_pools():
        for name, extra in candidates:
            run_dir = root / name
            code, summary = train_in_process(args, [*train_args, *shlex.split(extra)], args.budget, run_dir,
                                              root / f"{name}.log")  # fmt: skip
            worst = worst or code
            final = run_dir / "final.safetensors"
            if final.is_file():
                shutil.copyfile(final, out / f"{name}.safetensors")
            results[name] = summary or {"exit_code": code}
            (out / "compare.json").write_text(json.dumps(results, indent=1) + "\n")
    return worst


def bring_back(run_dir: Path, out: Path) -> list[str]:
    """Copy the run's results into ``out`` (the files that fit the tool's limit)."""
    brought = []
    for name in RESULT_FILES:
        src = run_dir / name
        if src.is_file() and src.stat().st_size <= FILE_LIMIT:
            if src.resolve() != (out / name).resolve():
                shutil.copyfile(src, out / name)
            brought.append(name)
        elif src.is_file():
            print(f"{name}: {src.stat().st_size / 2**20:.1f} MiB, over the {FILE_LIMIT // 2**20} MiB a file; left there")
    return brought


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `ufssd train` sets it before torch loads
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    own, train_args = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    for verb in ("plan", "receive", "train", "compare"):
        q = sub.add_parser(verb)
        q.add_argument("--pack", type=Path, default=REPO / ".device_data" / "pack", help="the pack folder")
        if verb != "receive":
            q.add_argument("--budget", type=float, default=480.0, help="seconds of the training loop (default 480)")
        if verb == "plan":
            q.add_argument("--call-mib", type=float, default=CALL_MIB, help=f"MiB one call carries (default {CALL_MIB:g})")
            q.add_argument("--tree-mib", type=float, default=TREE_MIB,
                           help=f"MiB of it the work tree takes (default {TREE_MIB:g})")
        if verb == "compare":
            q.add_argument("--candidate", action="append", default=[], metavar="NAME=ARGS",
                           help="a candidate: its name and its extra ufssd train arguments (repeat, at most 6)")
        if verb in ("train", "compare"):
            q.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/device")),
                           help="where the results go (default $OUT)")
            q.add_argument("--run-dir", type=Path,
                           help="the run folder (default .device_data/run; compare: the folder of the runs, "
                           "default .device_data/compare)")
            q.add_argument("--device", default="cuda", help="training and data device (default cuda; cpu to test)")
    args = p.parse_args(own)
    if args.verb == "plan":
        return cmd_plan(args, train_args)
    if args.verb == "receive":
        return cmd_receive(args)
    if not math.isfinite(args.budget) or args.budget <= 0:
        raise SystemExit("--budget must be a positive number of seconds")
    return cmd_compare(args, train_args) if args.verb == "compare" else cmd_train(args, train_args)


if __name__ == "__main__":
    sys.exit(main())
