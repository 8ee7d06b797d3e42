"""``FaceDetector``: images in, faces out (boxes in original pixels and scores).

Input policy (paper notes section 7, ``docs/inference.md``): each image is used at its original
size and downscaled only when it exceeds the pixel limit (``max_pixels``, default
``InferenceConfig.max_pixels`` = 4096 x 4096) or, when given, the longest-side limit
``max_size``; it is normalised, then zero-padded bottom/right to a multiple of 128. Boxes are
mapped back to original pixels (divided by the per-axis scale) and clipped to the image.

Batches: every image is resized and padded exactly as it would be alone; a batch groups only
images whose padded size is equal, so batched inference gives the boxes of one-by-one inference.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ufssd.config import DetectorConfig, InferenceConfig
from ufssd.geometry.anchors import anchors_for_input, feature_sizes, padded_size
from ufssd.inference.io import MAX_INPUT_PIXELS, load_image
from ufssd.inference.onnx_backend import OnnxRunner, TorchRunner, create_session, read_onnx_config
from ufssd.inference.postprocess import masked_anchor_keep, postprocess
from ufssd.inference.results import DetectionResult
from ufssd.inference.tta import TTAConfig, filter_boxes, merge_passes, scale_plan

__all__ = ["FaceDetector", "DefaultWeightsMissingError", "default_weights_path", "ImageInput"]

log = logging.getLogger(__name__)

ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image]
BACKENDS = ("torch", "onnxruntime")


class DefaultWeightsMissingError(FileNotFoundError):
    """The package has no embedded default model (yet)."""


def default_weights_path() -> Path:
    """Where the embedded default model lives: ``ufssd/weights/default.safetensors``."""
    return Path(str(resources.files("ufssd") / "weights" / "default.safetensors"))


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    if (height, width) == image.shape[:2]:
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class FaceDetector:
    """Find faces in images.

    Args:
        weights: a ``.safetensors`` weight file, a training checkpoint ``.pt``, or an ``.onnx`` file
            from ``ufssd export``. ``None``: the embedded default model (or ``preset``).
        preset: with no ``weights``, build this preset with *random* weights (for tests and
            benchmarks; a warning is logged).
        device: torch device (``"cpu"``, ``"cuda"``...).
        backend: ``"torch"`` or ``"onnxruntime"``; ``None`` picks onnxruntime for ``.onnx``
            weights and torch otherwise. onnxruntime with non-ONNX weights exports the network in
            memory first.
        score_threshold: minimum face score (default ``InferenceConfig.score_threshold``).
        nms_threshold: NMS IoU (default 0.3). top_k: detections kept after NMS (default 750).
        max_size: downscale images whose longer side exceeds this many pixels (default: no limit).
        max_pixels: downscale images with more pixels than this (default 4096 x 4096).
        pixel_limit: refuse images with more pixels than this (default 100 megapixels).
        tta: test-time augmentation, a :class:`TTAConfig` or ``"flip,scales,vote"`` (default off).
        num_threads: onnxruntime intra-op threads (torch threads are global: ``torch.set_num_threads``).
        skip_masked_anchors: drop anchors of FFMM cells with mask 0 before top-k and NMS
            (default ``InferenceConfig.skip_masked_anchors``).
        fuse_batchnorm: torch backend: run a copy of the model with BatchNorm folded into the
            convolutions (:func:`ufssd.model.fuse_batchnorm`; same outputs up to float rounding).
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        preset: str | DetectorConfig | None = None,
        device: str | torch.device = "cpu",
        backend: str | None = None,
        score_threshold: float | None = None,
        nms_threshold: float | None = None,
        top_k: int | None = None,
        max_size: int | None = None,
        max_pixels: int | None = None,
        pixel_limit: int | None = MAX_INPUT_PIXELS,
        tta: TTAConfig | str | None = None,
        num_threads: int | None = None,
        skip_masked_anchors: bool | None = None,
        fuse_batchnorm: bool = True,
        *,
        _model: torch.nn.Module | None = None,
    ) -> None:
        self.device = torch.device(device)
        weights_path = Path(weights) if weights is not None else None
        is_onnx = weights_path is not None and weights_path.suffix.lower() == ".onnx"
        if backend is None:
            backend = "onnxruntime" if is_onnx else "torch"
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if weights is not None and preset is not None:
            raise ValueError("give weights or preset, not both (a weight file stores its config)")
        if is_onnx and backend != "onnxruntime":
            raise ValueError(f"{weights}: an .onnx file needs backend='onnxruntime'")
        self.backend = backend
        self.num_threads = num_threads
        self.source = "in-memory model"

        model: torch.nn.Module | None = _model
        session = None
        if model is not None:
            config = model.config
        elif is_onnx:
            if not weights_path.is_file():
                raise FileNotFoundError(f"ONNX model not found: {weights_path}")
            session = create_session(weights_path, num_threads, self.device)
            config = read_onnx_config(session, str(weights_path))
            self.source = str(weights_path)
        else:
            from ufssd.model import build_model, load_weights

            if weights_path is not None:
                model = load_weights(weights_path, map_location=self.device)
                self.source = str(weights_path)
            elif preset is not None:
                model = build_model(preset)
                self.source = f"preset {model.config.name} (untrained)"
                log.warning(
                    "FaceDetector: preset %r with random weights (untrained): detections are meaningless",
                    model.config.name,
                )
            else:
                path = default_weights_path()
                if not path.is_file():
                    raise DefaultWeightsMissingError(
                        f"no embedded default model: {path} does not exist yet; pass weights= "
                        "(a .safetensors, .pt or .onnx file) or preset= (random weights, for testing)"
                    )
                model = load_weights(path, map_location=self.device)
                self.source = f"embedded default ({path.name})"
            config = model.config

        if model is not None:
            # never change the caller's model (from_model): export and fusion work on copies
            if backend == "onnxruntime":
                from ufssd.inference.export import export_onnx

                data = export_onnx(model, None, check=False).data
                session = create_session(data, num_threads, self.device)
                model = None
            elif fuse_batchnorm:
                from ufssd.model import fuse_batchnorm as fuse

                model = fuse(model).to(self.device)
            else:
                model = model.to(self.device).eval()
        self.model = model
        self.session = session
        self.runner = OnnxRunner(session) if backend == "onnxruntime" else TorchRunner(model, self.device)
        self.config: DetectorConfig = config

        inf = config.inference
        self.inference: InferenceConfig = dataclasses.replace(
            inf,
            score_threshold=inf.score_threshold if score_threshold is None else float(score_threshold),
            nms_iou=inf.nms_iou if nms_threshold is None else float(nms_threshold),
            top_k=inf.top_k if top_k is None else int(top_k),
            max_pixels=inf.max_pixels if max_pixels is None else int(max_pixels),
            skip_masked_anchors=inf.skip_masked_anchors if skip_masked_anchors is None else bool(skip_masked_anchors),
        )
        if max_size is not None and int(max_size) < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = None if max_size is None else int(max_size)
        self.pixel_limit = pixel_limit
        self.tta = TTAConfig.parse(tta)
        self._anchors: dict[tuple[int, int], Tensor] = {}
        # seconds spent in the last detect() call: pre-processing, network, post-processing
        self.last_timings: dict[str, float] = {"pre": 0.0, "net": 0.0, "post": 0.0}

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def from_model(cls, model: torch.nn.Module, **kwargs: Any) -> FaceDetector:
        """A detector around an in-memory :class:`ufssd.model.UFSSD` (e.g. the trainer's, for
        periodic evaluation), on the model's device unless ``device=`` is given. The detector
        runs a copy (BatchNorm folded, or the ONNX export), so the model itself, its mode and
        its device are left as they are; with ``fuse_batchnorm=False`` it runs the model itself,
        in eval mode (the caller restores train mode)."""
        if "weights" in kwargs or "preset" in kwargs:
            raise TypeError("from_model takes the model itself, not weights= or preset=")
        while True:  # unwrap torch.compile (._orig_mod) and DistributedDataParallel (.module)
            inner = getattr(model, "_orig_mod", None)
            if inner is None and not hasattr(model, "config"):
                inner = getattr(model, "module", None)
            if inner is None:
                break
            model = inner
        if not hasattr(model, "config"):
            raise TypeError(f"from_model needs a ufssd UFSSD model (with .config), got {type(model).__name__}")
        if "device" not in kwargs:
            param = next(model.parameters(), None)
            kwargs["device"] = param.device if param is not None else "cpu"
        return cls(_model=model, **kwargs)

    def __repr__(self) -> str:
        return (
            f"FaceDetector({self.config.name!r}, source={self.source!r}, backend={self.backend!r}, "
            f"device={str(self.device)!r}, score_threshold={self.inference.score_threshold})"
        )

    # ------------------------------------------------------------------ input policy

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The size ``(h, w)`` the network sees (before padding) for an image of ``height x width``:
        the original, downscaled only beyond ``max_pixels`` or ``max_size``."""
        scale = 1.0
        if self.max_size is not None:
            scale = min(scale, self.max_size / max(height, width))
        if height * width > self.inference.max_pixels:
            scale = min(scale, math.sqrt(self.inference.max_pixels / (height * width)))
        if scale >= 1.0:
            return height, width
        return max(1, int(height * scale)), max(1, int(width * scale))

    def describe_input_policy(self) -> str:
        limit = f"{self.inference.max_pixels / 1e6:.1f} megapixels"
        if self.max_size is not None:
            limit += f" or a longer side of {self.max_size} px"
        return (
            f"original size, downscaled only beyond {limit}; zero-padded bottom/right to a multiple "
            f"of {self.config.anchors.pad_multiple}; boxes in original pixels; TTA "
            f"{self.tta.describe() if self.tta else 'none'}; score >= {self.inference.score_threshold:g}, "
            f"top {self.inference.pre_nms_top_k} before NMS at IoU {self.inference.nms_iou:g}, "
            f"at most {self.inference.top_k} faces"
        )

    # ------------------------------------------------------------------ detection

    def detect(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int = 1,
        bgr: bool = False,
        score_threshold: float | None = None,
        tta: TTAConfig | str | None | bool = False,
    ) -> DetectionResult | list[DetectionResult]:
        """Faces in one image (returns a :class:`DetectionResult`) or a list of images (a list).

        Args:
            images: a path, a NumPy array (``(H, W)``/``(H, W, 1|3|4)``, RGB unless ``bgr``;
                uint8, uint16, or float in [0, 1]), a PIL image; or a list of them (a 4-D array
                is a list of images).
            batch_size: images per forward pass (images of equal padded size are grouped).
            bgr: NumPy inputs are B, G, R.
            score_threshold: overrides the detector's threshold for this call.
            tta: overrides the detector's TTA for this call (``False``: keep the detector's).
        Raises:
            ufssd.inference.io.InputError for an image that cannot be used.
        """
        single = not isinstance(images, (list, tuple)) and not (
            isinstance(images, np.ndarray) and images.ndim == 4
        )
        items = [images] if single else list(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        tta_cfg = self.tta if tta is False else TTAConfig.parse(tta)
        self.last_timings = {"pre": 0.0, "net": 0.0, "post": 0.0}

        t0 = time.perf_counter()
        arrays = [load_image(x, bgr=bgr, pixel_limit=self.pixel_limit) for x in items]
        sources = [str(x) if isinstance(x, (str, os.PathLike)) else None for x in items]
        self.last_timings["pre"] += time.perf_counter() - t0

        if tta_cfg is not None:
            outs = [self._detect_tta(a, tta_cfg, score_threshold) for a in arrays]
        else:
            sizes = [self.network_size(*a.shape[:2]) for a in arrays]
            outs = self._detect_arrays(arrays, sizes, [False] * len(arrays), batch_size, score_threshold)
        results = [
            DetectionResult(
                b.numpy(), s.numpy(), image_size=a.shape[:2], input_size=self.network_size(*a.shape[:2]), source=src
            )
            for (b, s), a, src in zip(outs, arrays, sources)
        ]
        return results[0] if single else results

    def _detect_arrays(
        self,
        arrays: list[np.ndarray],
        sizes: list[tuple[int, int]],
        flips: list[bool],
        batch_size: int,
        score_threshold: float | None,
    ) -> list[tuple[Tensor, Tensor]]:
        """RGB uint8 arrays, each resized to ``sizes[i]`` (and mirrored when ``flips[i]``) ->
        per image (boxes (K, 4) in original pixels, scores (K,)), CPU float32 tensors."""
        multiple = self.config.anchors.pad_multiple
        padded = [padded_size(h, w, multiple) for h, w in sizes]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(padded):
            groups.setdefault(p, []).append(i)
        out: list[tuple[Tensor, Tensor] | None] = [None] * len(arrays)
        for (hp, wp), members in groups.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                results = self._run_batch(
                    [arrays[i] for i in chunk], [sizes[i] for i in chunk], [flips[i] for i in chunk], (hp, wp),
                    score_threshold,
                )
                for i, r in zip(chunk, results):
                    out[i] = r
        return out  # type: ignore[return-value]

    def _run_batch(
        self,
        arrays: list[np.ndarray],
        sizes: list[tuple[int, int]],
        flips: list[bool],
        padded: tuple[int, int],
        score_threshold: float | None,
    ) -> list[tuple[Tensor, Tensor]]:
        t0 = time.perf_counter()
        hp, wp = padded
        table = self._normalize_table()
        batch_np = np.zeros((len(arrays), 3, hp, wp), dtype=np.float32)
        for k, (a, (h, w), flip) in enumerate(zip(arrays, sizes, flips)):
            x = _resize(a, h, w)
            if flip:
                x = x[:, ::-1]
            for c in range(3):
                np.take(table[c], x[..., c], out=batch_np[k, c, :h, :w], mode="clip")
        batch = torch.from_numpy(batch_np).to(self.device)
        t1 = time.perf_counter()
        cls_logits, box_deltas, mask_logits = self.runner(batch)
        t2 = time.perf_counter()
        anchors = self._anchors_for(hp, wp, cls_logits.device)
        keep = None
        m = self.config.model
        if self.inference.skip_masked_anchors and m.ffmm_levels:
            level_sizes = feature_sizes(hp, wp, self.config.anchors.strides)
            keep = masked_anchor_keep(mask_logits, level_sizes, m.ffmm_levels, m.mask_threshold)
        raw = postprocess(
            cls_logits, box_deltas, anchors, self.inference, score_threshold, anchor_cfg=self.config.anchors, keep=keep
        )
        results = []
        for (boxes, scores), a, (h, w), flip in zip(raw, arrays, sizes, flips):
            H, W = a.shape[:2]
            boxes = boxes.to("cpu", torch.float32)
            scale = torch.tensor([W / w, H / h, W / w, H / h], dtype=torch.float32)
            boxes = boxes * scale
            if flip:
                boxes = torch.stack([W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0], boxes[:, 3]], dim=1)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, W)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, H)
            results.append((boxes, scores.to("cpu", torch.float32)))
        t3 = time.perf_counter()
        self.last_timings["pre"] += t1 - t0
        self.last_timings["net"] += t2 - t1
        self.last_timings["post"] += t3 - t2
        return results

    def _normalize_table(self) -> np.ndarray:
        """``(3, 256)`` float32: :func:`ufssd.model.normalize` of every uint8 value per channel,
        so normalising an image is a table look-up with bit-identical results."""
        if getattr(self, "_table", None) is None:
            from ufssd.model import normalize

            values = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256)
            self._table = np.ascontiguousarray(normalize(values, self.config.model)[0, :, 0, :].numpy())
        return self._table

    def _anchors_for(self, hp: int, wp: int, device: torch.device) -> Tensor:
        key = (hp, wp)
        if key not in self._anchors:
            self._anchors[key] = anchors_for_input(hp, wp, self.config.anchors)
            if len(self._anchors) > 64:  # many image sizes: keep the cache bounded
                self._anchors.pop(next(iter(self._anchors)))
        return self._anchors[key].to(device)

    def _detect_tta(self, image: np.ndarray, cfg: TTAConfig, score_threshold: float | None) -> tuple[Tensor, Tensor]:
        H, W = image.shape[:2]
        per_pass = []
        for p in scale_plan(H, W, cfg):
            if p.scale is None:
                size = self.network_size(H, W)
            else:
                size = (max(1, int(round(H * p.scale))), max(1, int(round(W * p.scale))))
            (boxes, scores), = self._detect_arrays([image], [size], [p.flip], 1, score_threshold)
            per_pass.append(filter_boxes(boxes, scores, p.keep, cfg))
        t0 = time.perf_counter()
        boxes, scores = merge_passes(per_pass, cfg, self.inference.nms_iou, self.inference.top_k)
        self.last_timings["post"] += time.perf_counter() - t0
        return boxes, scores
