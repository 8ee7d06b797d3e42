"""RunConfig: one place for the run's defaults and one for their validation; train() takes it or
its fields as keywords."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ufssd.presets import get_preset, replace
from ufssd.train import EvalSpec, RunConfig, TrainingError, train
from ufssd.train.schedule import DEFAULT_WARMUP_MAX_FRACTION


def test_defaults_are_the_cli_defaults_and_frozen():
    run = RunConfig()
    assert (run.resume, run.workers, run.log_every, run.targets, run.augment) == (False, 2, 20, "workers", True)
    assert run.warmup_max_fraction == DEFAULT_WARMUP_MAX_FRACTION and run.stop_at is None and run.eval_spec is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.workers = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"targets": "gpu"}, "targets must be one of"),
        ({"workers": -1}, "workers must be >= 0"),
        ({"log_every": 0}, "log_every must be >= 1"),
        ({"stop_at": -3}, "stop_at must be >= 0"),
        ({"grad_clip": 0.0}, "grad_clip must be positive"),
        ({"warmup_max_fraction": 1.5}, r"warmup_max_fraction must be in \[0, 1\]"),
        ({"worker_start": "thread"}, "worker_start must be one of"),
        ({"eval_spec": EvalSpec(Path("i"), ("a/b",), Path("g"), every=1, metric="best")}, "eval metric must be one of"),
    ],
)
def test_validation(knobs, message):
    with pytest.raises(TrainingError, match=message):
        RunConfig(**knobs)


def test_check_against_the_config():
    cfg = get_preset("ufssd_light")
    RunConfig().check(cfg, world_size=1)
    with pytest.raises(TrainingError, match="multiple of the 3 processes"):
        RunConfig().check(replace(cfg, train={"batch_size": 32}), world_size=3)
    with pytest.raises(TrainingError, match="iters must be positive"):
        RunConfig().check(replace(cfg, train={"iters": 0}), world_size=1)
    with pytest.raises(TrainingError, match="train.amp"):
        RunConfig().check(replace(cfg, train={"amp": "fp8"}), world_size=1)


def test_train_takes_knobs_as_keywords_and_refuses_unknown_ones(tmp_path):
    cfg = get_preset("ufssd_light")
    with pytest.raises(TypeError, match="worker"):
        train(cfg, [object()], tmp_path, worker=0)  # a misspelt knob
    with pytest.raises(TrainingError, match="log_every"):
        train(cfg, [object()], tmp_path, RunConfig(workers=0), log_every=0)  # keywords apply over run
    with pytest.raises(TrainingError, match="no training samples"):
        train(cfg, [], tmp_path, workers=0)
    assert not list(tmp_path.iterdir())
