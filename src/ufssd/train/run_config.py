"""The knobs of one training run: :class:`RunConfig` (with :class:`EvalSpec` for the periodic
evaluation), their defaults and their validation, in one place.

The detector and its recipe (schedule, batch, resolution, seed) are the
:class:`~ufssd.config.DetectorConfig`; a ``RunConfig`` says how this run goes: resume or not,
where to start from, how the data are loaded, what is logged and evaluated, where to stop.
``ufssd train`` builds one from its flags; :func:`ufssd.train.train` takes one (or its fields as
keywords).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ufssd.train.schedule import DEFAULT_WARMUP_MAX_FRACTION

if TYPE_CHECKING:
    import torch

    from ufssd.config import DetectorConfig

__all__ = ["RunConfig", "EvalSpec", "TrainingError", "EVAL_METRICS", "DEFAULT_WORKER_START"]

EVAL_METRICS = ("easy", "medium", "hard", "mean")
TARGET_PLACES = ("workers", "main")
WORKER_STARTS = ("forkserver", "spawn", "fork")
AMP_MODES = ("bf16", "fp16", "none")
# a forked DataLoader worker deadlocks in OpenCV when the parent already ran OpenCV's thread pool
DEFAULT_WORKER_START = "forkserver" if "forkserver" in mp.get_all_start_methods() else None


class TrainingError(RuntimeError):
    """Training cannot start or continue (bad arguments, a diverged loss, a foreign out folder)."""


@dataclass(frozen=True)
class EvalSpec:
    """Periodic evaluation on rank 0: every ``every`` steps (and at the end), detect the
    ``names`` (``"<event>/<stem>"``) under ``image_root`` and score them against the WIDER
    ground truth in ``gt_dir`` (the organisers' ``.mat`` files). ``best.pt`` keeps the checkpoint
    of the best ``metric`` (``"hard"``, ``"medium"``, ``"easy"`` or ``"mean"``)."""

    image_root: Path
    names: tuple[str, ...]
    gt_dir: Path
    every: int
    metric: str = "hard"
    score_threshold: float | None = None  # None: the model's InferenceConfig.eval_score_threshold
    detector_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    """How one training run goes (the recipe itself is ``DetectorConfig.train``).

    Attributes:
        resume: continue from ``out_dir/last.pt`` when it exists (else start afresh, logged).
            Without it, an ``out_dir`` that already holds ``last.pt`` is refused.
        init: start from these weights (``.safetensors`` or a checkpoint; matching tensors only).
        workers: DataLoader worker processes per rank (0: load in the main process).
        device: ``None`` = ``cuda:<LOCAL_RANK>`` if CUDA is available, else the CPU.
        eval_spec: periodic evaluation (rank 0), or None.
        log_every: steps between log rows (CSV, TensorBoard, progress bar postfix).
        progress: a progress bar (else a log line per row).
        targets: ``"workers"`` builds matching targets and GT masks in the DataLoader workers
            (the CPU-side work overlaps the network); ``"main"`` builds them in the training
            process on the training device.
        augment: False = no augmentation (whole image fitted into the square input).
        warmup_max_fraction: clip the warm-up to this fraction of ``iters`` (None: no clip).
        grad_clip: max gradient L2 norm, or None.
        sync_bn: convert BatchNorm to SyncBatchNorm in multi-GPU runs.
        deterministic: deterministic CUDA kernels (slower); the CPU is deterministic anyway.
        stop_at: end this call after this step (with a checkpoint), as an interruption would;
            a later ``resume=True`` call continues to ``iters``.
        tensorboard: write TensorBoard events (when the package is installed).
        worker_start: how DataLoader workers start: ``"forkserver"`` (the default where
            available: a clean process, safe whatever threads the caller's process has already
            started, e.g. OpenCV's pool, which deadlocks a forked child), ``"fork"``,
            ``"spawn"``, or None for the platform default.
        data_device: keep the images on this device (the training device: ``"cuda"``,
            ``"cuda:N"`` or ``"cpu"``) and augment and target whole batches there
            (:mod:`ufssd.train.device_data`) instead of the DataLoader workers; None: the loader.
        pack: with ``data_device``, read the images from this pack (``ufssd.data.pack``)
            instead of the samples given to the trainer.
        pool_max_side: with ``data_device`` and samples, shrink images whose longer side
            exceeds this before they enter the pool (a pack's own setting applies to a pack).
        time_budget_s: train for about this many seconds of wall time (the loop, from its
            start): after ``probe_steps`` steps, ``iters`` becomes the steps that fit in the
            time left at the speed measured over the probe's second half, and the whole
            schedule (warm-up clip, milestones) follows it, so the run ends fully annealed. The
            chosen ``iters`` is kept in the checkpoint: a resumed run continues to it.
        probe_steps: the steps of the speed probe of ``time_budget_s``.
    """

    resume: bool = False
    init: str | os.PathLike | None = None
    workers: int = 2
    device: str | torch.device | None = None
    eval_spec: EvalSpec | None = None
    log_every: int = 20
    progress: bool = True
    targets: str = "workers"
    augment: bool = True
    warmup_max_fraction: float | None = DEFAULT_WARMUP_MAX_FRACTION
    grad_clip: float | None = None
    sync_bn: bool = False
    deterministic: bool = False
    stop_at: int | None = None
    tensorboard: bool = True
    worker_start: str | None = DEFAULT_WORKER_START
    data_device: str | None = None
    pack: str | os.PathLike | None = None
    pool_max_side: int | None = 1024
    time_budget_s: float | None = None
    probe_steps: int = 50

    def __post_init__(self) -> None:
        problems = []
        if self.targets not in TARGET_PLACES:
            problems.append(f"targets must be one of {TARGET_PLACES}, got {self.targets!r}")
        if self.workers < 0:
            problems.append(f"workers must be >= 0, got {self.workers}")
        if self.log_every < 1:
            problems.append(f"log_every must be >= 1, got {self.log_every}")
        if self.stop_at is not None and self.stop_at < 0:
            problems.append(f"stop_at must be >= 0, got {self.stop_at}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            problems.append(f"grad_clip must be positive, got {self.grad_clip}")
        if self.warmup_max_fraction is not None and not 0.0 <= self.warmup_max_fraction <= 1.0:
            problems.append(f"warmup_max_fraction must be in [0, 1], got {self.warmup_max_fraction}")
        if self.worker_start is not None and self.worker_start not in WORKER_STARTS:
            problems.append(f"worker_start must be one of {WORKER_STARTS} or None, got {self.worker_start!r}")
        if self.pack is not None and self.data_device is None:
            problems.append("a pack is read only by the device data path: give data_device too")
        if self.data_device is not None and not self.augment:
            problems.append("the device data path always augments (no augment=False)")
        if self.pool_max_side is not None and self.pool_max_side < 32:
            problems.append(f"pool_max_side must be >= 32, got {self.pool_max_side}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            problems.append(f"time_budget_s must be positive, got {self.time_budget_s}")
        if self.probe_steps < 2:
            problems.append(f"probe_steps must be >= 2, got {self.probe_steps}")
        if self.eval_spec is not None and self.eval_spec.metric not in EVAL_METRICS:
            problems.append(f"eval metric must be one of {EVAL_METRICS}, got {self.eval_spec.metric!r}")
        if problems:
            raise TrainingError("; ".join(problems))

    def check(self, cfg: DetectorConfig, world_size: int) -> None:
        """Raise :class:`TrainingError` when ``cfg`` cannot train in ``world_size`` processes."""
        tc = cfg.train
        if tc.batch_size % world_size != 0:
            raise TrainingError(
                f"train.batch_size {tc.batch_size} (total) must be a multiple of the {world_size} processes"
            )
        if tc.iters <= 0:
            raise TrainingError(f"train.iters must be positive, got {tc.iters}")
        if tc.amp not in AMP_MODES:
            raise TrainingError(f"train.amp must be 'bf16', 'fp16' or 'none', got {tc.amp!r}")
