"""Weights and backends: the network a :class:`~ufssd.inference.FaceDetector` runs.

:func:`load_model` gives the PyTorch network of a weight file (``.safetensors`` or a training
checkpoint ``.pt``), of a preset (random weights) or of the embedded default model
(:func:`default_weights_path`); the commands that take the network itself (``ufssd export``,
``ufssd bench``) call it. :func:`load_network` turns a weight file (those, or an ``.onnx`` file
from ``ufssd export``), a preset or an in-memory model into a :class:`Network`: the stored :class:`~ufssd.config.DetectorConfig` and a runner (normalised,
padded images in, raw outputs out) for the torch or the onnxruntime backend. Pre-processing is
:mod:`ufssd.inference.transform`; post-processing is :mod:`ufssd.inference.postprocess`.

Every problem with a weight file, whatever its format, is a
:class:`~ufssd.model.serialization.WeightFileError` (a ``ValueError``; a missing file is also a
``FileNotFoundError``) with a one-line message ``<path>: <what is wrong>``, which ``ufssd detect``
prints as it is. onnxruntime's own errors (``InvalidProtobuf`` ...) are turned into one too.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ufssd.config import DetectorConfig
from ufssd.inference.onnx_backend import OnnxRunner, TorchRunner, create_session, read_onnx_config
from ufssd.model.serialization import WeightFileError, check_weight_file, first_line

if TYPE_CHECKING:
    from ufssd.model import UFSSD

__all__ = [
    "BACKENDS",
    "Network",
    "DefaultWeightsMissingError",
    "default_weights_path",
    "embedded_weights",
    "load_model",
    "load_network",
    "open_onnx",
]

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime")


class DefaultWeightsMissingError(FileNotFoundError):
    """The package has no embedded default model (yet)."""


def default_weights_path() -> Path:
    """Where the embedded default model lives: ``ufssd/weights/default.safetensors``."""
    return Path(str(resources.files("ufssd") / "weights" / "default.safetensors"))


def embedded_weights() -> Path:
    """The embedded default model's file; :class:`DefaultWeightsMissingError` if there is none."""
    path = default_weights_path()
    if not path.is_file():
        raise DefaultWeightsMissingError(
            f"no embedded default model: {path} does not exist yet; pass weights= "
            "(a .safetensors, .pt or .onnx file) or preset= (random weights, for testing)"
        )
    return path


def load_model(
    weights: str | os.PathLike | None = None,
    preset: str | DetectorConfig | None = None,
    *,
    device: str | torch.device = "cpu",
) -> UFSSD:
    """The PyTorch network, in eval mode on ``device`` (BatchNorm not folded), of a weight file
    (``.safetensors`` or a training checkpoint ``.pt``), of a preset (*random* weights; a warning
    is logged), or, with neither, of the embedded default model.

    Raises:
        ValueError: both given; KeyError: an unknown preset; DefaultWeightsMissingError (a
        ``FileNotFoundError``): no embedded default model; WeightFileError (a ``ValueError``; a
        missing file is also a ``FileNotFoundError``): a weight file that cannot be used.
    """
    if weights is not None and preset is not None:
        raise ValueError("give weights or preset, not both (a weight file stores its config)")
    if preset is not None:
        from ufssd.model import build_model

        model = build_model(preset)
        log.warning("preset %r with random weights (untrained): detections are meaningless", model.config.name)
        return model.to(device).eval()
    from ufssd.model import load_weights

    return load_weights(embedded_weights() if weights is None else weights, map_location=device)


@dataclass
class Network:
    """What a detector runs.

    Attributes:
        config: the stored config (normalisation, anchors, post-processing defaults).
        backend: ``"torch"`` or ``"onnxruntime"``.
        runner: ``runner(images (N, 3, H, W) float32) -> (cls_logits, box_deltas, mask_logits)``.
        source: where the weights came from, for messages (a path, ``"preset ..."``, ...).
        model: the torch module run (BatchNorm folded unless asked not to), or None for onnxruntime.
        session: the onnxruntime session, or None for torch.
    """

    config: DetectorConfig
    backend: str
    runner: TorchRunner | OnnxRunner
    source: str
    model: torch.nn.Module | None = None
    session: Any | None = None


def _onnxruntime_detail(exc: BaseException, path: Path) -> str:
    """onnxruntime's message without its code prefix and the repeated path."""
    detail = first_line(exc)
    detail = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", detail)
    detail = detail.replace(f"Load model from {path} failed:", "").strip()
    return detail or type(exc).__name__


