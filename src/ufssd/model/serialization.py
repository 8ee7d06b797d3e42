"""Weight files: safetensors with the resolved config and a checksum; training checkpoints.

A ``.safetensors`` weight file holds the model's state dict and the metadata
``{"format": "ufssd-weights", "version": "1", "config": <config JSON>, "sha256": <hex>}``; the
checksum covers every tensor's name, dtype, shape and bytes (see :func:`tensors_sha256`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor

from ufssd.atomic import atomic_write_bytes
from ufssd.config import DetectorConfig, config_from_dict, config_from_json, config_to_json
from ufssd.model.detector import UFSSD

FORMAT = "ufssd-weights"
VERSION = "1"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save files are zip archives


class WeightFileError(ValueError):
    """A weight file that cannot be used: corrupt, a checksum mismatch, or config/weights disagree."""


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
        raise WeightFileError(f"{path}: not a readable safetensors file ({exc})") from exc
    if metadata.get("format") != FORMAT or "config" not in metadata or "sha256" not in metadata:
        raise WeightFileError(f"{path}: not a ufssd weight file (metadata needs format, config and sha256)")
    digest = tensors_sha256(state)
    if digest != metadata["sha256"]:
        raise WeightFileError(f"{path}: checksum mismatch (file {metadata['sha256'][:12]}..., tensors {digest[:12]}...)")
    try:
        cfg = config_from_json(metadata["config"])
    except (ValueError, TypeError) as exc:
        raise WeightFileError(f"{path}: invalid config in metadata ({exc})") from exc
    return cfg, state


def _read_checkpoint(path: Path) -> tuple[DetectorConfig, dict[str, Tensor]]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a damaged or unsafe file
        raise WeightFileError(f"{path}: not a readable training checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("config"), dict):
        raise WeightFileError(f"{path}: a checkpoint needs the keys 'model' (state dict) and 'config' (config dict)")
    try:
        cfg = config_from_dict(ckpt["config"])
    except (ValueError, TypeError) as exc:
        raise WeightFileError(f"{path}: invalid config in checkpoint ({exc})") from exc
    return cfg, ckpt["model"]


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> UFSSD:
    """A :class:`UFSSD` (eval mode, on ``map_location``) from a .safetensors weight file or a
    training checkpoint (torch file with "model" and "config", read with ``weights_only=True``).

    Raises FileNotFoundError for a missing file and :class:`WeightFileError` (a ValueError) for a
    corrupt file, a checksum mismatch or a config that does not match the weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    cfg, state = _read_checkpoint(path) if magic == _ZIP_MAGIC else _read_safetensors(path)
    try:
        model = UFSSD(cfg, load_pretrained_backbone=False)
    except ValueError as exc:
        raise WeightFileError(f"{path}: the stored config cannot build a model ({exc})") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightFileError(f"{path}: the weights do not match the stored config ({cfg.name}): {exc}") from exc
    return model.to(map_location).eval()


def read_config(path: str | os.PathLike) -> DetectorConfig:
    """The DetectorConfig stored in a .safetensors weight file, without reading the tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
        return config_from_json(metadata["config"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise WeightFileError(f"{path}: no config in the metadata ({exc})") from exc
    except Exception as exc:  # safetensors header errors
        raise WeightFileError(f"{path}: not a readable safetensors file ({exc})") from exc
