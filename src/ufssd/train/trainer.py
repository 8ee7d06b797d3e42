"""The training loop: SGD with the preset's schedule, bf16 on CUDA, checkpoints, resume, DDP, logs.

One entry point, :func:`train`. The recipe (paper notes section 6, ``docs/training.md``):

- SGD (momentum, weight decay) at ``train.lr * batch_size / base_batch_size``; linear warm-up
  over ``train.warmup_iters`` (clipped to 5 % of short runs by default); divided by
  ``lr_gamma`` at the ``lr_milestones`` fractions of ``train.iters``.
- ``train.batch_size`` is the *total* batch over all processes; each of the ``world_size``
  ranks (``torchrun``) takes ``batch_size / world_size`` images per step from its shard of one
  deterministic stream (:class:`ufssd.data.ShardedInfiniteSampler`).
- Mixed precision: bf16 autocast on CUDA (no GradScaler); ``train.amp = "fp16"`` uses a scaler;
  the CPU trains in float32.
- Every ``checkpoint_every`` steps and at the end rank 0 writes ``out/last.pt`` atomically;
  ``resume=True`` continues from it exactly (model, optimizer, scheduler, scaler, RNG states, and
  the position in the data stream), or starts afresh with a log line when there is none.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ufssd.atomic import atomic_write_text
from ufssd.config import DetectorConfig, config_from_dict, config_to_dict
from ufssd.train import distributed as D
from ufssd.train.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    load_checkpoint,
    preserved_rng,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ufssd.train.logging_utils import (
    EVAL_FIELDS,
    TRAIN_LOG_FIELDS,
    CSVLog,
    EvalHistory,
    ProgressBar,
    TensorBoardLog,
)
from ufssd.train.schedule import (
    DEFAULT_WARMUP_MAX_FRACTION,
    WarmupMultiStep,
    effective_warmup,
    milestone_steps,
    scaled_lr,
)
from ufssd.train.targets import TargetBuilder, TargetCollate, TrainBatch

logger = logging.getLogger(__name__)

__all__ = ["EvalSpec", "TrainResult", "train", "FINAL_WEIGHTS_NAME", "TrainingError"]

FINAL_WEIGHTS_NAME = "final.safetensors"
# a forked DataLoader worker deadlocks in OpenCV when the parent already ran OpenCV's thread pool
DEFAULT_WORKER_START = "forkserver" if "forkserver" in mp.get_all_start_methods() else None
LOSS_KEYS = ("loss", "cls", "loc", "mask")


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


# ---------------------------------------------------------------------------------------------
# data


class _FitDataset(torch.utils.data.Dataset):
    """No augmentation (``augment=False``): the whole image, scaled so its longer side is
    ``resolution`` and zero-padded bottom/right to ``resolution x resolution``."""

    def __init__(self, samples: Sequence[Any], resolution: int, min_face_px: float) -> None:
        self.samples = list(samples)
        self.resolution = int(resolution)
        self.min_face_px = float(min_face_px)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        import cv2

        from ufssd.data import Item, load_image

        index = int(key[1]) if isinstance(key, tuple) else int(key)
        sample = self.samples[index]
        image = load_image(sample.image_path, sample.origin)
        h, w = image.shape[:2]
        s = self.resolution / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((self.resolution, self.resolution, 3), dtype=np.uint8)
        canvas[:nh, :nw] = resized
        boxes = np.asarray(sample.boxes, dtype=np.float32).reshape(-1, 4) * np.float32(s)
        ignore = np.asarray(sample.ignore, dtype=bool).reshape(-1).copy()
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        ignore |= side < self.min_face_px
        return Item(
            image=torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1))),
            boxes=torch.from_numpy(boxes),
            ignore=torch.from_numpy(ignore),
            name=sample.name,
        )


# what the forkserver imports once, so that each worker forked from it starts in milliseconds
# instead of importing torch, OpenCV and ufssd again (seconds each on a busy machine); importing
# OpenCV starts no thread, so forking the server stays safe ("__main__" is the default preload)
FORKSERVER_PRELOAD = ("__main__", "ufssd.data", "ufssd.train.targets")


def _worker_context(worker_start: str) -> Any:
    """The multiprocessing context the DataLoader workers start with."""
    context = mp.get_context(worker_start)
    if worker_start == "forkserver":
        context.set_forkserver_preload(list(FORKSERVER_PRELOAD))  # no effect once the server runs
    return context


def _make_loader(
    cfg: DetectorConfig,
    samples: Sequence[Any],
    info: D.DistInfo,
    start_items: int,
    workers: int,
    targets: str,
    augment: bool,
    worker_start: str | None,
) -> torch.utils.data.DataLoader:
    from ufssd.data import ShardedInfiniteSampler, WiderFaceDataset, collate, worker_init

    per_rank = cfg.train.batch_size // info.world_size
    if augment:
        dataset: torch.utils.data.Dataset = WiderFaceDataset(samples, cfg.train, train=True)
    else:
        dataset = _FitDataset(samples, cfg.train.resolution, cfg.train.min_face_px)
    sampler = ShardedInfiniteSampler(
        len(samples), info.rank, info.world_size, seed=cfg.train.seed, shuffle=True, start=start_items
    )
    # the generator only seeds worker processes; given explicitly, creating the loader's
    # iterator leaves the global torch RNG (part of the checkpoint) untouched
    generator = torch.Generator().manual_seed(cfg.train.seed)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=2, worker_init_fn=worker_init)
        if worker_start:
            kwargs["multiprocessing_context"] = _worker_context(worker_start)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=workers,
        collate_fn=TargetCollate(cfg, collate) if targets == "workers" else collate,
        pin_memory=info.device.type == "cuda",
        drop_last=True,
        generator=generator,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------
# evaluation (guarded: training works without the inference / evaluation packages)


def _run_eval(model: nn.Module, spec: EvalSpec, out_dir: Path, step: int) -> dict[str, float] | None:
    """Detect + evaluate on rank 0; returns {"easy", "medium", "hard", "mean"} APs or None."""
    try:
        from ufssd.evaluation import evaluate
        from ufssd.inference import FaceDetector, predict_widerface
    except ImportError as exc:
        logger.warning("step %d: evaluation skipped (%s)", step, exc)
        return None
    pred_dir = out_dir / "eval_tmp" / f"step_{step:08d}"
    files = [n if n.lower().endswith((".jpg", ".jpeg", ".png")) else f"{n}.jpg" for n in spec.names]
    was_training = model.training
    model.eval()
    try:
        with preserved_rng(), torch.no_grad():
            detector = FaceDetector.from_model(model, **spec.detector_kwargs)
            predict_widerface(
                detector, spec.image_root, files, pred_dir, score_threshold=spec.score_threshold, progress=False
            )
        result = evaluate(pred_dir, spec.gt_dir, subset=files)
    except Exception:  # an evaluation failure must not kill a long run
        logger.exception("step %d: evaluation failed", step)
        return None
    finally:
        model.train(was_training)
        shutil.rmtree(pred_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            pred_dir.parent.rmdir()  # eval_tmp/, when empty
    aps = _aps_of(result)
    if aps is None:
        logger.warning("step %d: cannot read APs from the evaluation result %r", step, type(result).__name__)
    return aps


def _aps_of(result: Any) -> dict[str, float] | None:
    """easy/medium/hard APs (and their mean) of an ``EvaluationResult``."""
    try:
        aps = {key: float(result.aps[key]) for key in ("easy", "medium", "hard")}
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    aps["mean"] = (aps["easy"] + aps["medium"] + aps["hard"]) / 3.0
    return aps


# ---------------------------------------------------------------------------------------------
# helpers


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    from ufssd.model import load_weights

    source = load_weights(path, map_location="cpu")
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    logger.info("initialised from %s (%d tensors)", path, len(source.state_dict()))
    if missing:
        logger.warning("--init: %d tensors not in %s keep their fresh values: %s", len(missing), path, missing[:8])
    if unexpected:
        logger.warning("--init: %d tensors of %s unused: %s", len(unexpected), path, unexpected[:8])


# ---------------------------------------------------------------------------------------------
# the entry point


def train(
    cfg: DetectorConfig,
    samples: Sequence[Any],
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    init: str | os.PathLike | None = None,
    workers: int = 2,
    device: str | torch.device | None = None,
    eval_spec: EvalSpec | None = None,
    log_every: int = 20,
    progress: bool = True,
    targets: str = "workers",
    augment: bool = True,
    warmup_max_fraction: float | None = DEFAULT_WARMUP_MAX_FRACTION,
    grad_clip: float | None = None,
    sync_bn: bool = False,
    deterministic: bool = False,
    stop_at: int | None = None,
    tensorboard: bool = True,
    worker_start: str | None = DEFAULT_WORKER_START,
) -> TrainResult:
    """Train ``cfg`` on ``samples`` (``ufssd.data.Sample``, e.g. from ``read_sources``).

    Args:
        cfg: the resolved config; ``cfg.train`` holds the schedule, batch size and seed.
        samples: the training images with their boxes.
        out_dir: where rank 0 writes ``last.pt``, ``best.pt``, ``final.safetensors``,
            ``config.json``, ``train_log.csv``, ``eval_history.csv`` and ``tensorboard/``.
        resume: continue from ``out_dir/last.pt`` when it exists (else start afresh, logged).
            Without it, an ``out_dir`` that already holds ``last.pt`` is refused.
        init: start from these weights (``.safetensors`` or a checkpoint; matching tensors only).
        workers: DataLoader worker processes per rank (0: load in the main process).
        device: ``None`` = ``cuda:<LOCAL_RANK>`` if CUDA is available, else the CPU.
        eval_spec: periodic evaluation (rank 0), or None.
        log_every: steps between log rows (CSV, TensorBoard, progress bar postfix).
        targets: ``"workers"`` builds matching targets and GT masks in the DataLoader workers
            (the default; the CPU-side work overlaps the network); ``"main"`` builds them in the
            training process on the training device.
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
            started, e.g. OpenCV's pool, which deadlocks a forked child), ``"fork"``, ``"spawn"``,
            or None for the platform default.
    """
    if targets not in ("workers", "main"):
        raise ValueError(f"targets must be 'workers' or 'main', got {targets!r}")
    if not samples:
        raise TrainingError("no training samples")
    info = D.init_distributed(device)
    try:
        return _train(
            cfg, samples, Path(out_dir), info,
            resume=resume, init=init, workers=workers, eval_spec=eval_spec, log_every=max(1, log_every),
            progress=progress, targets=targets, augment=augment, warmup_max_fraction=warmup_max_fraction,
            grad_clip=grad_clip, sync_bn=sync_bn, deterministic=deterministic, stop_at=stop_at,
            tensorboard=tensorboard, worker_start=worker_start,
        )  # fmt: skip
    finally:
        D.cleanup(info)


def _train(
    cfg: DetectorConfig,
    samples: Sequence[Any],
    out_dir: Path,
    info: D.DistInfo,
    *,
    resume: bool,
    init: str | os.PathLike | None,
    workers: int,
    eval_spec: EvalSpec | None,
    log_every: int,
    progress: bool,
    targets: str,
    augment: bool,
    warmup_max_fraction: float | None,
    grad_clip: float | None,
    sync_bn: bool,
    deterministic: bool,
    stop_at: int | None,
    tensorboard: bool,
    worker_start: str | None,
) -> TrainResult:
    from ufssd.losses import ufssd_loss
    from ufssd.model import build_model, normalize, pad_to_multiple, save_weights

    tc = cfg.train
    device = info.device
    main = info.is_main
    if tc.batch_size % info.world_size != 0:
        raise TrainingError(
            f"train.batch_size {tc.batch_size} (total) must be a multiple of the {info.world_size} processes"
        )
    if tc.iters <= 0:
        raise TrainingError(f"train.iters must be positive, got {tc.iters}")
    if tc.amp not in ("bf16", "fp16", "none"):
        raise TrainingError(f"train.amp must be 'bf16', 'fp16' or 'none', got {tc.amp!r}")
    per_rank = tc.batch_size // info.world_size
    last_path, best_path = out_dir / LAST_NAME, out_dir / BEST_NAME

    # -- resume or fresh start: every rank reads the same file ------------------------------
    checkpoint = None
    if last_path.is_file():
        if not resume:
            raise TrainingError(
                f"{out_dir} already holds a checkpoint ({LAST_NAME}); pass --resume to continue it "
                "or choose another --out"
            )
        checkpoint = load_checkpoint(last_path)
    elif resume and main:
        logger.info("--resume: no checkpoint in %s, starting a fresh run", out_dir)
    if checkpoint is not None:
        diff = _config_diff(config_to_dict(cfg), checkpoint["config"])
        if diff:
            logger.warning("config differs from the checkpoint's (checkpoint -> now): %s", "; ".join(diff))
        if int(checkpoint.get("batch_size", tc.batch_size)) != tc.batch_size:
            logger.warning(
                "the total batch size changed (%s -> %d): the data stream and the lr differ from the original run",
                checkpoint.get("batch_size"), tc.batch_size,
            )  # fmt: skip

    # -- determinism --------------------------------------------------------------------------
    _seed_everything(tc.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)

    # -- model, optimizer, schedule -----------------------------------------------------------
    model = build_model(cfg)
    if init is not None and checkpoint is None:
        _load_init_weights(model, init)
    model.to(device)
    base_lr = scaled_lr(tc)
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    warmup = effective_warmup(tc, warmup_max_fraction)
    milestones = milestone_steps(tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupMultiStep(warmup, milestones, tc.lr_gamma))
    use_scaler = device.type == "cuda" and tc.amp == "fp16"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    step = 0
    extra: dict[str, Any] = {}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        step = int(checkpoint["step"])
        # the schedule is a function of (config, step): the current config's lr, milestones and
        # warm-up apply from here on (the same numbers when the config did not change)
        schedule = WarmupMultiStep(warmup, milestones, tc.lr_gamma)
        scheduler.lr_lambdas = [schedule for _ in optimizer.param_groups]
        scheduler.base_lrs = [base_lr for _ in optimizer.param_groups]
        for group in optimizer.param_groups:
            group.update(initial_lr=base_lr, lr=base_lr * schedule(step), momentum=tc.momentum,
                         weight_decay=tc.weight_decay)  # fmt: skip
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
        extra = dict(checkpoint.get("extra") or {})
        set_rng_state(checkpoint["rng"])
        if main:
            logger.info("resumed from %s at step %d of %d", last_path, step, tc.iters)
    if info.distributed and sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    bare = model
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(
            bare, device_ids=[device.index] if device.type == "cuda" else None
        )

    end = tc.iters if stop_at is None else min(tc.iters, int(stop_at))
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temporaries(
            out_dir, (LAST_NAME, BEST_NAME, FINAL_WEIGHTS_NAME, "config.json", "train_log.csv", "eval_history.csv")
        )
        if stale:
            logger.info("removed %d temporary file(s) left by an interrupted write", stale)
        atomic_write_text(out_dir / "config.json", json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n")
        logger.info("resolved config:\n%s", json.dumps(config_to_dict(cfg), indent=1, sort_keys=True))
        logger.info(
            "training %s on %d images: %d iterations (from %d), batch %d = %d x %d per process on %s; "
            "lr %.4g (= %.4g x %d / %d), warm-up %d, milestones %s, amp %s, targets in %s",
            cfg.name, len(samples), tc.iters, step, tc.batch_size, info.world_size, per_rank, device,
            base_lr, tc.lr, tc.batch_size, tc.base_batch_size, warmup, milestones,
            tc.amp if device.type == "cuda" else "none (CPU)", targets,
        )  # fmt: skip

    # -- logs (rank 0) -------------------------------------------------------------------------
    csv_log = CSVLog(out_dir / "train_log.csv", TRAIN_LOG_FIELDS, step, enabled=main)
    history = EvalHistory(out_dir / "eval_history.csv", step, enabled=main and eval_spec is not None)
    tb = TensorBoardLog(out_dir / "tensorboard", step, enabled=main and tensorboard)
    bar = ProgressBar(tc.iters, step, enabled=main and progress)
    metric = eval_spec.metric if eval_spec is not None else "hard"
    if eval_spec is not None and metric not in EVAL_FIELDS[1:]:
        raise TrainingError(f"eval metric must be one of {EVAL_FIELDS[1:]}, got {metric!r}")
    best = (float(extra.get("best_value", -math.inf)), int(extra.get("best_step", -1)))

    def make_checkpoint() -> dict[str, Any]:
        return {
            "step": step,
            "model": bare.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_state(),
            "config": config_to_dict(cfg),
            "world_size": info.world_size,
            "batch_size": tc.batch_size,
            "extra": {"best_value": best[0], "best_step": best[1], "metric": metric},
        }

    # -- the loop -------------------------------------------------------------------------------
    builder = TargetBuilder(cfg) if targets == "main" else None
    rows: list[dict[str, float]] = []
    last_row: dict[str, float] = {}
    loader = None
    t_start = time.perf_counter()
    try:
        if step < end:
            loader = _make_loader(cfg, samples, info, step * per_rank, workers, targets, augment, worker_start)
            batches = iter(loader)
        model.train()
        sums = torch.zeros(len(LOSS_KEYS), dtype=torch.float64, device=device)
        n_sum, data_time, step_time = 0, 0.0, 0.0
        t_interval = time.perf_counter()
        while step < end:
            t0 = time.perf_counter()
            batch = next(batches)
            if builder is not None:
                batch = builder.from_batch(batch, device)
            else:
                batch = batch.to(device, non_blocking=True)
            assert isinstance(batch, TrainBatch)
            t1 = time.perf_counter()

            images = pad_to_multiple(normalize(batch.images, cfg.model), cfg.anchors.pad_multiple)
            with _autocast(device, tc.amp):
                out = model(images, gt_masks=batch.mcdm_masks or None)
            losses = ufssd_loss(_float_output(out), batch.labels, batch.target_deltas, batch.ffmm_masks, cfg.loss)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(losses["loss"]).backward()
                if grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                losses["loss"].backward()
                if grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
            lr_now = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            sums += torch.stack([losses[k].detach().to(torch.float64) for k in LOSS_KEYS])
            n_sum += 1
            data_time += t1 - t0
            step_time += time.perf_counter() - t1
            bar.update(1)

            if step % log_every == 0 or step == end:
                mean = (D.all_reduce_mean(sums) / n_sum).tolist()
                elapsed = time.perf_counter() - t_interval
                row = {
                    "step": step,
                    "lr": lr_now,
                    **dict(zip(LOSS_KEYS, mean)),
                    "images_per_s": n_sum * tc.batch_size / max(elapsed, 1e-9),
                    "data_s": data_time / n_sum,
                    "step_s": step_time / n_sum,
                    "elapsed_s": time.perf_counter() - t_start,
                }
                if not math.isfinite(row["loss"]):
                    raise TrainingError(
                        f"step {step}: the loss is {row['loss']} (cls {row['cls']}, loc {row['loc']}, "
                        f"mask {row['mask']}); lower --lr or raise --warmup, then --resume from the last checkpoint"
                    )
                rows.append(row)
                last_row = row
                csv_log.write(row)
                tb.scalars(step, {k: row[k] for k in LOSS_KEYS}, prefix="loss/")
                tb.scalars(step, {"lr": row["lr"], "images_per_s": row["images_per_s"]}, prefix="train/")
                bar.postfix({"loss": row["loss"], "cls": row["cls"], "loc": row["loc"], "mask": row["mask"],
                             "lr": lr_now, "img/s": round(row["images_per_s"], 1)})  # fmt: skip
                if main and not progress:
                    logger.info(
                        "step %d/%d  loss %.4f (cls %.4f loc %.4f mask %.4f)  lr %.3g  %.1f img/s",
                        step, tc.iters, row["loss"], row["cls"], row["loc"], row["mask"], lr_now, row["images_per_s"],
                    )  # fmt: skip
                sums.zero_()
                n_sum, data_time, step_time = 0, 0.0, 0.0
                t_interval = time.perf_counter()

            # periodic evaluation (rank 0; the others wait)
            if eval_spec is not None and (
                (eval_spec.every > 0 and step % eval_spec.every == 0) or step == tc.iters
            ):
                if main:
                    aps = _run_eval(bare, eval_spec, out_dir, step)
                    if aps is not None:
                        history.add({"step": step, **aps})
                        tb.scalars(step, aps, prefix="eval/AP_")
                        logger.info(
                            "step %d: dev AP easy %.4f medium %.4f hard %.4f (mean %.4f)",
                            step, aps["easy"], aps["medium"], aps["hard"], aps["mean"],
                        )  # fmt: skip
                        if aps[metric] > best[0]:
                            best = (aps[metric], step)
                            save_checkpoint(best_path, make_checkpoint())
                            logger.info("step %d: new best %s AP %.4f -> %s", step, metric, aps[metric], best_path)
                D.barrier()

            # checkpoint (all ranks sync BN statistics to rank 0's; rank 0 writes)
            if step % max(tc.checkpoint_every, 1) == 0 or step == end:
                D.broadcast_buffers(bare)
                if main:
                    save_checkpoint(last_path, make_checkpoint())
                    tb.flush()
    finally:
        bar.close()
        csv_log.close()
        tb.close()
        del loader

    finished = step >= tc.iters
    D.broadcast_buffers(bare)
    checksum = D.parameter_checksum(bare)
    if finished and main:
        save_weights(out_dir / FINAL_WEIGHTS_NAME, bare)
        logger.info("done: %d steps; weights in %s", step, out_dir / FINAL_WEIGHTS_NAME)
    logger.info("rank %d: final parameter checksum %s (step %d)", info.rank, checksum, step)
    D.barrier()
    return TrainResult(
        out_dir=out_dir,
        step=step,
        finished=finished,
        checksum=checksum,
        last_log=last_row,
        history=rows,
        best=best if eval_spec is not None else None,
        model=bare,
    )


def checkpoint_config(path: str | os.PathLike) -> DetectorConfig:
    """The resolved config stored in a training checkpoint."""
    ckpt = load_checkpoint(path)
    try:
        return config_from_dict(ckpt["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid config ({exc})") from exc