def open_onnx(
    path: str | os.PathLike, num_threads: int | None = None, device: str | torch.device = "cpu"
) -> tuple[Any, DetectorConfig]:
    """An onnxruntime session and the config stored in an ``.onnx`` file from ``ufssd export``.

    Raises:
        WeightFileError: missing, empty or corrupt file, or one without ufssd's config metadata.
    """
    path = Path(path)
    check_weight_file(path)
    try:
        session = create_session(path, num_threads, device)
    except ImportError:
        raise
    except Exception as exc:  # onnxruntime's pybind errors (InvalidProtobuf, Fail, ...) derive from Exception
        raise WeightFileError(f"{path}: not a readable ONNX model ({_onnxruntime_detail(exc, path)})") from exc
    try:
        config = read_onnx_config(session, str(path))
    except WeightFileError:
        raise
    except (ValueError, TypeError) as exc:
        message = first_line(exc)
        prefix = f"{path}: "
        if not message.startswith(prefix):
            message = f"{prefix}invalid ufssd config ({message})"
        raise WeightFileError(message) from exc
    return session, config


def load_network(
    weights: str | os.PathLike | None = None,
    preset: str | DetectorConfig | None = None,
    model: torch.nn.Module | None = None,
    *,
    device: str | torch.device = "cpu",
    backend: str | None = None,
    num_threads: int | None = None,
    fuse_batchnorm: bool = True,
    source: str | None = None,
) -> Network:
    """The network of exactly one of ``weights``, ``preset`` or ``model``.

    Args:
        weights: a ``.safetensors`` file, a training checkpoint ``.pt``, or an ``.onnx`` file.
        preset: a preset name or config, built with *random* weights (a warning is logged).
        model: an in-memory :class:`ufssd.model.UFSSD`; never changed (export and BatchNorm
            folding work on copies; with ``fuse_batchnorm=False`` it is run itself, in eval mode).
        device: torch device (onnxruntime uses CUDA when this is CUDA and available).
        backend: ``"torch"`` or ``"onnxruntime"``; ``None``: onnxruntime for ``.onnx`` files,
            torch otherwise. onnxruntime with a torch model exports the network in memory first.
        num_threads: onnxruntime intra-op threads (torch's are process-wide).
        fuse_batchnorm: torch backend: run a copy with BatchNorm folded into the convolutions.
        source: how messages name the weights (default: the path, the preset, "in-memory model").
    Raises:
        ValueError: a bad combination of arguments; WeightFileError (a ValueError) for a weight
            file that cannot be used.
    """
    given = sum(x is not None for x in (weights, preset, model))
    if given > 1:
        raise ValueError("give weights or preset, not both (a weight file stores its config)")
    if given == 0:
        raise ValueError("give weights, preset or model")
    device = torch.device(device)
    path = Path(weights) if weights is not None else None
    is_onnx = path is not None and path.suffix.lower() == ".onnx"
    if backend is None:
        backend = "onnxruntime" if is_onnx else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if is_onnx and backend != "onnxruntime":
        raise ValueError(f"{weights}: an .onnx file needs backend='onnxruntime'")

    if is_onnx:
        session, config = open_onnx(path, num_threads, device)
        return Network(config, backend, OnnxRunner(session), source or str(path), None, session)
    if model is None:
        model = load_model(path, preset, device=device)
        source = source or (str(path) if path is not None else f"preset {model.config.name} (untrained)")
    return _run_torch_model(model, source or "in-memory model", device, backend, num_threads, fuse_batchnorm)


def _run_torch_model(
    model: torch.nn.Module,
    source: str,
    device: torch.device,
    backend: str,
    num_threads: int | None,
    fuse_batchnorm: bool,
) -> Network:
    """A torch model on ``backend``: exported in memory for onnxruntime, else (a BatchNorm-folded
    copy of) the model itself on ``device``. The caller's model is never changed."""
    if backend == "onnxruntime":
        from ufssd.inference.export import export_onnx

        session = create_session(export_onnx(model, None, check=False).data, num_threads, device)
        return Network(model.config, backend, OnnxRunner(session), source, None, session)
    if fuse_batchnorm:
        from ufssd.model import fuse_batchnorm as fuse

        model = fuse(model).to(device)
    else:
        model = model.to(device).eval()
    return Network(model.config, backend, TorchRunner(model, device), source, model, None)
