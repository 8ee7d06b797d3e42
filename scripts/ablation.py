"""The paper's Tables 1 and 2 at our scale: train every (preset, seed) pair at one budget, score it
on the dev set, and render ``docs/ablation.md`` from the CSV of results (issue 18).

    python scripts/ablation.py                        # the default grid on this CPU (hours)
    python scripts/ablation.py --render-only          # docs/ablation.md from docs/ablation_runs.csv
    python scripts/ablation.py --presets ufssd_light ufssd_light_ffmm_x1 --seeds 0 1 2 \\
        --budget-images 60000 --resolution 320 --batch-size 16 --device cpu -- --lr 1e-2 --grad-clip 10

1. **Train.** Each pair is one ``ufssd train --resume`` subprocess writing to
   ``OUT/runs/<preset>/seed<k>``: a killed run resumes from its ``last.pt`` at the next
   invocation. Every row gets the same budget: data sources, augmentation, schedule,
   resolution, batch and images seen (``--iters = ceil(budget_images / batch_size)``); arguments
   after ``--`` go to every ``ufssd train`` call. The budget is stored in ``OUT/budget.json``, and
   a later invocation with another budget is refused (use another ``--out``).
2. **Score.** The run's ``final.safetensors`` predicts the dev images at their original size
   (single scale, threshold 0.01, ``ufssd.inference.predict_widerface``) into the run folder and
   the official protocol scores them (``ufssd.evaluation.evaluate``).
3. **Record.** One CSV row per pair (``--results``, by default ``docs/ablation_runs.csv`` in the
   repository, appended under a lock): dev APs, images seen, training and scoring seconds, the
   machine, the budget. The rows are committed: the run folders (checkpoints, predictions) stay
   outside the work tree and are lost with the machine, the rows are not. A pair with a row is
   never redone; remove its row to score it again (and its run folder to train it again).
4. **Render.** ``docs/ablation.md`` from the CSV only (``render`` below): mean and standard
   deviation over seeds per preset, each claim's difference to its baseline with a 95 %
   t-interval from the seeds, the paper's numbers beside ours, and one verdict per claim.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger("ablation")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("UFSSD_SHARED", REPO.parent / "shared"))
SETTINGS = ("easy", "medium", "hard")
LEVEL = 0.95  # of every interval
# the records, committed (the run folders are not: they stay outside the work tree)
RESULTS = REPO / "docs" / "ablation_runs.csv"
EFFICIENCY = REPO / "docs" / "ablation_efficiency.csv"
# the CPU budget of every row (issue 18: at least 60,000 images seen per run on a CPU)
CPU_IMAGES, CPU_BATCH, CPU_RESOLUTION = 60_000, 16, 320
# the recipe's arguments when none follow `--`: the default model's CPU stages' learning rate
# (1e-2 at batch 32, 10x the paper's, which is for ImageNet-initialised VGG-16: at the paper's
# 1e-3 the first grid's UF-SSD row reached dev AP 0.053 / 0.059 / 0.045 after 60,000 images,
# too little trained for any row to differ from another) and the stages' gradient clip
DEFAULT_EXTRA = ("--lr", "0.01", "--grad-clip", "10")

# ---------------------------------------------------------------------------------------------
# the paper's rows and claims (paper notes section 1: VGG-16, WIDER FACE val AP in points)

PAPER_AP = {
    "": (92.1, 90.0, 77.5),
    "_ffmm_x1": (92.4, 90.8, 83.5),
    "_ffmm_x6": (93.4, 91.6, 80.9),
    "_fem": (93.4, 92.1, 85.0),
    "_fem_mcdm_b_eta0.10": (94.0, 92.7, 86.0),
    "_fem_mcdm_b_eta0.20": (93.3, 92.2, 85.5),
    "_fem_mcdm_b_eta0.30": (93.7, 92.4, 85.3),
}
PAPER_TABLE = {"": 1, "_ffmm_x1": 1, "_ffmm_x6": 1}  # the rest are Table 2's


@dataclass(frozen=True)
class Claim:
    """The paper's claim that ``row`` beats ``baseline`` (suffixes of a backbone's preset names)."""

    text: str
    row: str
    baseline: str

    def paper_diff(self) -> tuple[float, ...]:
        return tuple(round(a - b, 1) for a, b in zip(PAPER_AP[self.row], PAPER_AP[self.baseline]))


CLAIMS = (
    Claim("FFMM-x1 over UF-SSD (Table 1)", "_ffmm_x1", ""),
    Claim("FFMM-x6 over UF-SSD (Table 1)", "_ffmm_x6", ""),
    Claim("FEM over UF-SSD (Tables 1-2)", "_fem", ""),
    Claim("MCDM-B, eta = 0.10, over UF-SSD+FEM (Table 2)", "_fem_mcdm_b_eta0.10", "_fem"),
    Claim("MCDM-B, eta = 0.20, over UF-SSD+FEM (Table 2)", "_fem_mcdm_b_eta0.20", "_fem"),
    Claim("MCDM-B, eta = 0.30, over UF-SSD+FEM (Table 2)", "_fem_mcdm_b_eta0.30", "_fem"),
)
BACKBONE = "ufssd_light"
DEFAULT_PRESETS = tuple(BACKBONE + s for s in ("", "_ffmm_x1", "_ffmm_x6", "_fem", "_fem_mcdm_b_eta0.10"))

# ---------------------------------------------------------------------------------------------
# the budget every row shares


@dataclass(frozen=True)
class Budget:
    """What every run of the grid shares; ``settings()`` goes into each CSV row and budget.json."""

    images: int
    batch_size: int
    resolution: int
    data_root: str | None
    sources: tuple[str, ...]
    device: str
    threads: int
    workers: int
    checkpoint_every: int
    extra: tuple[str, ...] = ()

    @property
    def iters(self) -> int:
        return math.ceil(self.images / self.batch_size)

    def settings(self) -> dict:
        """Every field as ``budget_<name>`` (the CSV's budget columns)."""
        s = asdict(self)
        s["sources"], s["extra"] = " ".join(self.sources), " ".join(self.extra)
        s["iters"] = self.iters
        return {f"budget_{k}": ("" if v is None else v) for k, v in s.items()}

    def train_args(self, preset: str, seed: int, out: Path) -> list[str]:
        args = ["--preset", preset, "--out", str(out), "--resume", "--seed", str(seed),
                "--iters", str(self.iters), "--batch-size", str(self.batch_size),
                "--resolution", str(self.resolution), "--device", self.device,
                "--threads", str(self.threads), "--workers", str(self.workers),
                "--checkpoint-every", str(self.checkpoint_every), "--no-progress", "--no-tensorboard"]
        if self.data_root:
            args += ["--data-root", self.data_root]
        for spec in self.sources:
            args += ["--source", spec]
        return args + list(self.extra)


@dataclass(frozen=True)
class EvalSet:
    """The dev images, their ground truth and the input policy that scores on them."""

    image_root: Path
    subset: Path
    gt_dir: Path
    device: str = "cpu"
    max_size: int | None = None  # longer side downscaled to at most this (None: original size)

    @property
    def pred_name(self) -> str:
        """The run folder's prediction folder of this policy (they must not mix: existing files
        are kept by ``predict_widerface``)."""
        return "dev_pred" if self.max_size is None else f"dev_pred_max{self.max_size}"

    @property
    def policy(self) -> str:
        return "original size" if self.max_size is None else f"longer side downscaled to at most {self.max_size} px"


# how fast a run goes, not what it trains: these may change between sessions of one grid (the data
# stream depends on the seed and the step only, whatever the workers and threads)
SPEED_ONLY = ("budget_threads", "budget_workers", "budget_checkpoint_every")
CSV_FIELDS = (
    "preset", "seed", "easy", "medium", "hard", "images_seen", "train_s", "eval_s", "machine",
    "eval_images", "eval_subset", "eval_max_size", "finished_utc", "note",
) + tuple(Budget(0, 1, 0, None, (), "", 0, 0, 0).settings())

# ---------------------------------------------------------------------------------------------
# statistics and the verdict rule (pure; points of AP in, intervals and sentences out)


@dataclass(frozen=True)
class Interval:
    """A difference (row - baseline, points of AP) with its two-sided LEVEL t-interval."""

    mean: float
    low: float
    high: float
    n: int
    method: str  # "paired" (same seeds: t on the per-seed differences) or "Welch"
    sd: float | None = None  # of the per-seed differences (paired only)


def diff_interval(row: dict[int, float], base: dict[int, float], level: float = LEVEL) -> Interval | None:
    """Seed -> AP of the row and of its baseline -> the interval of row - baseline, or None with
    fewer than two seeds on a side. Paired when both have the same seeds (same seed = same data
    order and augmentation draws), Welch otherwise."""
    from scipy.special import stdtrit  # the t quantile; scipy.stats takes seconds to import

    if len(row) < 2 or len(base) < 2:
        return None
    q = (1 + level) / 2
    if set(row) == set(base):
        d = [row[s] - base[s] for s in sorted(row)]
        mean, se, df = statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d)), len(d) - 1
        method = "paired"
    else:
        a, b = list(row.values()), list(base.values())
        va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
        mean, se = statistics.fmean(a) - statistics.fmean(b), math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else 1.0
        method = "Welch"
    half = float(stdtrit(df, q)) * se
    sd = se * math.sqrt(len(row)) if method == "paired" else None
    return Interval(mean, mean - half, mean + half, min(len(row), len(base)), method, sd)


