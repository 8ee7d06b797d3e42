"""The trainer (issue 4): loop, targets, checkpoints, distributed, logging. See ``docs/training.md``.

Library entry point::

    from ufssd.train import train, read_training_samples, default_sources
    samples = read_training_samples(default_sources("/data/widerface"))
    train(cfg, samples, "/runs/light", resume=True)
"""

from ufssd.train.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from ufssd.train.run_config import EvalSpec, RunConfig, TrainingError
from ufssd.train.schedule import WarmupMultiStep, effective_warmup, milestone_steps, scaled_lr
from ufssd.train.sources import default_sources, expand_source, read_training_samples
from ufssd.train.targets import TargetBuilder, TargetCollate, TrainBatch
from ufssd.train.trainer import FINAL_WEIGHTS_NAME, Trainer, TrainResult, checkpoint_config, train

__all__ = [
    "BEST_NAME",
    "CheckpointError",
    "EvalSpec",
    "FINAL_WEIGHTS_NAME",
    "LAST_NAME",
    "RunConfig",
    "TargetBuilder",
    "TargetCollate",
    "TrainBatch",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "WarmupMultiStep",
    "checkpoint_config",
    "default_sources",
    "effective_warmup",
    "expand_source",
    "load_checkpoint",
    "milestone_steps",
    "read_training_samples",
    "save_checkpoint",
    "scaled_lr",
    "train",
]
