"""The trainer's periodic evaluation leaves every generator the training uses as it found it (so a
run with ``--eval-every`` trains exactly as one without), and the model in its training mode."""

from __future__ import annotations

import torch

from ufssd.model import build_model
from ufssd.train import EvalSpec
from ufssd.train.checkpoint import rng_state
from ufssd.train.periodic_eval import evaluate_model


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_evaluation_leaves_the_generators_and_the_mode_alone(widerface_dir, tmp_path):
    model = build_model("ufssd_light_ffmm_x1").train()
    spec = EvalSpec(widerface_dir / "WIDER_val" / "images", ("0--Parade/0_Parade_marchingband_1_653",),
                    widerface_dir / "eval_tools", every=1)  # fmt: skip
    torch.manual_seed(123)
    before = rng_state()
    aps = evaluate_model(model, spec, tmp_path, step=7)
    assert aps is not None and set(aps) == {"easy", "medium", "hard", "mean"}
    assert _equal(rng_state(), before), "the evaluation moved a generator the training draws from"
    assert model.training and not (tmp_path / "eval_tmp").exists()
