"""The training loop: SGD with the preset's schedule, bf16 on CUDA, checkpoints, resume, DDP, logs.

One entry point, :func:`train`, a thin wrapper around :class:`Trainer`, which has one method per
phase of the loop (resume, step, log, evaluate, checkpoint). The knobs of a run are a
:class:`~ufssd.train.run_config.RunConfig`. The recipe (paper notes section 6,
``docs/training.md``):

- SGD (momentum, weight decay) at ``train.lr * batch_size / base_batch_size``; linear warm-up
  over ``train.warmup_iters`` (clipped to 5 % of short runs by default); divided by
  ``lr_gamma`` at the ``lr_milestones`` fractions of ``train.iters``. The lr of each step is
  computed from the schedule (:class:`~ufssd.train.schedule.WarmupMultiStep`) and the step.
- ``train.batch_size`` is the *total* batch over all processes; each of the ``world_size``
  ranks (``torchrun``) takes ``batch_size / world_size`` images per step from its shard of one
  deterministic stream (:class:`ufssd.data.ShardedInfiniteSampler`).
- Mixed precision: bf16 autocast on CUDA (no GradScaler); ``train.amp = "fp16"`` uses a scaler;
  the CPU trains in float32.
- Every ``checkpoint_every`` steps and at the end rank 0 writes ``out/last.pt`` atomically;
  ``resume=True`` continues from it exactly (model, optimizer, scaler, RNG states, and the
  position in the data stream), or starts afresh with a log line when there is none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ufssd.atomic import atomic_write_text
from ufssd.config import DetectorConfig, config_from_dict, config_to_dict
from ufssd.data import Sample
from ufssd.losses import ufssd_loss
from ufssd.model import build_model, load_weights, normalize, pad_to_multiple, save_weights
from ufssd.train import distributed as D
from ufssd.train.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ufssd.train.device_data import DeviceBatches, DevicePool, pool_from_pack, pool_from_samples
from ufssd.train.loader import make_loader
from ufssd.train.logging_utils import TRAIN_LOG_FIELDS, CSVLog, EvalHistory, ProgressBar, TensorBoardLog
from ufssd.train.periodic_eval import evaluate_model
from ufssd.train.run_config import RunConfig, TrainingError
from ufssd.train.schedule import WarmupMultiStep, effective_warmup, milestone_steps, scaled_lr
from ufssd.train.targets import TargetBuilder, TrainBatch

logger = logging.getLogger(__name__)

__all__ = [
    "FINAL_WEIGHTS_NAME",
    "RunConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "checkpoint_config",
    "train",
]

FINAL_WEIGHTS_NAME = "final.safetensors"
LOSS_KEYS = ("loss", "cls", "loc", "mask")
BUDGET_MARGIN = 0.97  # of the time left after the probe: checkpoints and log rows take the rest
# what rank 0 writes in the out folder (temporaries of these that a kill left are removed)
OUT_FILES = (LAST_NAME, BEST_NAME, FINAL_WEIGHTS_NAME, "config.json", "train_log.csv", "eval_history.csv")


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank)."""

    out_dir: Path
    step: int  # optimizer steps done
    finished: bool  # step == cfg.train.iters
    checksum: str  # SHA-256 of the final parameters (see distributed.parameter_checksum)
    last_log: dict[str, float] = field(default_factory=dict)  # the last logged row
    history: list[dict[str, float]] = field(default_factory=list)  # logged rows of this call
    best: tuple[float, int] | None = None  # (best metric value, its step) when evaluating
    model: nn.Module | None = None  # the bare trained model (on its device)


def train(
    cfg: DetectorConfig,
    samples: Sequence[Sample],
    out_dir: str | os.PathLike,
    run: RunConfig | None = None,
    **knobs: Any,
) -> TrainResult:
    """Train ``cfg`` on ``samples`` (``ufssd.data.Sample``, e.g. from ``read_training_samples``).

    Args:
        cfg: the resolved config; ``cfg.train`` holds the schedule, batch size and seed.
        samples: the training images with their boxes.
        out_dir: where rank 0 writes ``last.pt``, ``best.pt``, ``final.safetensors``,
            ``config.json``, ``train_log.csv``, ``eval_history.csv`` and ``tensorboard/``.
        run: how the run goes (:class:`RunConfig`: resume, init, workers, evaluation, ...).
        knobs: :class:`RunConfig` fields given as keywords (``resume=True, workers=0``), applied
            over ``run``.
    Raises:
        TrainingError: bad knobs or config, a foreign out folder, a diverged loss.
    """
    run = dataclasses.replace(run or RunConfig(), **knobs)
    if not samples and run.pack is None:
        raise TrainingError("no training samples")
    info = D.init_distributed(run.device)
    try:
        return Trainer(cfg, samples, out_dir, run, info).fit()
    finally:
        D.cleanup(info)


