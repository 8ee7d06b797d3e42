"""The learning-rate schedule and the ``--set`` overrides."""

from __future__ import annotations

import pytest
import torch

from ufssd.config import TrainConfig
from ufssd.presets import get_preset
from ufssd.train.overrides import apply_overrides, parse_value
from ufssd.train.schedule import WarmupMultiStep, effective_warmup, milestone_steps, scaled_lr


def test_paper_schedule_milestones_and_scaling():
    cfg = TrainConfig()  # 200k iterations, milestones 0.5 / 0.75 / 0.9
    assert milestone_steps(cfg) == [100_000, 150_000, 180_000]
    assert scaled_lr(cfg) == pytest.approx(1e-3)
    small = TrainConfig(batch_size=8, iters=1000)
    assert scaled_lr(small) == pytest.approx(2.5e-4)  # 1e-3 * 8 / 32
    assert milestone_steps(small) == [500, 750, 900]


def test_warmup_is_clipped_for_short_runs_only():
    assert effective_warmup(TrainConfig()) == 1000  # 0.5 % of 200k: untouched
    assert effective_warmup(TrainConfig(iters=2000)) == 100  # 5 % of the run
    assert effective_warmup(TrainConfig(iters=2000), max_fraction=None) == 1000


def test_factor_values():
    f = WarmupMultiStep(warmup=4, milestones=[10, 20], gamma=0.1)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(9) == 1.0
    assert f(10) == pytest.approx(0.1)
    assert f(19) == pytest.approx(0.1)
    assert f(20) == pytest.approx(0.01)


def test_lambda_lr_state_round_trip():
    def make():
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, WarmupMultiStep(2, [3], 0.1))

    opt, sched = make()
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.1, 0.1])
    opt2, sched2 = make()
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert sched2.last_epoch == 5


def test_overrides():
    cfg = get_preset("ufssd_light")
    out = apply_overrides(
        cfg,
        [
            "train.crop_min=0.5",
            "model.channels=[16,32,64]",
            "train.photometric=false",
            "model.ffmm_levels=0",
            "train.lr=1",
            "model.backbone=light",
            "name=mine",
        ],
    )
    assert out.train.crop_min == 0.5
    assert out.model.channels == (16, 32, 64)
    assert out.train.photometric is False
    assert out.model.ffmm_levels == (0,)
    assert out.train.lr == 1.0 and isinstance(out.train.lr, float)
    assert out.name == "mine"
    assert cfg.train.crop_min == 0.3  # the preset is untouched
    with pytest.raises(ValueError, match="unknown field 'crop_mni'"):
        apply_overrides(cfg, ["train.crop_mni=0.5"])
    with pytest.raises(ValueError, match="unknown config section"):
        apply_overrides(cfg, ["trian.crop_min=0.5"])
    with pytest.raises(ValueError, match="section.field=value"):
        apply_overrides(cfg, ["train.crop_min"])
    assert parse_value("(1, 2)") == (1, 2)
    assert parse_value("True") is True
    assert parse_value("none") is None