def seeds_to_resolve(sd: float, gain: float, level: float = LEVEL, most: int = 10_000) -> int | None:
    """The fewest paired seeds whose interval would be narrower than ``gain`` on each side (so a
    true difference of ``gain`` would lie clear of 0) if the per-seed differences keep spreading
    by ``sd``; None past ``most``."""
    from scipy.special import stdtrit

    q = (1 + level) / 2
    for n in range(2, most + 1):
        if float(stdtrit(n - 1, q)) * sd / math.sqrt(n) < abs(gain):
            return n
    return None


def verdict(intervals: dict[str, Interval | None], paper: dict[str, float]) -> str:
    """The rule, judged on the settings where the paper reports a gain (paper difference > 0):
    "holds" when our interval lies above 0 in at least one of them and below 0 in none;
    "does not hold" when it lies below 0 in at least one; "cannot be told apart at this scale"
    when every interval holds 0; "not measured" when a setting has no interval (< 2 seeds)."""
    claimed = [s for s in SETTINGS if paper[s] > 0]
    if any(intervals.get(s) is None for s in claimed):
        return "not measured"
    if any(intervals[s].high < 0 for s in claimed):
        return "does not hold"
    if any(intervals[s].low > 0 for s in claimed):
        return "holds"
    return "cannot be told apart at this scale"


def claim_sentence(claim: Claim, intervals: dict[str, Interval | None], word: str) -> str:
    """One sentence: the verdict and the numbers behind it."""
    paper = claim.paper_diff()
    if word == "not measured":
        return f"{claim.text}: not measured yet (fewer than 2 finished seeds for the row or its baseline)."
    parts = []
    for s, p in zip(SETTINGS, paper):
        iv = intervals[s]
        parts.append(f"{s} {iv.mean:+.1f} [{iv.low:+.1f}, {iv.high:+.1f}] (paper {p:+.1f})")
    n, method = intervals["hard"].n, intervals["hard"].method
    return (f"{claim.text}: **{word}** — ours {'; '.join(parts)}, {n} seeds, {method}."
            f"{_power_clause(intervals, paper, word)}{_few_seeds_clause(n, word)}")