def checkpoint_config(path: str | os.PathLike) -> DetectorConfig:
    """The resolved config stored in a training checkpoint."""
    ckpt = load_checkpoint(path)
    try:
        return config_from_dict(ckpt["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid config ({exc})") from exc


class Trainer:
    """One process's part of a training run: ``Trainer(cfg, samples, out_dir, run, info).fit()``.

    The constructor sets the run up: the checkpoint (or a fresh start), the seeds, the model and
    optimizer (restored by :meth:`resume`), DDP, the output folder and the logs. :meth:`fit`
    runs the loop; each iteration is :meth:`step`, then :meth:`log`, :meth:`evaluate` and
    :meth:`checkpoint`, each of which acts when its period comes. ``pool``: the device data
    path's images already on the device (else loaded as ``run`` says).
    """

    def __init__(
        self,
        cfg: DetectorConfig,
        samples: Sequence[Sample],
        out_dir: str | os.PathLike,
        run: RunConfig,
        info: D.DistInfo,
        pool: DevicePool | None = None,
    ) -> None:
        run.check(cfg, info.world_size)
        self.cfg, self.samples, self.out_dir, self.run, self.info = cfg, samples, Path(out_dir), run, info
        self.tc = cfg.train
        self.device = info.device
        self.main = info.is_main
        self.per_rank = self.tc.batch_size // info.world_size
        self.end = self.tc.iters if run.stop_at is None else min(self.tc.iters, int(run.stop_at))
        self.base_lr = scaled_lr(self.tc)
        self.warmup = effective_warmup(self.tc, run.warmup_max_fraction)
        self.milestones = milestone_steps(self.tc)
        self.schedule = WarmupMultiStep(self.warmup, self.milestones, self.tc.lr_gamma)
        self.step_count = 0  # optimizer steps done
        self.best: tuple[float, int] = (-math.inf, -1)  # (best metric value, its step)
        self.rows: list[dict[str, float]] = []  # the log rows of this call
        checkpoint = self._read_checkpoint()
        self.pool = pool if pool is not None else self._load_pool()
        self.device_batches: DeviceBatches | None = None
        self._data_rng = None if checkpoint is None else checkpoint.get("data_rng")
        _seed_everything(self.tc.seed, self.device, run.deterministic)
        self._build(init=run.init if checkpoint is None else None)
        self._budget_probe: tuple[int, float] | None = None  # (step, time) halfway through the probe
        self.budget_fixed = False  # iters already chosen by the time budget
        if checkpoint is not None:
            self.resume(checkpoint)
        self._distribute()
        self._prepare_out_dir()
        self._open_logs()

    # ------------------------------------------------------------------ set-up

    def _read_checkpoint(self) -> dict[str, Any] | None:
        """``out_dir/last.pt`` when resuming (every rank reads the same file), else None."""
        last = self.out_dir / LAST_NAME
        if not last.is_file():
            if self.run.resume and self.main:
                logger.info("--resume: no checkpoint in %s, starting a fresh run", self.out_dir)
            return None
        if not self.run.resume:
            raise TrainingError(
                f"{self.out_dir} already holds a checkpoint ({LAST_NAME}); pass --resume to continue it "
                "or choose another --out"
            )
        checkpoint = load_checkpoint(last)
        diff = _config_diff(config_to_dict(self.cfg), checkpoint["config"])
        if diff:
            logger.warning("config differs from the checkpoint's (checkpoint -> now): %s", "; ".join(diff))
        if int(checkpoint.get("batch_size", self.tc.batch_size)) != self.tc.batch_size:
            logger.warning(
                "the total batch size changed (%s -> %d): the data stream and the lr differ from the original run",
                checkpoint.get("batch_size"), self.tc.batch_size,
            )  # fmt: skip
        return checkpoint

    def _load_pool(self) -> DevicePool | None:
        """The device data path's images (``run.data_device``) on the training device, or None."""
        run = self.run
        if run.data_device is None:
            return None
        if torch.device(run.data_device).type != self.device.type:
            raise TrainingError(f"--data-device {run.data_device} must be the training device ({self.device})")
        t0 = time.perf_counter()
        if run.pack is not None:
            pool = pool_from_pack(run.pack, self.device)
        else:
            pool = pool_from_samples(self.samples, self.device, run.pool_max_side)
        if self.main:
            logger.info(
                "device data: %d images on %s (%.2f GiB, decoded in %.1f s)",
                len(pool), self.device, pool.nbytes / 2**30, time.perf_counter() - t0,
            )  # fmt: skip
        return pool

    def _build(self, init: str | os.PathLike | None) -> None:
        """The model (from ``init`` when given), the optimizer and the fp16 scaler."""
        model = build_model(self.cfg)
        if init is not None:
            _load_init_weights(model, init)
        self.bare = model.to(self.device)
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=self.base_lr, momentum=self.tc.momentum, weight_decay=self.tc.weight_decay
        )
        use_scaler = self.device.type == "cuda" and self.tc.amp == "fp16"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def resume(self, checkpoint: dict[str, Any]) -> None:
        """Continue from ``checkpoint``: weights, optimizer and scaler states, step, best AP, RNG
        states. The schedule is a function of (config, step): the current config's lr, warm-up,
        milestones, momentum and weight decay apply from here on (the same numbers when the
        config did not change)."""
        self.bare.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.step_count = int(checkpoint["step"])
        for group in self.optimizer.param_groups:
            group.update(lr=self.lr_at(self.step_count), momentum=self.tc.momentum, weight_decay=self.tc.weight_decay)
        extra = dict(checkpoint.get("extra") or {})
        self.best = (float(extra.get("best_value", -math.inf)), int(extra.get("best_step", -1)))
        if self.run.time_budget_s is not None and extra.get("budget_iters"):
            self._set_iters(int(extra["budget_iters"]))
            self.budget_fixed = True
        set_rng_state(checkpoint["rng"])
        if self.main:
            logger.info("resumed from %s at step %d of %d", self.out_dir / LAST_NAME, self.step_count, self.tc.iters)

    def _distribute(self) -> None:
        """SyncBatchNorm (``sync_bn``, CUDA) and the DDP wrapper in multi-process runs."""
        if self.info.distributed and self.run.sync_bn and self.device.type == "cuda":
            self.bare = nn.SyncBatchNorm.convert_sync_batchnorm(self.bare)
        self.model: nn.Module = self.bare
        if self.info.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.bare, device_ids=device_ids)

    def _prepare_out_dir(self) -> None:
        """Rank 0: the folder, no stale temporaries, ``config.json``, the start of the log."""
        if not self.main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temporaries(self.out_dir, OUT_FILES)
        if stale:
            logger.info("removed %d temporary file(s) left by an interrupted write", stale)
        config = self._write_config()
        logger.info("resolved config:\n%s", json.dumps(config, indent=1, sort_keys=True))
        tc, info = self.tc, self.info
        logger.info(
            "training %s on %d images: %d iterations (from %d), batch %d = %d x %d per process on %s; "
            "lr %.4g (= %.4g x %d / %d), warm-up %d, milestones %s, amp %s, targets in %s",
            self.cfg.name, len(self.pool) if self.pool is not None else len(self.samples), tc.iters, self.step_count, tc.batch_size, info.world_size,
            self.per_rank, self.device, self.base_lr, tc.lr, tc.batch_size, tc.base_batch_size, self.warmup,
            self.milestones, tc.amp if self.device.type == "cuda" else "none (CPU)",
            "batches on the device" if self.pool is not None else self.run.targets,
        )  # fmt: skip

    def _write_config(self) -> dict[str, Any]:
        """``out_dir/config.json``: the resolved config of the run (rank 0)."""
        config = config_to_dict(self.cfg)
        atomic_write_text(self.out_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        return config

    def _open_logs(self) -> None:
        """The CSV log, the eval history, TensorBoard and the progress bar (rank 0 only)."""
        main, run, step = self.main, self.run, self.step_count
        self.csv_log = CSVLog(self.out_dir / "train_log.csv", TRAIN_LOG_FIELDS, step, enabled=main)
        self.history = EvalHistory(self.out_dir / "eval_history.csv", step, enabled=main and run.eval_spec is not None)
        self.tb = TensorBoardLog(self.out_dir / "tensorboard", step, enabled=main and run.tensorboard)
        self.bar = ProgressBar(self.tc.iters, step, enabled=main and run.progress)

    def _close_logs(self) -> None:
        self.bar.close()
        self.csv_log.close()
        self.tb.close()

    # ------------------------------------------------------------------ the loop

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based) by the schedule."""
        return self.base_lr * self.schedule(step)

    def fit(self) -> TrainResult:
        """Train from the current step to ``iters`` (or ``stop_at``), then finish."""
        builder = TargetBuilder(self.cfg) if self.run.targets == "main" else None
        loader = None
        self.t_start = time.perf_counter()
        self.budget_start_step = self.step_count
        try:
            if self.step_count < self.end and self.pool is not None:
                batches = self.device_batches = self.open_device_batches()
            elif self.step_count < self.end:
                loader = make_loader(self.cfg, self.samples, self.info, self.step_count * self.per_rank, self.run)
                batches = iter(loader)
            self.model.train()
            self.meter = _Meter(self.device)
            while self.step_count < self.end:
                t0 = time.perf_counter()
                batch = _next_batch(batches, builder, self.device)
                t1 = time.perf_counter()
                losses, lr = self.step(batch)
                self.meter.add(losses, data_s=t1 - t0, step_s=time.perf_counter() - t1)
                self.fit_to_budget()
                self.bar.update(1)
                self.log(lr)
                self.evaluate()
                self.checkpoint()
        finally:
            self._close_logs()
            del loader
        return self._finish()

    def open_device_batches(self) -> DeviceBatches:
        """The device path's batch stream from the current step (its generator from the checkpoint)."""
        assert self.pool is not None
        batches = DeviceBatches(self.cfg, self.pool, self.info, self.step_count * self.per_rank)
        if self._data_rng is not None:
            batches.set_state(self._data_rng)
        return batches

    def step(self, batch: TrainBatch) -> tuple[dict[str, torch.Tensor], float]:
        """One optimizer step on ``batch`` (the MCDM masks go to the model); returns the losses
        and the learning rate used."""
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = pad_to_multiple(normalize(batch.images, self.cfg.model), self.cfg.anchors.pad_multiple)
        with _autocast(self.device, self.tc.amp):
            out = self.model(images, gt_masks=batch.mcdm_masks or None)
        out = _float_output(out)
        losses = ufssd_loss(out, batch.labels, batch.target_deltas, batch.ffmm_masks, self.cfg.loss, self.cfg.anchors)
        self.optimizer.zero_grad(set_to_none=True)
        clip = self.run.grad_clip
        if self.scaler is not None:
            self.scaler.scale(losses["loss"]).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            losses["loss"].backward()
            if clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        self.step_count += 1
        return losses, lr

    def _set_iters(self, iters: int) -> None:
        """A new run length, and the schedule of it (the learning rate of the steps to come)."""
        self.tc = dataclasses.replace(self.tc, iters=int(iters))
        self.cfg = dataclasses.replace(self.cfg, train=self.tc)
        self.end = self.tc.iters if self.run.stop_at is None else min(self.tc.iters, int(self.run.stop_at))
        self.warmup = effective_warmup(self.tc, self.run.warmup_max_fraction)
        self.milestones = milestone_steps(self.tc)
        self.schedule = WarmupMultiStep(self.warmup, self.milestones, self.tc.lr_gamma)

    def fit_to_budget(self) -> None:
        """``run.time_budget_s``: halfway through the probe, note the step and the time; at its
        end, size ``iters`` to the time left at the speed in between (every rank computes it
        from rank 0's numbers, so all agree)."""
        budget, probe = self.run.time_budget_s, self.run.probe_steps
        if budget is None or self.budget_fixed:
            return
        done = self.step_count - self.budget_start_step
        if done == probe // 2 or done == probe:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # the queued steps, so that the clock is the GPU's
            now = time.perf_counter()
            if done == probe // 2:
                self._budget_probe = (self.step_count, now)
                return
            assert self._budget_probe is not None
            step0, t0 = self._budget_probe
            speed = (self.step_count - step0) / max(now - t0, 1e-9)
            rate, left = D.broadcast_floats([speed, budget - (now - self.t_start)], self.device)
            iters = self.step_count + max(1, int(left * rate * BUDGET_MARGIN))
            self._set_iters(iters)
            self.budget_fixed = True
            self.bar.set_total(iters)
            if self.main:
                self._write_config()
                logger.info(
                    "time budget %.0f s: %.2f steps/s (%.0f images/s) over the probe; %.0f s left -> iters %d, "
                    "warm-up %d, milestones %s",
                    budget, rate, rate * self.tc.batch_size, left, iters, self.warmup, self.milestones,
                )  # fmt: skip

    def log(self, lr: float) -> None:
        """Every ``log_every`` steps and at the end: the mean losses over the interval (averaged
        over ranks) to the CSV, TensorBoard and the progress bar."""
        step = self.step_count
        if not (step % self.run.log_every == 0 or step == self.end):
            return
        row = self.meter.row(step, lr, self.tc.batch_size, self.t_start)
        if not math.isfinite(row["loss"]):
            raise TrainingError(
                f"step {step}: the loss is {row['loss']} (cls {row['cls']}, loc {row['loc']}, "
                f"mask {row['mask']}); lower --lr or raise --warmup, then --resume from the last checkpoint"
            )
        self.rows.append(row)
        self.csv_log.write(row)
        self.tb.scalars(step, {k: row[k] for k in LOSS_KEYS}, prefix="loss/")
        self.tb.scalars(step, {"lr": lr, "images_per_s": row["images_per_s"]}, prefix="train/")
        self.bar.postfix({**{k: row[k] for k in LOSS_KEYS}, "lr": lr, "img/s": round(row["images_per_s"], 1)})
        if self.main and not self.run.progress:
            logger.info(
                "step %d/%d  loss %.4f (cls %.4f loc %.4f mask %.4f)  lr %.3g  %.1f img/s",
                step, self.tc.iters, row["loss"], row["cls"], row["loc"], row["mask"], lr, row["images_per_s"],
            )  # fmt: skip
        self.meter.reset()

    def evaluate(self) -> None:
        """Every ``eval_spec.every`` steps and at the last step: rank 0 evaluates (the others
        wait), records the APs and keeps ``best.pt``."""
        spec = self.run.eval_spec
        if spec is None:
            return
        step = self.step_count
        if not ((spec.every > 0 and step % spec.every == 0) or step == self.tc.iters):
            return
        if self.main:
            aps = evaluate_model(self.bare, spec, self.out_dir, step)
            if aps is not None:
                self.history.add({"step": step, **aps})
                self.tb.scalars(step, aps, prefix="eval/AP_")
                logger.info(
                    "step %d: dev AP easy %.4f medium %.4f hard %.4f (mean %.4f)",
                    step, aps["easy"], aps["medium"], aps["hard"], aps["mean"],
                )  # fmt: skip
                if aps[spec.metric] > self.best[0]:
                    self.best = (aps[spec.metric], step)
                    best_path = self.out_dir / BEST_NAME
                    save_checkpoint(best_path, self.state())
                    logger.info("step %d: new best %s AP %.4f -> %s", step, spec.metric, self.best[0], best_path)
        D.barrier()

    def checkpoint(self) -> None:
        """Every ``checkpoint_every`` steps and at the end: BatchNorm statistics from rank 0 to
        every rank, then rank 0 writes ``last.pt`` (atomically)."""
        step = self.step_count
        if not (step % max(self.tc.checkpoint_every, 1) == 0 or step == self.end):
            return
        D.broadcast_buffers(self.bare)
        if self.main:
            save_checkpoint(self.out_dir / LAST_NAME, self.state())
            self.tb.flush()

    def state(self) -> dict[str, Any]:
        """The checkpoint of the current step (see :mod:`ufssd.train.checkpoint`)."""
        metric = self.run.eval_spec.metric if self.run.eval_spec is not None else "hard"
        return {
            "step": self.step_count,
            "model": self.bare.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"base_lr": self.base_lr, "warmup": self.warmup, "milestones": list(self.milestones),
                          "gamma": self.tc.lr_gamma, "lr": self.lr_at(self.step_count)},  # fmt: skip
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_state(),
            "config": config_to_dict(self.cfg),
            "world_size": self.info.world_size,
            "batch_size": self.tc.batch_size,
            "extra": {"best_value": self.best[0], "best_step": self.best[1], "metric": metric,
                      "budget_iters": self.tc.iters if self.budget_fixed else 0},  # fmt: skip
            **({"data_rng": self.device_batches.state()} if self.device_batches is not None else {}),
        }

    def _finish(self) -> TrainResult:
        """Every rank's checksum of the final weights; rank 0 writes ``final.safetensors`` when
        the run reached ``iters``."""
        finished = self.step_count >= self.tc.iters
        D.broadcast_buffers(self.bare)
        checksum = D.parameter_checksum(self.bare)
        if finished and self.main:
            save_weights(self.out_dir / FINAL_WEIGHTS_NAME, self.bare)
            logger.info("done: %d steps; weights in %s", self.step_count, self.out_dir / FINAL_WEIGHTS_NAME)
        logger.info("rank %d: final parameter checksum %s (step %d)", self.info.rank, checksum, self.step_count)
        D.barrier()
        return TrainResult(
            out_dir=self.out_dir,
            step=self.step_count,
            finished=finished,
            checksum=checksum,
            last_log=self.rows[-1] if self.rows else {},
            history=self.rows,
            best=self.best if self.run.eval_spec is not None else None,
            model=self.bare,
        )


