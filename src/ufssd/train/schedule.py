"""The learning-rate schedule: linear scaling with the batch, linear warm-up, step decay.

Paper notes section 6: SGD, lr 1e-3 at a total batch of 32, divided by 10 at 100k, 150k and 180k
of 200k iterations. Milestones are *fractions* of the run (0.5, 0.75, 0.9), so ``--iters`` scales
the whole schedule. The warm-up (1,000 iterations in the recipe) is linear from ``1 / warmup`` of
the learning rate; for short runs the trainer clips it to a fraction of the run (see
:func:`effective_warmup`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from ufssd.config import TrainConfig

__all__ = ["scaled_lr", "milestone_steps", "effective_warmup", "WarmupMultiStep"]

# by default the warm-up never takes more than this fraction of the run
DEFAULT_WARMUP_MAX_FRACTION = 0.05


def scaled_lr(cfg: TrainConfig) -> float:
    """``cfg.lr`` is the rate at ``cfg.base_batch_size``; it scales linearly with the total batch."""
    return cfg.lr * cfg.batch_size / cfg.base_batch_size


def milestone_steps(cfg: TrainConfig) -> list[int]:
    """Milestones in optimizer steps: ``round(fraction * iters)``, sorted."""
    for f in cfg.lr_milestones:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"lr_milestones are fractions of the run in [0, 1], got {cfg.lr_milestones}")
    return sorted(int(math.floor(f * cfg.iters + 0.5)) for f in cfg.lr_milestones)


def effective_warmup(cfg: TrainConfig, max_fraction: float | None = DEFAULT_WARMUP_MAX_FRACTION) -> int:
    """``cfg.warmup_iters`` clipped to ``max_fraction`` of ``cfg.iters`` (``None``: no clip)."""
    warmup = max(int(cfg.warmup_iters), 0)
    if max_fraction is not None:
        warmup = min(warmup, int(max_fraction * cfg.iters))
    return warmup


class WarmupMultiStep:
    """The multiplicative lr factor of step ``s`` (a picklable callable for ``LambdaLR``)::

        factor(s) = min(1, (s + 1) / warmup) * gamma ** #{m in milestones : m <= s}
    """

    def __init__(self, warmup: int, milestones: Sequence[int], gamma: float) -> None:
        self.warmup = int(warmup)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        factor = self.gamma ** bisect.bisect_right(self.milestones, step)
        if self.warmup > 0 and step < self.warmup:
            factor *= (step + 1) / self.warmup
        return factor
