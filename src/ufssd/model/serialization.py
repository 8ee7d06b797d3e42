"""Weight files: safetensors with the resolved config and a checksum; training checkpoints.

A ``.safetensors`` weight file holds the model's state dict and the metadata
``{"format": "ufssd-weights", "version": "1", "config": <config JSON>, "sha256": <hex>}``; the
checksum covers every tensor's name, dtype, shape and bytes (see :func:`tensors_sha256`).

The file's kind comes from its extension (:data:`WEIGHT_SUFFIXES`: ``.safetensors``; ``.pt`` or
``.pth`` for a training checkpoint; ``.onnx`` for an exported graph, which
:mod:`ufssd.inference` runs). Every problem with a weight file, whatever its kind, is one
:class:`WeightFileError` whose message is one line, ``<path>: <what is wrong>``
(:func:`check_weight_file` for the checks every kind shares).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import torch
from torch import Tensor

from ufssd.atomic import atomic_write_bytes
from ufssd.config import DetectorConfig, config_from_dict, config_from_json, config_to_json
from ufssd.model.network import UFSSD

FORMAT = "ufssd-weights"
VERSION = "1"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save files are zip archives


WEIGHT_SUFFIXES = {".safetensors": "safetensors", ".pt": "checkpoint", ".pth": "checkpoint", ".onnx": "onnx"}


class WeightFileError(ValueError):
    """A weight file that cannot be used: missing, empty, of an unknown kind, corrupt, a checksum
    mismatch, or config and weights disagree. ``str(err)`` is one line, ``<path>: <what is wrong>``."""


class MissingWeightFileError(WeightFileError, FileNotFoundError):
    """The weight file does not exist (also a ``FileNotFoundError``)."""


def first_line(exc: BaseException) -> str:
    """A library's error as one short line: its first non-empty line (or its type's name)."""
    lines = [ln.strip() for ln in str(exc).strip("'\" \n").splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def check_weight_file(path: str | os.PathLike) -> str:
    """The kind of a weight file that exists and is not empty: ``"safetensors"``,
    ``"checkpoint"`` or ``"onnx"``, from its extension.

    Raises:
        MissingWeightFileError: no such file.
        WeightFileError: a folder, an empty file, or an extension of no known kind.
    """
    path = Path(path)
    if not path.exists():
        raise MissingWeightFileError(f"{path}: weight file not found")
    if path.is_dir():
        raise WeightFileError(f"{path}: is a directory, not a weight file")
    kind = WEIGHT_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise WeightFileError(
            f"{path}: unknown weight file type {path.suffix or '(no extension)'!r} "
            "(expected .safetensors, .pt/.pth (training checkpoint) or .onnx)"
        )
    try:
        with open(path, "rb") as f:
            empty = not f.read(1)
    except OSError as exc:
        raise WeightFileError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if empty:
        raise WeightFileError(f"{path}: empty file (0 bytes)")
    return kind


def tensors_sha256(state: dict[str, Tensor]) -> str:
    """sha256 over the tensors in sorted name order: name, dtype, shape, then the raw bytes."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _cpu_state(model: UFSSD) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(path: str | os.PathLike, model: UFSSD) -> Path:
    """Write ``model``'s weights and config to a .safetensors file atomically; returns the path."""
    from safetensors.torch import save

    if getattr(model, "batchnorm_fused", False):
        raise ValueError("cannot save a model whose BatchNorm was fused (inference-only copy); save the original")
    path = Path(path)
    state = _cpu_state(model)
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "config": config_to_json(model.config),
        "sha256": tensors_sha256(state),
    }
    data = save(state, metadata=metadata)
    atomic_write_bytes(path, data, fsync=True)
    return path


