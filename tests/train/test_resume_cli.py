"""Exact resume through ``ufssd train`` on the path every long run takes: loader workers
(``--workers 2``, the CLI default, started with forkserver) and periodic evaluation
(``--eval-every``). k steps, then ``--resume`` to 2k, against 2k steps straight: the weights, the
loss columns of ``train_log.csv`` and ``eval_history.csv`` are bit-identical.

The run is made to depend on every piece of state a resume must restore: augmentation on (the
data stream's position and epoch), MCDM on (it draws from the global torch RNG in each step), a
warm-up and a milestone (the schedule), momentum (the optimizer), and an evaluation before the
stop (it must not disturb the generators). It starts from the shipped weights so that the
evaluations give real, non-zero APs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ufssd
from ufssd.cli import main
from ufssd.train import load_checkpoint

pytestmark = pytest.mark.slow

DEFAULT_WEIGHTS = Path(ufssd.__file__).resolve().parent / "weights" / "default.safetensors"
TRAIN_IMAGES = [
    "0--Parade/0_Parade_marchingband_1_1038.jpg",
    "1--Handshaking/1_Handshaking_Handshaking_1_234.jpg",
    "13--Interview/13_Interview_Interview_On_Location_13_536.jpg",
]
# two of the smallest dev-slice images (1024 x 369 and 1024 x 446), both with easy faces
EVAL_IMAGES = ["0--Parade/0_Parade_marchingband_1_653.jpg", "0--Parade/0_Parade_marchingband_1_476.jpg"]
K = 3  # stop after K steps, resume to 2K; evaluations at steps 2, 4 and 6
LOSS_COLUMNS = ("step", "lr", "loss", "cls", "loc", "mask")  # the rest are timings


def _args(widerface_dir: Path, lists: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--preset", "ufssd_light_ffmm_x1", "--data-root", str(widerface_dir),
        "--source", f"train:{lists / 'train.txt'}", "--init", str(DEFAULT_WEIGHTS),
        "--set", "model.mcdm_mode=drop", "--set", "model.mcdm_eta=0.5", "--set", "train.lr_milestones=[0.5]",
        "--iters", str(2 * K), "--batch-size", "2", "--resolution", "128", "--warmup", "2", "--lr", "0.02",
        "--workers", "2", "--threads", "1", "--checkpoint-every", "1000", "--log-every", "1",
        "--eval-every", "2", "--eval-subset", str(lists / "eval.txt"),
        "--out", str(out), "--no-progress", "--no-tensorboard", *extra,
    ]  # fmt: skip


def _rows(path: Path, columns: tuple[str, ...] | None = None) -> list[tuple[str, ...]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = columns or tuple(rows[0])
    return [tuple(r[c] for c in columns) for r in rows]


def test_cli_resume_with_workers_and_eval_is_bit_exact(widerface_dir, tmp_path):
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"{DEFAULT_WEIGHTS} missing")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("\n".join(TRAIN_IMAGES) + "\n")
    (lists / "eval.txt").write_text("\n".join(EVAL_IMAGES) + "\n")
    straight, split = tmp_path / "straight", tmp_path / "split"

    assert main(_args(widerface_dir, lists, straight)) == 0
    assert main(_args(widerface_dir, lists, split, "--stop-at", str(K))) == 0
    assert load_checkpoint(split / "last.pt")["step"] == K and not (split / "final.safetensors").exists()
    assert main(_args(widerface_dir, lists, split, "--resume")) == 0

    a, b = load_file(straight / "final.safetensors"), load_file(split / "final.safetensors")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"
    ck_a, ck_b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert ck_a["step"] == ck_b["step"] == 2 * K
    for part in ("optimizer", "scheduler", "rng", "extra"):
        assert _state_equal(ck_a[part], ck_b[part]), part

    log_a = _rows(straight / "train_log.csv", LOSS_COLUMNS)
    log_b = _rows(split / "train_log.csv", LOSS_COLUMNS)
    assert [r[0] for r in log_a] == [str(s) for s in range(1, 2 * K + 1)]
    assert log_a == log_b
    assert len({r[2] for r in log_a}) > 1  # the loss moved: the rows are not trivially equal

    eval_a, eval_b = _rows(straight / "eval_history.csv"), _rows(split / "eval_history.csv")
    assert [r[0] for r in eval_a] == ["2", "4", "6"]
    assert eval_a == eval_b
    assert all(0.0 < float(r[1]) <= 1.0 for r in eval_a), eval_a  # real APs (easy), not NaN or 0
    assert load_checkpoint(straight / "best.pt")["step"] == load_checkpoint(split / "best.pt")["step"]


def _state_equal(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_state_equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(_state_equal(p, q) for p, q in zip(x, y))
    return x == y
