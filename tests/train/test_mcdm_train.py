"""MCDM through the trainer: ``train()`` hands the ground-truth masks to the model, so MCDM's eta
changes what one step learns, and evaluation runs without it.

From the same weights (the shipped model's) and the same batch, one step with eta = 1 (every
face cell of level 0 dropped) and one with eta = 0 (MCDM the identity) give different weights;
had the trainer not passed ``gt_masks``, MCDM would be the identity in both and the weights
equal. With the learning rate at 0 the two runs keep the same weights, and then their periodic
evaluations agree exactly: MCDM is off in eval.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ufssd
from ufssd.presets import get_preset, replace
from ufssd.train import EvalSpec, train

DEFAULT_WEIGHTS = Path(ufssd.__file__).resolve().parent / "weights" / "default.safetensors"
TRAIN = ["0--Parade/0_Parade_marchingband_1_1038", "1--Handshaking/1_Handshaking_Handshaking_1_234"]
# two small dev-slice images (1024 x 369 and 1024 x 446) with easy faces
EVAL = ("0--Parade/0_Parade_marchingband_1_653", "0--Parade/0_Parade_marchingband_1_476")


@pytest.fixture(scope="module")
def samples(widerface_dir):
    from ufssd.data import read_split

    return read_split(widerface_dir, "train", subset=TRAIN)


def _run(samples, out: Path, eta: float, lr: float, eval_spec=None):
    cfg = replace(
        get_preset("ufssd_light_ffmm_x1"),
        model={"mcdm_mode": "drop", "mcdm_eta": eta, "mcdm_levels": (0,)},
        train={"iters": 1, "batch_size": 2, "resolution": 256, "lr": lr, "warmup_iters": 0, "checkpoint_every": 1000},
    )
    return train(
        cfg, samples, out, init=DEFAULT_WEIGHTS, workers=0, augment=False, progress=False, tensorboard=False,
        eval_spec=eval_spec, log_every=1,
    )  # fmt: skip


def _differing(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


def test_mcdm_eta_changes_the_training_step(samples, tmp_path):
    dropped = _run(samples, tmp_path / "eta1", eta=1.0, lr=0.1)
    kept = _run(samples, tmp_path / "eta0", eta=0.0, lr=0.1)
    again = _run(samples, tmp_path / "eta0_again", eta=0.0, lr=0.1)
    assert not _differing(kept.model, again.model)  # the step itself is deterministic
    changed = _differing(dropped.model, kept.model)
    # the dropped level-0 face cells reach level 0's head (and, through the gradient, the backbone)
    assert any(k.startswith("heads.0.") for k in changed), (
        f"eta 1 and eta 0 gave the same level-0 head ({len(changed)} tensors differ): MCDM got no ground-truth masks"
    )
    assert dropped.history[0]["loss"] != kept.history[0]["loss"]


def test_mcdm_is_off_in_evaluation(samples, widerface_dir, tmp_path):
    spec = EvalSpec(
        image_root=widerface_dir / "WIDER_val" / "images", names=EVAL, gt_dir=widerface_dir / "eval_tools", every=1
    )
    runs = [_run(samples, tmp_path / f"eta{eta:g}", eta=eta, lr=0.0, eval_spec=spec) for eta in (1.0, 0.0)]
    assert not _differing(runs[0].model, runs[1].model)  # lr 0: the same weights (BN statistics too)
    history = [(tmp_path / f"eta{eta:g}" / "eval_history.csv").read_text() for eta in (1.0, 0.0)]
    assert history[0] == history[1]
    assert runs[0].best == runs[1].best and runs[0].best[0] > 0.0  # real, non-zero hard AP
