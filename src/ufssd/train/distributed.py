"""Multi-process training helpers on ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node=N ...`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`init_distributed` reads them and starts a process group (NCCL on CUDA, gloo on CPU).
Without them (a plain ``ufssd train``) everything runs in one process and the helpers below are
no-ops, so the trainer has a single code path.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup",
    "barrier",
    "all_reduce_mean",
    "broadcast_buffers",
    "parameter_checksum",
    "unwrap",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # this process group was started by init_distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def init_distributed(device: str | torch.device | None = None, timeout_min: float = 60.0) -> DistInfo:
    """Start the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    device: ``None`` picks ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU; ``"cuda"``
    means ``cuda:<LOCAL_RANK>``. The backend is NCCL for CUDA devices and gloo for the CPU.
    ``timeout_min`` bounds how long ranks wait for each other (rank 0's periodic evaluation
    runs while the others wait at a barrier).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    if device.type == "cuda":
        torch.cuda.set_device(device)

    initialized_here = False
    if world_size > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(
                backend=backend, timeout=datetime.timedelta(minutes=timeout_min),
                **({"device_id": device} if device.type == "cuda" else {}),
            )
            initialized_here = True
            logger.info("rank %d/%d: process group started (%s) on %s", rank, world_size, backend, device)
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world_size, local_rank, device, initialized_here)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` started it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over ranks (a copy; the input itself when not distributed)."""
    if not _active():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def broadcast_floats(values: list[float], device: torch.device | None = None, src: int = 0) -> list[float]:
    """Rank ``src``'s ``values`` on every rank (the values themselves when not distributed)."""
    if not _active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src)
    return t.tolist()


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank."""
    if not _active():
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def parameter_checksum(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in ``named_parameters`` order (ranks compare these)."""
    digest = hashlib.sha256()
    for name, p in unwrap(model).named_parameters():
        digest.update(name.encode())
        digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