def _few_seeds_clause(n: int, word: str) -> str:
    """A verdict from two seeds rests on one spread estimate (one degree of freedom when paired):
    a lucky pair of seeds decides it as easily as a real gain."""
    if n >= 3 or word == "cannot be told apart at this scale":
        return ""
    return (f" Only {n} seeds: the interval rests on a single estimate of the seed spread, and a third seed "
            "may overturn this verdict.")


def _power_clause(intervals: dict[str, Interval | None], paper: tuple[float, ...], word: str) -> str:
    """For an undecided paired claim: how many seeds the paper's largest gain would need to show
    at the spread our seeds have."""
    if word != "cannot be told apart at this scale":
        return ""
    setting, gain = max(zip(SETTINGS, paper), key=lambda sp: sp[1])
    iv = intervals[setting]
    if gain <= 0 or iv is None or iv.sd is None:
        return ""
    n = seeds_to_resolve(iv.sd, gain)
    need = f"about {n} paired seeds" if n else "more than 10,000 paired seeds"
    return (f" At the spread of our per-seed differences ({setting}: sd {iv.sd:.1f} points), the paper's "
            f"largest gain ({setting} {gain:+.1f}) would need {need} to be told apart from 0.")


# ---------------------------------------------------------------------------------------------
# the CSV


def read_rows(path: Path) -> list[dict[str, str]]:
    from ufssd.atomic import read_csv

    return read_csv(path)


def write_rows(path: Path, rows: list[dict]) -> None:
    from ufssd.atomic import atomic_write_csv

    atomic_write_csv(path, rows, CSV_FIELDS)


def append_row(path: Path, row: dict) -> None:
    """Add one row to the CSV under an exclusive lock (``path`` + ``.lock``, ``fcntl.flock``), so
    grid processes with disjoint ``--presets`` sharing one ``--out`` never drop each other's rows
    (each rewrite reads the file it replaces)."""
    import fcntl

    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_rows(path, [*read_rows(path), row])


def done_pairs(rows: list[dict[str, str]]) -> set[tuple[str, int]]:
    return {(r["preset"], int(r["seed"])) for r in rows}


# ---------------------------------------------------------------------------------------------
# one pair: train (subprocess, resumable), score, record


def machine_name(device: str) -> str:
    from ufssd.inference.bench import cpu_name

    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_name()} ({os.cpu_count()} logical CPUs)"


