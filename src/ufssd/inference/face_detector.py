"""``FaceDetector``: images in, faces out (boxes in original pixels and scores).

The detector wires three parts together, each in its own module: the network
(:mod:`ufssd.inference.loading`: weights and backend), pre-processing
(:mod:`ufssd.inference.transform`: the input policy, resize, normalise, pad, and boxes back to
original pixels) and post-processing (:mod:`ufssd.inference.postprocess`: decode, threshold, NMS).

Settings: the :class:`InferenceConfig` stored with the weights, with the constructor's overrides,
is :attr:`FaceDetector.inference`. A call's own overrides (``detect(score_threshold=...)``) are
resolved once, at the top of :meth:`FaceDetector.detect` (:meth:`FaceDetector.resolve`), into one
``InferenceConfig``; only that config travels down to pre- and post-processing.

Batches: every image is resized and padded exactly as it would be alone; a batch groups only
images whose padded size is equal, so batched inference gives the boxes of one-by-one inference.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ufssd.config import DetectorConfig, InferenceConfig
from ufssd.geometry.anchors import anchors_for_input, feature_sizes
from ufssd.images import MAX_INPUT_PIXELS
from ufssd.inference.io import load_image
from ufssd.inference.loading import DefaultWeightsMissingError, default_weights_path, embedded_weights, load_network
from ufssd.inference.postprocess import masked_anchor_keep, postprocess
from ufssd.inference.results import DetectionResult
from ufssd.inference.transform import InputTransform, boxes_to_original
from ufssd.inference.tta import TTAConfig, filter_boxes, merge_passes, scale_plan

__all__ = ["FaceDetector", "DefaultWeightsMissingError", "default_weights_path", "ImageInput"]

log = logging.getLogger(__name__)

ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image]


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
        soft_nms_sigma: > 0 replaces NMS by Gaussian Soft-NMS with this sigma (0.5 is the Soft-NMS
            paper's; default ``InferenceConfig.soft_nms_sigma``, 0 = NMS at ``nms_threshold``).
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
        soft_nms_sigma: float | None = None,
        fuse_batchnorm: bool = True,
        *,
        _model: torch.nn.Module | None = None,
    ) -> None:
        self.device = torch.device(device)
        if _model is None and weights is None and preset is None:
            weights = embedded_weights()
            source = f"embedded default ({weights.name})"
        else:
            source = None
        network = load_network(
            weights, preset, _model, device=self.device, backend=backend, num_threads=num_threads,
            fuse_batchnorm=fuse_batchnorm, source=source,
        )
        self.config: DetectorConfig = network.config
        self.backend = network.backend
        self.source = network.source
        self.model = network.model
        self.session = network.session
        self.runner = network.runner
        self.num_threads = num_threads

        inf = self.config.inference
        self.inference: InferenceConfig = dataclasses.replace(
            inf,
            score_threshold=inf.score_threshold if score_threshold is None else float(score_threshold),
            nms_iou=inf.nms_iou if nms_threshold is None else float(nms_threshold),
            top_k=inf.top_k if top_k is None else int(top_k),
            max_pixels=inf.max_pixels if max_pixels is None else int(max_pixels),
            skip_masked_anchors=inf.skip_masked_anchors if skip_masked_anchors is None else bool(skip_masked_anchors),
            soft_nms_sigma=inf.soft_nms_sigma if soft_nms_sigma is None else float(soft_nms_sigma),
        )
        self.transform = InputTransform(self.config.model, self.config.anchors.pad_multiple, max_size)
        self.pixel_limit = pixel_limit
        self.tta = TTAConfig.parse(tta)
        # anchors per (padded height, padded width, device), made on that device once
        self._anchors: dict[tuple[int, int, torch.device], Tensor] = {}
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

    # ------------------------------------------------------------------ settings and input policy

    def resolve(self, score_threshold: float | None = None, *, evaluation: bool = False) -> InferenceConfig:
        """The settings of one call: :attr:`inference` with the call's overrides applied.

        Args:
            score_threshold: the call's threshold; ``None`` keeps the detector's, or, with
                ``evaluation``, takes ``InferenceConfig.eval_score_threshold`` (0.01: the low
                threshold of WIDER prediction files; its only home).
        """
        if score_threshold is None and evaluation:
            score_threshold = self.inference.eval_score_threshold
        if score_threshold is None:
            return self.inference
        return dataclasses.replace(self.inference, score_threshold=float(score_threshold))

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The size ``(h, w)`` the network sees (before padding) for an image of ``height x width``:
        the original, downscaled only beyond ``max_pixels`` or ``max_size``."""
        return self.transform.network_size(height, width, self.inference.max_pixels)

    def describe_input_policy(
        self, config: InferenceConfig | None = None, tta: TTAConfig | str | None | bool = False
    ) -> str:
        """The input policy and post-processing of ``config`` (default :attr:`inference`) with
        ``tta`` (``False``: the detector's TTA), in words: what ``predict-widerface`` prints."""
        cfg = self.inference if config is None else config
        tta_cfg = self.tta if tta is False else TTAConfig.parse(tta)
        limit = f"{cfg.max_pixels / 1e6:.1f} megapixels"
        if self.transform.max_size is not None:
            limit += f" or a longer side of {self.transform.max_size} px"
        if cfg.soft_nms_sigma > 0:
            suppression = f"Gaussian Soft-NMS (sigma {cfg.soft_nms_sigma:g})"
        else:
            suppression = f"NMS at IoU {cfg.nms_iou:g}"
        return (
            f"original size, downscaled only beyond {limit}; zero-padded bottom/right to a multiple "
            f"of {self.transform.pad_multiple}; boxes in original pixels; TTA "
            f"{tta_cfg.describe() if tta_cfg else 'none'}; score >= {cfg.score_threshold:g}, "
            f"top {cfg.pre_nms_top_k} before {suppression}, at most {cfg.top_k} faces"
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
            ufssd.images.InputError for an image that cannot be used.
        """
        single = not isinstance(images, (list, tuple)) and not (
            isinstance(images, np.ndarray) and images.ndim == 4
        )
        items = [images] if single else list(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        cfg = self.resolve(score_threshold)  # the one place this call's overrides are resolved
        tta_cfg = self.tta if tta is False else TTAConfig.parse(tta)
        self.last_timings = {"pre": 0.0, "net": 0.0, "post": 0.0}

        t0 = time.perf_counter()
        arrays = [load_image(x, bgr=bgr, pixel_limit=self.pixel_limit) for x in items]
        sources = [str(x) if isinstance(x, (str, os.PathLike)) else None for x in items]
        sizes = [self.transform.network_size(*a.shape[:2], cfg.max_pixels) for a in arrays]
        self.last_timings["pre"] += time.perf_counter() - t0

        if tta_cfg is not None:
            outs = [self._detect_tta(a, size, tta_cfg, cfg) for a, size in zip(arrays, sizes)]
        else:
            outs = self._detect_arrays(arrays, sizes, [False] * len(arrays), batch_size, cfg)
        results = [
            DetectionResult(b.numpy(), s.numpy(), image_size=a.shape[:2], input_size=size, source=src)
            for (b, s), a, size, src in zip(outs, arrays, sizes, sources)
        ]
        return results[0] if single else results

    def _detect_arrays(
        self,
        arrays: list[np.ndarray],
        sizes: list[tuple[int, int]],
        flips: list[bool],
        batch_size: int,
        cfg: InferenceConfig,
    ) -> list[tuple[Tensor, Tensor]]:
        """RGB uint8 arrays, each resized to ``sizes[i]`` (and mirrored when ``flips[i]``) ->
        per image (boxes (K, 4) in original pixels, scores (K,)), CPU float32 tensors."""
        padded = [self.transform.padded_size(h, w) for h, w in sizes]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(padded):
            groups.setdefault(p, []).append(i)
        out: list[tuple[Tensor, Tensor] | None] = [None] * len(arrays)
        for size, members in groups.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                results = self._run_batch(
                    [arrays[i] for i in chunk], [sizes[i] for i in chunk], [flips[i] for i in chunk], size, cfg
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
        cfg: InferenceConfig,
    ) -> list[tuple[Tensor, Tensor]]:
        """One forward pass: pre-process, run, post-process, map boxes back to original pixels."""
        t0 = time.perf_counter()
        batch = self.transform.batch(arrays, sizes, flips, padded).to(self.device)
        t1 = time.perf_counter()
        cls_logits, box_deltas, mask_logits = self.runner(batch)
        t2 = time.perf_counter()
        hp, wp = padded
        anchors = self._anchors_for(hp, wp, cls_logits.device)
        keep = None
        m = self.config.model
        if cfg.skip_masked_anchors and m.ffmm_levels:
            level_sizes = feature_sizes(hp, wp, self.config.anchors.strides)
            keep = masked_anchor_keep(mask_logits, level_sizes, m.ffmm_levels, m.mask_threshold)
        raw = postprocess(cls_logits, box_deltas, anchors, cfg, anchor_cfg=self.config.anchors, keep=keep)
        results = [
            (boxes_to_original(boxes, a.shape[:2], size, flip), scores.to("cpu", torch.float32))
            for (boxes, scores), a, size, flip in zip(raw, arrays, sizes, flips)
        ]
        t3 = time.perf_counter()
        self.last_timings["pre"] += t1 - t0
        self.last_timings["net"] += t2 - t1
        self.last_timings["post"] += t3 - t2
        return results

    def _anchors_for(self, hp: int, wp: int, device: torch.device) -> Tensor:
        """The anchors of a ``hp x wp`` padded input on ``device``, copied there once (a copy per
        batch would wait for the device)."""
        key = (hp, wp, device)
        if key not in self._anchors:
            self._anchors[key] = anchors_for_input(hp, wp, self.config.anchors).to(device)
            if len(self._anchors) > 64:  # many image sizes: keep the cache bounded
                self._anchors.pop(next(iter(self._anchors)))
        return self._anchors[key]

    def _detect_tta(
        self, image: np.ndarray, base_size: tuple[int, int], tta: TTAConfig, cfg: InferenceConfig
    ) -> tuple[Tensor, Tensor]:
        """The passes of ``tta`` (the base pass at ``base_size``), each post-processed with
        ``cfg``, merged by voting or NMS."""
        H, W = image.shape[:2]
        per_pass = []
        for p in scale_plan(H, W, tta):
            if p.scale is None:
                size = base_size
            else:
                size = (max(1, int(round(H * p.scale))), max(1, int(round(W * p.scale))))
            (boxes, scores), = self._detect_arrays([image], [size], [p.flip], 1, cfg)
            per_pass.append(filter_boxes(boxes, scores, p.keep, tta))
        t0 = time.perf_counter()
        boxes, scores = merge_passes(per_pass, tta, cfg.nms_iou, cfg.top_k)
        self.last_timings["post"] += time.perf_counter() - t0
        return boxes, scores
