"""Checkpoints: atomic writes, RNG states, and what a training checkpoint holds.

A checkpoint is a plain ``dict`` saved with :func:`torch.save` and readable with
``torch.load(..., weights_only=True)`` (only tensors, numbers, strings, lists, tuples and dicts)::

    {
      "format": "ufssd-train-checkpoint", "version": 1,
      "step": int,                      # optimizer steps done
      "model": state_dict,              # the bare model (no DDP "module." prefix)
      "optimizer": state_dict, "scaler": state_dict | None,
      "scheduler": {"base_lr", "warmup", "milestones", "gamma", "lr"},   # the schedule, for reading:
                                        # resume recomputes the lr from the config and the step
      "rng": {"python", "numpy", "torch", "cuda"},   # see rng_state()
      "config": dict,                   # ufssd.config.config_to_dict of the resolved config
      "world_size": int, "batch_size": int,          # of the run that wrote it
      "extra": dict,                    # e.g. best AP so far
    }

Every file is written to a temporary file in the same folder, flushed to disk, then renamed
over the target with :func:`os.replace` (atomic on POSIX and Windows): a process killed at any
moment leaves either the previous file or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from ufssd.atomic import atomic_write, temporary_files

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ufssd-train-checkpoint"
CHECKPOINT_VERSION = 1
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"

__all__ = [
    "CHECKPOINT_FORMAT",
    "LAST_NAME",
    "BEST_NAME",
    "CheckpointError",
    "atomic_torch_save",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "preserved_rng",
    "remove_stale_temporaries",
]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not a ufssd training checkpoint."""


# ---------------------------------------------------------------------------------------------
# atomic writes (ufssd.atomic; checkpoints are among the files written with fsync)


def atomic_torch_save(obj: Any, path: str | os.PathLike, _serialize: Callable[[Any, IO[bytes]], None] | None = None) -> None:
    """``torch.save(obj)`` to ``path`` atomically (the object is serialised straight into the
    temporary file; ``_serialize`` replaces ``torch.save`` in tests)."""
    serialize = _serialize or (lambda o, f: torch.save(o, f))
    with atomic_write(path, "wb", fsync=True) as f:
        serialize(obj, f)


def remove_stale_temporaries(folder: str | os.PathLike, names: tuple[str, ...]) -> int:
    """Delete the temporary files that a killed writer left in ``folder`` for the files ``names``
    (:func:`ufssd.atomic.temporary_files`); returns how many. Call it only while no other process
    writes there (the trainer's rank 0 at start)."""
    removed = 0
    for tmp in temporary_files(folder, names):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


# ---------------------------------------------------------------------------------------------
# RNG states


def rng_state() -> dict[str, Any]:
    """The state of every generator training uses, in ``weights_only``-loadable types."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where CUDA is in use)."""
    random.setstate(_to_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np.asarray(np_state["keys"].numpy(), dtype=np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            logger.warning(
                "checkpoint holds %d CUDA RNG states but %d devices are visible: CUDA RNG not restored",
                len(cuda),
                torch.cuda.device_count(),
            )


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (e.g. an evaluation) without disturbing any generator the training uses."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def _to_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value


# ---------------------------------------------------------------------------------------------
# save / load


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (see the module docstring for its keys)."""
    checkpoint = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **checkpoint}
    atomic_torch_save(checkpoint, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = path.read_bytes()
        checkpoint = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a ufssd training checkpoint")
    if int(checkpoint.get("version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {checkpoint['version']} is newer than this ufssd "
            f"({CHECKPOINT_VERSION})"
        )
    return checkpoint