class _Meter:
    """The losses (summed on the device) and timings of the steps since the last log row."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(LOSS_KEYS), dtype=torch.float64, device=device)
        self.reset()

    def reset(self) -> None:
        self.sums.zero_()
        self.n, self.data_s, self.step_s = 0, 0.0, 0.0
        self.t0 = time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor], data_s: float, step_s: float) -> None:
        self.sums += torch.stack([losses[k].detach().to(torch.float64) for k in LOSS_KEYS])
        self.n += 1
        self.data_s += data_s
        self.step_s += step_s

    def row(self, step: int, lr: float, batch_size: int, t_start: float) -> dict[str, float]:
        """The log row: mean losses over the interval and ranks, throughput, timings."""
        mean = (D.all_reduce_mean(self.sums) / self.n).tolist()
        elapsed = time.perf_counter() - self.t0
        return {
            "step": step,
            "lr": lr,
            **dict(zip(LOSS_KEYS, mean)),
            "images_per_s": self.n * batch_size / max(elapsed, 1e-9),
            "data_s": self.data_s / self.n,
            "step_s": self.step_s / self.n,
            "elapsed_s": time.perf_counter() - t_start,
        }


# ---------------------------------------------------------------------------------------------
# helpers


def _next_batch(batches: Iterator[Any], builder: TargetBuilder | None, device: torch.device) -> TrainBatch:
    """The next batch on ``device``, its targets built here when ``builder`` is given."""
    batch = next(batches)
    if isinstance(batch, TrainBatch) and batch.images.device == device:  # the device data path
        return batch
    batch = builder.from_batch(batch, device) if builder is not None else batch.to(device, non_blocking=True)
    assert isinstance(batch, TrainBatch)
    return batch


def _seed_everything(seed: int, device: torch.device, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; on CUDA, cuDNN benchmark mode or deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, f"{prefix}{key}.")
        elif _plain(va) != _plain(vb):
            out.append(f"{prefix}{key}: {_plain(vb)!r} -> {_plain(va)!r}")
    return out


def _plain(v: Any) -> Any:
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast("cuda", dtype=dtype)


def _float_output(out: Any) -> Any:
    """Raw outputs in float32 for the loss (under autocast they may be bf16)."""
    return type(out)(
        out.cls_logits.float(), out.box_deltas.float(), tuple(m.float() for m in out.mask_logits)
    )


def _load_init_weights(model: nn.Module, path: str | os.PathLike) -> None:
    state = load_weights(path, map_location="cpu").state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    logger.info("initialised from %s (%d tensors)", path, len(state))
    if missing:
        logger.warning("--init: %d tensors not in %s keep their fresh values: %s", len(missing), path, missing[:8])
    if unexpected:
        logger.warning("--init: %d tensors of %s unused: %s", len(unexpected), path, unexpected[:8])
