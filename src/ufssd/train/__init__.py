"""The trainer (issue 4): loop, targets, checkpoints, distributed, logging. See ``docs/training.md``.

Library entry point::

    from ufssd.train import train, read_training_samples, default_sources
    samples = read_training_samples(default_sources("/data/widerface"))
    train(cfg, samples, "/runs/light", resume=True)

The names below are imported lazily (PEP 562), as the root package's are: importing a torch-free
submodule such as :mod:`ufssd.train.run_config` (whose choices ``ufssd train``'s parser lists, and
which ``ufssd --help`` imports) does not import the trainer and torch with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ufssd.train.checkpoint import BEST_NAME, LAST_NAME, CheckpointError, load_checkpoint, save_checkpoint
    from ufssd.train.run_config import EvalSpec, RunConfig, TrainingError
    from ufssd.train.schedule import WarmupMultiStep, effective_warmup, milestone_steps, scaled_lr
    from ufssd.train.sources import default_sources, expand_source, read_training_samples
    from ufssd.train.targets import TargetBuilder, TargetCollate, TrainBatch
    from ufssd.train.trainer import FINAL_WEIGHTS_NAME, Trainer, TrainResult, checkpoint_config, train

# name -> the submodule that defines it
_LAZY = {
    "BEST_NAME": "checkpoint",
    "LAST_NAME": "checkpoint",
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "EvalSpec": "run_config",
    "RunConfig": "run_config",
    "TrainingError": "run_config",
    "WarmupMultiStep": "schedule",
    "effective_warmup": "schedule",
    "milestone_steps": "schedule",
    "scaled_lr": "schedule",
    "default_sources": "sources",
    "expand_source": "sources",
    "read_training_samples": "sources",
    "TargetBuilder": "targets",
    "TargetCollate": "targets",
    "TrainBatch": "targets",
    "FINAL_WEIGHTS_NAME": "trainer",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "checkpoint_config": "trainer",
    "train": "trainer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'ufssd.train' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"ufssd.train.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