def train_pair(preset: str, seed: int, budget: Budget, run_dir: Path, python: str) -> None:
    """``ufssd train --resume`` into ``run_dir`` unless its final weights exist; the machine is
    recorded in ``run_dir/machine.json`` (the one that trains, which may not be the one that scores)."""
    if (run_dir / "final.safetensors").is_file():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    from ufssd.atomic import atomic_write_text

    machines = _machines(run_dir)
    name = machine_name(budget.device)
    atomic_write_text(run_dir / "machine.json", json.dumps(sorted({*machines, name})))
    cmd = [python, "-m", "ufssd", "train", *budget.train_args(preset, seed, run_dir)]
    logger.info("+ %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    if not (run_dir / "final.safetensors").is_file():
        raise RuntimeError(f"{run_dir}: ufssd train ended without final.safetensors")


def _machines(run_dir: Path) -> list[str]:
    path = run_dir / "machine.json"
    return json.loads(path.read_text()) if path.is_file() else []


def training_seconds(log_path: Path) -> float:
    """Training wall time of the steps the final weights went through: ``elapsed_s`` restarts at
    every resume, so the sum of each segment's last value (work lost to a kill is not counted)."""
    total, last = 0.0, 0.0
    for row in read_rows(log_path):
        elapsed = float(row["elapsed_s"])
        if elapsed < last:
            total += last
        last = elapsed
    return total + last


def score_pair(run_dir: Path, evalset: EvalSet, device: str, threads: int) -> dict[str, float]:
    """Dev APs (fractions) of ``run_dir/final.safetensors`` at ``evalset``'s input policy;
    predictions stay in ``run_dir/<evalset.pred_name>``. Scoring is on ``device`` (the CPU by
    default), whatever device trained."""
    from ufssd.evaluation import evaluate
    from ufssd.inference import FaceDetector, predict_widerface
    from ufssd.widerface_files import read_image_list

    names = [f"{n}.jpg" for n in read_image_list(evalset.subset)]
    detector = FaceDetector(weights=run_dir / "final.safetensors", device=device, num_threads=threads,
                            max_size=evalset.max_size)
    pred_dir = run_dir / evalset.pred_name
    predict_widerface(detector, evalset.image_root, names, pred_dir, progress=False)
    result = evaluate(pred_dir, evalset.gt_dir, subset=names)
    return {s: float(result.aps[s]) for s in SETTINGS}


def run_pair(preset: str, seed: int, budget: Budget, evalset: EvalSet, out: Path, python: str,
             trained: dict[str, str] | None = None) -> dict:
    """Train and score one pair; its CSV row. ``trained``: the pair's row at the protocol's input
    size, if any; its ``SPEED_ONLY`` settings (those of the process that trained) replace this
    process's, which may only score."""
    from ufssd.widerface_files import read_image_list

    run_dir = out / "runs" / preset / f"seed{seed}"
    train_pair(preset, seed, budget, run_dir, python)
    cfg = json.loads((run_dir / "config.json").read_text())["train"]
    if cfg["iters"] != budget.iters or cfg["batch_size"] != budget.batch_size:
        raise RuntimeError(f"{run_dir}: trained {cfg['iters']} x {cfg['batch_size']}, not the budget's "
                           f"{budget.iters} x {budget.batch_size}; remove the folder or use another --out")
    t0 = time.perf_counter()
    aps = score_pair(run_dir, evalset, evalset.device, budget.threads)
    return {
        "preset": preset, "seed": seed, **{s: f"{aps[s]:.6f}" for s in SETTINGS},
        "images_seen": cfg["iters"] * cfg["batch_size"],
        "train_s": f"{training_seconds(run_dir / 'train_log.csv'):.1f}",
        "eval_s": f"{time.perf_counter() - t0:.1f}",
        "machine": "; ".join(_machines(run_dir)),
        "eval_images": len(read_image_list(evalset.subset)),
        "eval_subset": _home(evalset.subset),
        "eval_max_size": evalset.max_size or "",
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **budget.settings(),
        **{k: trained[k] for k in SPEED_ONLY if trained and trained.get(k)},
    }


def check_budget(out: Path, budget: Budget, results: Path, max_size: int | None = None) -> None:
    """``OUT/budget.json`` holds the grid's budget (but ``SPEED_ONLY``); another one is refused
    (rows must compare), and so is a results file whose rows have another budget or were scored
    at another input policy (``max_size``; the runs of one ``--out`` may be scored at several,
    each into its own results file)."""
    from ufssd.atomic import atomic_write_text

    path = out / "budget.json"
    wanted = {k: v for k, v in budget.settings().items() if k not in SPEED_ONLY}
    for row in read_rows(results):
        diff = {k: (row.get(k), v) for k, v in wanted.items() if row.get(k) != str(v)}
        if (row.get("eval_max_size") or "") != str(max_size or ""):
            diff["eval_max_size"] = (row.get("eval_max_size") or None, max_size)
        if diff:
            raise SystemExit(f"{results}: the row of {row['preset']} seed {row['seed']} has another budget {diff} "
                             "(stored, asked); use another --results")
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != json.loads(json.dumps(wanted)):
            diff = {k: (stored.get(k), v) for k, v in wanted.items() if stored.get(k) != v}
            raise SystemExit(f"{path}: this grid was run with another budget {diff} (stored, asked); "
                             "use another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(wanted, indent=1, sort_keys=True))


def train_grid(presets, seeds, budget: Budget, out: Path, python: str) -> None:
    """``--no-eval``: train every pair (a lent GPU, where the dev images are not), score later."""
    check_budget(out, budget, Path(os.devnull))
    for seed in seeds:
        for preset in presets:
            train_pair(preset, seed, budget, out / "runs" / preset / f"seed{seed}", python)


def run_grid(presets, seeds, budget: Budget, evalset: EvalSet, out: Path, python: str, csv_path: Path,
             score_only: bool = False, trained_csv: Path = RESULTS) -> list[str]:
    """Every pair without a row in ``csv_path``, in seed-major order (a partial grid has whole
    seeds); the pairs that failed. ``score_only``: only the pairs whose run has finished (another
    input policy for runs already scored; nothing trains). ``trained_csv``: the record of how the
    runs trained (the protocol's rows), whose speed settings a pair's row here repeats."""
    check_budget(out, budget, csv_path, evalset.max_size)
    same = csv_path.resolve() == trained_csv.resolve()
    trained = {} if same else {(r["preset"], int(r["seed"])): r for r in read_rows(trained_csv)}
    failed = []
    for seed in seeds:
        for preset in presets:
            rows = read_rows(csv_path)
            if (preset, seed) in done_pairs(rows):
                continue
            if score_only and not (out / "runs" / preset / f"seed{seed}" / "final.safetensors").is_file():
                logger.info("%s seed %d: no finished run in %s, not scored (--score-only)", preset, seed, out)
                continue
            try:
                row = run_pair(preset, seed, budget, evalset, out, python, trained.get((preset, seed)))
            except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
                logger.error("%s seed %d failed: %s", preset, seed, exc)
                failed.append(f"{preset}/seed{seed}")
                continue
            append_row(csv_path, row)
            logger.info("%s seed %d: easy %s medium %s hard %s", preset, seed, row["easy"], row["medium"], row["hard"])
    return failed


# ---------------------------------------------------------------------------------------------
# rendering docs/ablation.md from the CSV only

HEADER = """\
# Does feature-map masking help? The paper's Tables 1-2 at our scale

Written by `scripts/ablation.py` from `{csv}` (re-render: `python scripts/ablation.py
--render-only{rerender}`); do not edit by hand (issue 18). Every figure below comes from that CSV and,
for Table 3, from `{eff}`.

## How to run the grid

- **CPU (this machine)**: `python scripts/ablation.py` trains the default grid
  ({presets}) x seeds 0, 1, 2 on `~/widerface-all` (train + `val_train_images.txt`,
  4,885 images; the dev set never trains) at {res} px crops, batch {batch}, {images:,} images
  seen per run ({iters:,} steps, the paper's schedule scaled to them, lr 1e-2 at batch 32 and a
  gradient clip of 10 as the default model's CPU stages: at the paper's 1e-3 a first UF-SSD run
  reached dev AP 0.05), and scores each run on
  the 1,045-image dev set (`--presets` adds the eta 0.20 / 0.30 rows). Run folders
  (checkpoints, predictions) go to `~/ufssd_runs/ablation`, outside the work tree; each
  finished pair adds a row to `{csv}`, which is committed. Run the same command again after an
  interruption: finished pairs are skipped and a killed run resumes from its last checkpoint,
  if the machine kept its home folder (a new machine does not: then a run must end within the
  session that starts it; the rows are safe in the repository). A probe of
  `ufssd_light_ffmm_x1` at this budget ran at about 20 images/s (2 threads, 1 loader worker,
  load average ~1.5): about 50 minutes per run, more for the FEM rows (their forward pass
  takes about twice as long), so 13-20 hours for the 15 runs of the default grid. Two
  processes with disjoint `--presets`, `--threads 1 --workers 1` each, share the two cores
  better (11-14 images/s each on the AMD EPYC machine of the seed-0 rows, 19-23 on the Intel Xeon
  one of the seed-1 rows: 53-60 minutes of training and 4 of scoring per UF-SSD or FFMM-x1 run,
  71 of training and 12 of scoring per FEM run at 12-16 images/s);
  they share one `--out` and one results file, and each row is added under a file lock.
- **A lent GPU** (the `device` machine, `PYTHONPATH=src python3`): `python3
  scripts/ablation.py --device cuda --batch-size 64 --resolution 640 --budget-images 300000
  --workers 15 --threads 4 --data-root .device_data/widerface --out $OUT/ablation_gpu
  --no-eval` on the packed data of `scripts/pack_training_data.py` (the dev images do not
  travel; the runs come back with `$OUT`, read-only); then copy them to
  `~/ufssd_runs/ablation_gpu` and run the same command here with that `--out`, without
  `--no-eval` and with `--eval-root ~/widerface-all --results docs/ablation_gpu_runs.csv --doc
  docs/ablation_gpu.md` (another budget, another record): finished runs are only scored, on the CPU. At the 545
  images/s measured there, one 300,000-image run takes about 9 minutes: a 15-minute lease
  trains one run, not the grid.
- Neither is the paper's condition: no ImageNet weights, 4,885 training images instead of
  12,880, the light backbone instead of VGG-16, far fewer images seen. The paper's numbers are
  shown beside ours for their direction, not their size.
- The FEM rows collapse at original size because their coarsest level (stride 128, 3 x 3 cells in
  a 320 px crop) fires on background: with that level silenced in every row, FEM and FEM+MCDM-B
  come out close to UF-SSD ([ablation_fem_level5.md](ablation_fem_level5.md), `scripts/level_confidence.py
  --silence-level 5`; a test chosen after seeing the collapse, outside the verdicts below).
- The VGG-16 rows of Table 1 (presets `ufssd_vgg16`, `ufssd_vgg16_ffmm_x1`, `ufssd_vgg16_ffmm_x6`)
  are not trained at any budget here: this CPU trains `ufssd_vgg16_ffmm_x1` at 0.12 images/s at
  640 px (README, training throughput), so even at a quarter of the pixels one 60,000-image run
  would take more than a day, and 9 runs more than a week. They wait for a GPU lease (the command
  above with `--presets ufssd_vgg16 ufssd_vgg16_ffmm_x1 ufssd_vgg16_ffmm_x6`); their forward
  passes are measured (Efficiency, below).

## The rule

Differences are row minus baseline in points of AP, per setting, with a {level:.0%} t-interval from
the seeds: on the per-seed differences when both rows have the same seeds (same seed = same data
order and augmentation), Welch's otherwise. A claim is judged on the settings where the paper
reports a gain: it **holds** when our interval lies above 0 in at least one of them and below 0
in none; it **does not hold** when it lies below 0 in at least one; otherwise it **cannot be told
apart at this scale**. (No correction for testing three settings and several claims.)
"""


def _points(rows: list[dict[str, str]], preset: str, setting: str) -> dict[int, float]:
    return {int(r["seed"]): 100 * float(r[setting]) for r in rows if r["preset"] == preset}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.1f}{std}"


def _rows_table(rows: list[dict[str, str]], presets: list[str]) -> list[str]:
    out = ["| preset | paper (VGG-16) E / M / H | ours E | ours M | ours H | seeds | images seen | train h / run |",
           "|---|---|---|---|---|---|---|---|"]
    for p in presets:
        mine = [r for r in rows if r["preset"] == p]
        suffix = p[len(BACKBONE):] if p.startswith(BACKBONE) else None
        paper = " / ".join(f"{v:.1f}" for v in PAPER_AP[suffix]) if suffix in PAPER_AP else "-"
        cells = [_mean_std(list(_points(rows, p, s).values())) for s in SETTINGS]
        seeds = ", ".join(sorted((r["seed"] for r in mine), key=int))
        images = ", ".join(sorted({r["images_seen"] for r in mine}))
        hours = f"{statistics.fmean(float(r['train_s']) for r in mine) / 3600:.2f}" if mine else "-"
        out.append(f"| `{p}` | {paper} | {' | '.join(cells)} | {seeds or '-'} | {images or '-'} | {hours} |")
    return out


def claim_intervals(rows: list[dict[str, str]], claim: Claim) -> dict[str, Interval | None]:
    row, base = BACKBONE + claim.row, BACKBONE + claim.baseline
    return {s: diff_interval(_points(rows, row, s), _points(rows, base, s)) for s in SETTINGS}


def _budget_lines(rows: list[dict[str, str]]) -> list[str]:
    keys = [k for k in CSV_FIELDS if k.startswith("budget_")]
    budgets = {tuple(r.get(k, "") for k in keys) for r in rows}
    lines = []
    for b in sorted(budgets):
        lines.append("- " + ", ".join(f"{k[len('budget_'):]} `{v}`" for k, v in zip(keys, b)))
    machines = sorted({r["machine"] for r in rows})
    return lines + [f"- trained on: {m}" for m in machines]


EFFICIENCY_NOTE = """\
## Efficiency (Table 3)

The paper (GTX 1080Ti, mean per WIDER val image) measured UF-SSD (VGG-16) at 55.50 ms and
UF-SSD+FFMM-x1 at 63.19 ms: FFMM-x1 is *slower* in its own table; its claim (§4.5) is that the
total stays similar because fewer low-quality candidates reach NMS. Measured by
`scripts/efficiency.py` (`{csv}`): ms per image (pre-processing, network, decoding, NMS, total),
candidates with score >= 0.01 and those reaching NMS (capped at `pre_nms_top_k` = 5,000), the
FFMM mask's kept share per masked level, and dev APs of the same detections; `skip` = anchors of
masked cells dropped before NMS (`skip_masked_anchors`), Th_Mask = `model.mask_threshold`.
The VGG-16 presets' forward passes with and without FFMM are in the README's table of every
preset (`benchmarks/bench_forward.py`).
"""


EFFICIENCY_TODO = """\
Not measured yet. Once the grid has run: `python scripts/efficiency.py --weights
uf-ssd@seed0=~/ufssd_runs/ablation/runs/ufssd_light/seed0/final.safetensors --weights
ffmm-x1@seed0=~/ufssd_runs/ablation/runs/ufssd_light_ffmm_x1/seed0/final.safetensors` (on an
idle machine; `--weights default` adds the shipped model), then `--render-only`.
"""


def _efficiency_lines(rows: list[dict[str, str]], csv_path: Path) -> list[str]:
    lines = [EFFICIENCY_NOTE.format(csv=_home(csv_path))]
    if not rows:
        return lines + [EFFICIENCY_TODO]
    meta = sorted({f"{r['images']} dev images, batch 1, {r['threads']} threads, {r['machine']}"
                   + (f", times the median of {r['repeats']} interleaved passes" if r.get("repeats") else ", one pass")
                   for r in rows})
    loads = [float(r["load"]) for r in rows if r.get("load")]
    load = (f" (load average {min(loads):.1f}-{max(loads):.1f}: times are inflated when it exceeds the threads)"
            if loads else "")
    lines.append("Measured on " + "; ".join(meta) + load + ".\n")
    lines.append("| model | preset | skip | Th_Mask | pre | net | decode | NMS | total ms (passes) | >= 0.01 | to NMS "
                 "| kept share per level | E / M / H |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        aps = " / ".join(f"{100 * float(r[s]):.1f}" for s in SETTINGS)
        cells = [r["label"], f"`{r['preset']}`", "yes" if r["skip_masked_anchors"] == "1" else "no",
                 r["mask_threshold"], *(r[k] for k in ("pre_ms", "net_ms", "decode_ms", "nms_ms")),
                 r["total_ms"] + (f" ({_passes(r)})" if _passes(r) else ""),
                 f"{float(r['above_001']):,.0f}", f"{float(r['to_nms']):,.0f}", _kept(r), aps]
        lines.append("| " + " | ".join(cells) + " |")
    labels = dict.fromkeys(r["label"] for r in rows)
    notes = [f"- Note: {n}." for n in dict.fromkeys(r["note"] for r in rows if r.get("note"))]
    return (lines + ["", _cap_sentence(rows)] + [_skip_sentence(rows, label) for label in labels]
            + _with_without_sentences(rows) + notes)


def _with_without_sentences(rows: list[dict[str, str]]) -> list[str]:
    """Table 3's comparison proper: a model without FFMM against one with it, trained alike (the
    labels ``<row>@<run>`` share their ``@<run>``), the FFMM one with its masked anchors dropped
    at its own Th_Mask (the paper's inference)."""
    plain = {r["label"].partition("@")[2]: r for r in rows
             if "@" in r["label"] and "ffmm" not in r["preset"] and r["skip_masked_anchors"] == "0"}
    out = []
    for r in rows:
        run = r["label"].partition("@")[2]
        base = plain.get(run)
        if base is None or "ffmm" not in r["preset"] or r["skip_masked_anchors"] != "1":
            continue
        if r["mask_threshold"] != _own_threshold(rows, r["label"]):
            continue
        d = {k: float(r[k]) - float(base[k]) for k in ("net_ms", "decode_ms", "nms_ms", "total_ms")}
        out.append(
            f"- With and without FFMM ({run}): `{r['preset']}` with its masked anchors dropped at Th_Mask = "
            f"{r['mask_threshold']} against `{base['preset']}`: {float(r['above_001']):,.0f} against "
            f"{float(base['above_001']):,.0f} candidates >= 0.01, {float(r['to_nms']):,.0f} against "
            f"{float(base['to_nms']):,.0f} reaching NMS; network {d['net_ms']:+.1f} ms, decoding "
            f"{d['decode_ms']:+.1f} ms, NMS {d['nms_ms']:+.1f} ms, total {d['total_ms']:+.1f} ms per image "
            f"({float(r['total_ms']):.1f} against {float(base['total_ms']):.1f}; the paper: +7.7 ms, 63.19 "
            f"against 55.50).{_overlap_clause(r, base)}")
    return out


def _passes(r: dict[str, str]) -> str:
    """The fastest and slowest pass of a setting, "lo-hi" ms; "" for a row of a single pass."""
    return f"{r['total_min_ms']}-{r['total_max_ms']}" if r.get("total_min_ms") and r.get("total_max_ms") else ""


def _overlap_clause(a: dict[str, str], b: dict[str, str]) -> str:
    """Whether two settings' total times can be told apart: their passes' ranges must not overlap."""
    if not (_passes(a) and _passes(b)):
        return ""
    (lo_a, hi_a), (lo_b, hi_b) = ((float(r["total_min_ms"]), float(r["total_max_ms"])) for r in (a, b))
    if hi_a < lo_b or hi_b < lo_a:
        return f" Their passes do not overlap ({_passes(a)} against {_passes(b)} ms): the difference is real on this machine."
    return (f" Their passes overlap ({_passes(a)} against {_passes(b)} ms): the total times cannot "
            "be told apart on this machine.")


def _own_threshold(rows: list[dict[str, str]], label: str) -> str | None:
    """A model's own Th_Mask: that of its row with nothing skipped (the network as trained)."""
    return next((r["mask_threshold"] for r in rows if r["label"] == label and r["skip_masked_anchors"] == "0"), None)


def _cap_sentence(rows: list[dict[str, str]]) -> str:
    """How often NMS gets the full ``pre_nms_top_k``: then skipping masked anchors cannot shorten it."""
    from ufssd.config import InferenceConfig

    cap = InferenceConfig().pre_nms_top_k
    capped = sum(float(r["to_nms"]) >= 0.99 * cap for r in rows)
    return (f"- In {capped} of {len(rows)} settings NMS receives (on average) the full `pre_nms_top_k` = "
            f"{cap:,} candidates: there NMS does the same work with or without the mask, and FFMM can "
            "only shorten the steps before it.")


def _kept(row: dict[str, str]) -> str:
    kept = [f"{l}: {row[f'kept_l{l}']}" for l in range(6) if row.get(f"kept_l{l}")]
    return ", ".join(kept) or "-"


def _skip_sentence(rows: list[dict[str, str]], label: str) -> str:
    """What dropping the masked anchors changes at the model's own Th_Mask (the paper's 0.01)."""
    mine = [r for r in rows if r["label"] == label]
    plain = next((r for r in mine if r["skip_masked_anchors"] == "0"), None)
    skip = next((r for r in mine if r["skip_masked_anchors"] == "1" and plain
                 and r["mask_threshold"] == plain["mask_threshold"]), None)
    if plain is None or skip is None:
        return f"- {label}: no FFMM, nothing to skip."
    share = 1 - float(skip["above_001"]) / max(float(plain["above_001"]), 1.0)
    d = {k: float(skip[k]) - float(plain[k]) for k in ("to_nms", "nms_ms", "total_ms")}
    return (f"- {label}, Th_Mask = {plain['mask_threshold']}: dropping the masked anchors removes {share:.0%} of "
            f"the candidates >= 0.01 and changes those reaching NMS by {d['to_nms']:+,.0f}, the NMS time by "
            f"{d['nms_ms']:+.1f} ms and the total by {d['total_ms']:+.1f} ms per image.")


def render(rows: list[dict[str, str]], out: Path, csv_path: Path, efficiency: Path | None = None,
           doc: Path | None = None) -> str:
    """The whole of docs/ablation.md (or ``doc``), from the CSV rows only."""
    seen = {r["preset"] for r in rows}
    paper_order = [p for p in (BACKBONE + s for s in PAPER_AP) if p in seen]  # eta 0.10, 0.20, 0.30
    presets = list(dict.fromkeys([*DEFAULT_PRESETS, *paper_order, *(r["preset"] for r in rows)]))
    efficiency = efficiency or out / "efficiency.csv"
    rerender = "".join(f" {flag} {_home(path)}" for flag, path, default in
                       (("--results", csv_path, RESULTS), ("--doc", doc, REPO / "docs" / "ablation.md"))
                       if path is not None and Path(path).resolve() != default.resolve())
    text = [HEADER.format(out=_home(out), csv=_home(csv_path), eff=_home(efficiency), rerender=rerender, presets=", ".join(f"`{p}`" for p in DEFAULT_PRESETS),
                          level=LEVEL, res=CPU_RESOLUTION, batch=CPU_BATCH, images=CPU_IMAGES,
                          iters=math.ceil(CPU_IMAGES / CPU_BATCH))]
    sets = sorted({f"{r.get('eval_subset') or '?'}, {r.get('eval_images') or '?'} images" for r in rows})
    policies = sorted({EvalSet(Path(), Path(), Path(), max_size=int(r["eval_max_size"]) if r.get("eval_max_size") else None).policy
                       for r in rows})
    text.append(f"## Results (AP in points on {' / '.join(sets) or 'the dev set'}, images at "
                f"{' / '.join(policies) or 'original size'}; mean ± std over seeds)\n")
    if not rows:
        text.append("No finished run yet: the grid has not been run (see above).\n")
    else:
        text.append("Budget of every row:\n")
        text.append("\n".join(_budget_lines(rows)) + "\n")
    text.append("\n".join(_rows_table(rows, presets)) + "\n")
    text.append(_policy_section(rows))
    text.append("## The claims\n")
    for claim in CLAIMS:
        intervals = claim_intervals(rows, claim)
        word = verdict(intervals, dict(zip(SETTINGS, claim.paper_diff())))
        text.append(f"- {claim_sentence(claim, intervals, word)}")
    text.append("")
    notes = [f"- {r['preset']} seed {r['seed']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        text += ["Notes on single rows:\n", "\n".join(notes) + "\n"]
    if {r.get("eval_max_size") or "" for r in rows} <= {""}:
        text += _efficiency_lines(read_rows(efficiency), efficiency)
    else:  # Table 3 times the protocol's inference: one page holds it
        text += ["## Efficiency (Table 3)\n", "At the protocol's input size: [ablation.md](ablation.md#efficiency-table-3).\n"]
    return "\n".join(text) + "\n"


SECOND_POLICY = 640  # the paper's training size: the second look at every run (docs/ablation_max640.md)


def _policy_section(rows: list[dict[str, str]]) -> str:
    """Which input size scores the rows, and where the other look at the same runs is."""
    sizes = {r.get("eval_max_size") or "" for r in rows}
    command = (f"`python scripts/ablation.py --score-only --eval-max-size {SECOND_POLICY} --results "
               f"docs/ablation_max{SECOND_POLICY}_runs.csv --doc docs/ablation_max{SECOND_POLICY}.md`")
    if sizes <= {""}:
        return (
            "The input size: every row above is scored as the protocol says, each image at its original "
            "size (the WIDER val images are 1,024 px wide, about three times the crops of the budget). "
            "Rows trained on small crops may pay for that gap, and not all alike: the same runs scored with "
            f"the longer side at most {SECOND_POLICY} px (the paper's training size) are in "
            f"[ablation_max{SECOND_POLICY}.md](ablation_max{SECOND_POLICY}.md) ({command}). That size was "
            "chosen after the FEM rows were seen to fail at the original size: the second page is a second "
            "look at the same runs, not a protocol tuned on the dev set.\n")
    return (
        "The input size: this page scores the runs of [ablation.md](ablation.md) with each image's longer "
        f"side downscaled to at most {' / '.join(sorted(sizes - {''}))} px ({command}), not at the "
        "original size of the protocol. The size was chosen after the FEM rows were seen to fail at the "
        "original size; it is a second look at the same runs, not a protocol tuned on the dev set: "
        "compare rows within a page, never across pages.\n")


def _home(path: Path) -> str:
    """``path`` as the docs show it: relative to the repository, or with ``~`` for the home."""
    if path.resolve().is_relative_to(REPO):
        return path.resolve().relative_to(REPO).as_posix()
    home = str(Path.home())
    s = str(path)
    return "~" + s[len(home):] if s.startswith(home + os.sep) else s


# ---------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    extra = argv[argv.index("--") + 1 :] if "--" in argv else list(DEFAULT_EXTRA)
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="arguments after -- go to every `ufssd train` call (default: " + " ".join(DEFAULT_EXTRA) + ")")
    p.add_argument("--out", type=Path, default=Path("~/ufssd_runs/ablation").expanduser(),
                   help="run folders and budget.json, outside the work tree (default ~/ufssd_runs/ablation)")
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="the CSV of finished pairs, committed (default docs/ablation_runs.csv)")
    p.add_argument("--trained-results", type=Path, default=RESULTS,
                   help="the rows at original size, which record how each run trained; a pair scored into "
                        "another --results takes its threads and workers from there (default "
                        "docs/ablation_runs.csv)")
    p.add_argument("--efficiency", type=Path, default=EFFICIENCY,
                   help="scripts/efficiency.py's CSV to render (default docs/ablation_efficiency.csv)")
    p.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), help="rows (default: the issue's five)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of every row (default 0 1 2)")
    p.add_argument("--budget-images", type=int, default=CPU_IMAGES,
                   help=f"images seen per run (default {CPU_IMAGES:,})")
    p.add_argument("--batch-size", type=int, default=CPU_BATCH, help=f"total batch (default {CPU_BATCH})")
    p.add_argument("--resolution", type=int, default=CPU_RESOLUTION,
                   help=f"square training crop side (default {CPU_RESOLUTION})")
    p.add_argument("--data-root", default=str(Path("~/widerface-all").expanduser()),
                   help="training root (default sources: train + val_train_images.txt; dev never trains)")
    p.add_argument("--source", action="append", default=[], help="ufssd train --source (replaces the default)")
    p.add_argument("--device", default="cpu", help="training device (default cpu; cuda on a lent GPU)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of training and scoring (default 2)")
    p.add_argument("--workers", type=int, default=1, help="loader workers per run (default 1)")
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints (default 200)")
    p.add_argument("--eval-root", type=Path, help="dev images' WIDER root (default: --data-root)")
    p.add_argument("--eval-subset", type=Path, help="dev image list (default: EVAL_ROOT/dev_images.txt)")
    p.add_argument("--gt", type=Path, default=SHARED / "data" / "widerface" / "eval_tools",
                   help="folder of wider_*_val.mat")
    p.add_argument("--eval-device", default="cpu", help="device that scores the runs (default cpu)")
    p.add_argument("--eval-max-size", type=int,
                   help="score with the longer side downscaled to at most this many pixels (default: original "
                        "size, the protocol); its rows need their own --results")
    p.add_argument("--no-eval", action="store_true", help="train only (score later, where the dev images are)")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "ablation.md", help="the page to render")
    p.add_argument("--render-only", action="store_true", help="only render --doc from --results")
    p.add_argument("--score-only", action="store_true",
                   help="score the finished runs that have no row in --results; train nothing")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs `ufssd train`")
    args = p.parse_args(argv)
    args.extra = extra
    return args


def _budget(args: argparse.Namespace) -> Budget:
    return Budget(args.budget_images, args.batch_size, args.resolution, None if args.source else args.data_root,
                  tuple(args.source), args.device, args.threads, args.workers, args.checkpoint_every,
                  tuple(args.extra))


def _evalset(args: argparse.Namespace) -> EvalSet:
    from ufssd.widerface_files import DEV_LIST, image_folder

    root = args.eval_root or Path(args.data_root)
    return EvalSet(image_folder(root, "val"), args.eval_subset or root / DEV_LIST, args.gt, args.eval_device,
                   args.eval_max_size)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out.expanduser()
    failed = []
    if not args.render_only:
        budget = _budget(args)
        if args.no_eval:
            train_grid(args.presets, args.seeds, budget, out, args.python)
            return 0
        failed = run_grid(args.presets, args.seeds, budget, _evalset(args), out, args.python, args.results,
                          args.score_only, args.trained_results)
    from ufssd.atomic import atomic_write_text

    atomic_write_text(args.doc, render(read_rows(args.results), out, args.results, args.efficiency, doc=args.doc))
    logger.info("wrote %s", args.doc)
    if failed:
        logger.error("failed pairs: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