def _read_safetensors(path: Path) -> tuple[DetectorConfig, dict[str, Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise WeightFileError(f"{path}: not a readable safetensors file ({first_line(exc)})") from exc
    if metadata.get("format") != FORMAT or "config" not in metadata or "sha256" not in metadata:
        raise WeightFileError(f"{path}: not a ufssd weight file (metadata needs format, config and sha256)")
    digest = tensors_sha256(state)
    if digest != metadata["sha256"]:
        raise WeightFileError(f"{path}: checksum mismatch (file {metadata['sha256'][:12]}..., tensors {digest[:12]}...)")
    try:
        cfg = config_from_json(metadata["config"])
    except (ValueError, TypeError) as exc:
        raise WeightFileError(f"{path}: invalid config in metadata ({first_line(exc)})") from exc
    return cfg, state


def _unpickling_detail(exc: BaseException) -> str:
    """The informative line of torch's multi-line ``weights_only`` refusal."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(boilerplate)]
    detail = lines[0] if lines else first_line(exc)
    return re.sub(r"^WeightsUnpickler error:\s*", "", detail) or first_line(exc)


def _read_checkpoint(path: Path) -> tuple[DetectorConfig, dict[str, Tensor]]:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != _ZIP_MAGIC:
        raise WeightFileError(f"{path}: not a training checkpoint (torch.save's zip archive expected)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses code and unknown types
        raise WeightFileError(
            f"{path}: not a readable training checkpoint (refused by torch.load(weights_only=True): "
            f"{_unpickling_detail(exc)})"
        ) from exc
    except Exception as exc:  # torch.load raises many types for a damaged archive
        raise WeightFileError(
            f"{path}: not a readable training checkpoint (corrupt or truncated: {first_line(exc)})"
        ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("config"), dict):
        raise WeightFileError(f"{path}: a checkpoint needs the keys 'model' (state dict) and 'config' (config dict)")
    try:
        cfg = config_from_dict(ckpt["config"])
    except (ValueError, TypeError) as exc:
        raise WeightFileError(f"{path}: invalid config in checkpoint ({first_line(exc)})") from exc
    return cfg, ckpt["model"]


def _check_state(path: Path, model: UFSSD, state: dict[str, Tensor]) -> None:
    """One line naming what differs between the stored tensors and the stored config's model."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = [
        f"{len(keys)} {what} (e.g. {keys[0]})"
        for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (shapes, "of another shape"))
        if keys
    ]
    if parts:
        raise WeightFileError(
            f"{path}: the weights do not match the stored config ({model.config.name}): tensors "
            + ", ".join(parts)
        )


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> UFSSD:
    """A :class:`UFSSD` (eval mode, on ``map_location``) from a ``.safetensors`` weight file or a
    training checkpoint (``.pt``/``.pth``: a torch file with "model" and "config", read with
    ``weights_only=True``).

    Raises:
        MissingWeightFileError: no such file (a ``FileNotFoundError`` too).
        WeightFileError: (a ``ValueError``) an empty file, an unknown extension, an ``.onnx`` file
            (no PyTorch weights), a corrupt file, a checksum mismatch, or a config that does not
            match the weights; the message is one line naming the file.
    """
    path = Path(path)
    kind = check_weight_file(path)
    if kind == "onnx":
        raise WeightFileError(
            f"{path}: an ONNX file holds an exported graph, not PyTorch weights "
            "(give the .safetensors or .pt file it was exported from)"
        )
    cfg, state = _read_checkpoint(path) if kind == "checkpoint" else _read_safetensors(path)
    try:
        model = UFSSD(cfg, load_pretrained_backbone=False)
    except ValueError as exc:
        raise WeightFileError(f"{path}: the stored config cannot build a model ({first_line(exc)})") from exc
    _check_state(path, model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightFileError(
            f"{path}: the weights do not match the stored config ({cfg.name}): {first_line(exc)}"
        ) from exc
    return model.to(map_location).eval()


def read_config(path: str | os.PathLike) -> DetectorConfig:
    """The DetectorConfig stored in a .safetensors weight file, without reading the tensors."""
    from safetensors import safe_open

    path = Path(path)
    check_weight_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
        return config_from_json(metadata["config"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise WeightFileError(f"{path}: no config in the metadata ({first_line(exc)})") from exc
    except Exception as exc:  # safetensors header errors
        raise WeightFileError(f"{path}: not a readable safetensors file ({first_line(exc)})") from exc
