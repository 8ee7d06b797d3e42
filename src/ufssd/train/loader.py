"""The trainer's DataLoader: one rank's shard of the deterministic data stream, from any step.

The dataset (:class:`ufssd.data.WiderFaceDataset`, or :class:`ufssd.data.FitDataset` without
augmentation) gives item ``i`` of epoch ``e`` from ``(seed, e, i)`` only, and
:class:`ufssd.data.ShardedInfiniteSampler` starts at the item a resumed run has reached; so the
stream of a run is fixed by its seed whatever the number of workers, processes or restarts.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from typing import Any

import torch

from ufssd.config import DetectorConfig
from ufssd.data import FitDataset, Sample, ShardedInfiniteSampler, WiderFaceDataset, collate, worker_init
from ufssd.train.distributed import DistInfo
from ufssd.train.run_config import RunConfig
from ufssd.train.targets import TargetCollate

__all__ = ["make_loader", "FORKSERVER_PRELOAD"]

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


def make_loader(
    cfg: DetectorConfig, samples: Sequence[Sample], info: DistInfo, start_items: int, run: RunConfig
) -> torch.utils.data.DataLoader:
    """Batches of ``batch_size / world_size`` items of this rank's shard, from its item
    ``start_items`` on (``step * batch_per_rank`` when resuming), as :class:`TrainBatch` when
    ``run.targets == "workers"`` (targets built in the workers), else as ``ufssd.data.Batch``."""
    per_rank = cfg.train.batch_size // info.world_size
    if run.augment:
        dataset: torch.utils.data.Dataset = WiderFaceDataset(samples, cfg.train, train=True)
    else:
        dataset = FitDataset(samples, cfg.train.resolution, cfg.train.min_face_px)
    sampler = ShardedInfiniteSampler(
        len(samples), info.rank, info.world_size, seed=cfg.train.seed, shuffle=True, start=start_items
    )
    # the generator only seeds worker processes; given explicitly, creating the loader's
    # iterator leaves the global torch RNG (part of the checkpoint) untouched
    generator = torch.Generator().manual_seed(cfg.train.seed)
    kwargs: dict[str, Any] = {}
    if run.workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=2, worker_init_fn=worker_init)
        if run.worker_start:
            kwargs["multiprocessing_context"] = _worker_context(run.worker_start)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=run.workers,
        collate_fn=TargetCollate(cfg, collate) if run.targets == "workers" else collate,
        pin_memory=info.device.type == "cuda",
        drop_last=True,
        generator=generator,
        **kwargs,
    )
