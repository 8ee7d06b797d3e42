"""Running the exported network with onnxruntime (the graph is documented in ``export.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ufssd.config import DetectorConfig, config_from_json

__all__ = ["create_session", "read_onnx_config", "OnnxRunner", "TorchRunner", "ONNX_INPUT", "METADATA_CONFIG"]

ONNX_INPUT = "images"
METADATA_CONFIG = "ufssd_config"


def create_session(
    model: bytes | str | os.PathLike, num_threads: int | None = None, device: str | torch.device = "cpu"
):
    """An ``onnxruntime.InferenceSession`` with the package's settings: ``intra_op_num_threads``
    = ``num_threads`` (``None``: onnxruntime's default, all cores), ``inter_op_num_threads`` 1,
    sequential execution, every graph optimisation, no spin-waiting of idle worker threads.
    CUDA when ``device`` is CUDA and available."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("backend 'onnxruntime' needs the onnxruntime package: pip install 'ufssd[onnx]'") from exc
    opts = ort.SessionOptions()
    if num_threads:
        opts.intra_op_num_threads = int(num_threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # idle worker threads sleep instead of spinning: on a small, shared CPU the spinning threads
    # compete with our own pre/post-processing (measured on 2 busy cores: median 40 ms vs 65 ms)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    source = model if isinstance(model, bytes) else str(Path(model))
    return ort.InferenceSession(source, sess_options=opts, providers=providers)


def read_onnx_config(session, source: str = "the ONNX model") -> DetectorConfig:
    """The :class:`DetectorConfig` that ``ufssd export`` stores in the model's metadata."""
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_CONFIG not in meta:
        raise ValueError(f"{source}: no '{METADATA_CONFIG}' metadata; export it with 'ufssd export'")
    return config_from_json(meta[METADATA_CONFIG])


class TorchRunner:
    """The PyTorch network as a callable: normalised padded images -> raw outputs."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        with torch.inference_mode():
            out = self.model(images.to(self.device))
        return out[0], out[1], tuple(out[2])


class OnnxRunner:
    """An onnxruntime session as a callable with the same contract as :class:`TorchRunner`
    (outputs as CPU torch tensors, so :func:`~ufssd.inference.postprocess.postprocess` serves both)."""

    def __init__(self, session) -> None:
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        x = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        outs = self.session.run(self.output_names, {ONNX_INPUT: x})
        tensors = [torch.from_numpy(np.asarray(o)) for o in outs]
        return tensors[0], tensors[1], tuple(tensors[2:])
