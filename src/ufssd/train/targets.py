"""Training targets per batch: anchor labels, regression deltas and FFMM / MCDM ground-truth masks.

:class:`TargetBuilder` turns the boxes of a collated batch into what the loss and the model need,
with the geometry functions only (anchors, S3FD matching, ``encode``, Eq. 3's masks).
:class:`TargetCollate` wraps the data collate function so that this runs inside the DataLoader
workers and the main process only runs the network (``targets="workers"`` in the trainer); the
trainer can also build them in the main process, on the training device (``targets="main"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ufssd.config import DetectorConfig
from ufssd.geometry import (
    anchors_for_input,
    build_targets,
    build_targets_padded,
    feature_sizes,
    gt_masks,
    gt_masks_padded,
    padded_size,
)

__all__ = ["CHUNK_ELEMENTS", "TrainBatch", "TargetBuilder", "TargetCollate", "mask_levels"]

# images x anchors x faces of one chunk of TargetBuilder.padded (float32 IoUs: 1 GiB and a few
# temporaries of the same size; 34,125 anchors at 640 px -> e.g. 128 images of 61 faces)
CHUNK_ELEMENTS = 2**28


class TrainBatch(NamedTuple):
    """A batch ready for the network and the loss.

    images: uint8 ``(N, 3, S, S)`` RGB (normalised and padded on the device by the trainer).
    labels: int64 ``(N, A)`` in {POSITIVE, BACKGROUND, IGNORE}.
    target_deltas: float32 ``(N, A, 4)`` (zeros where not positive).
    ffmm_masks: one float ``(N, H_l, W_l)`` per level of ``model.ffmm_levels``.
    mcdm_masks: one float ``(N, H_l, W_l)`` per level of ``model.mcdm_levels`` (empty if no MCDM).
    boxes, ignore, names: as the data batch.
    """

    images: Tensor
    labels: Tensor
    target_deltas: Tensor
    ffmm_masks: list[Tensor]
    mcdm_masks: list[Tensor]
    boxes: list[Tensor]
    ignore: list[Tensor]
    names: list[str]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainBatch:
        def move(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=non_blocking)

        return TrainBatch(
            move(self.images),
            move(self.labels),
            move(self.target_deltas),
            [move(m) for m in self.ffmm_masks],
            [move(m) for m in self.mcdm_masks],
            self.boxes,
            self.ignore,
            self.names,
        )


def mask_levels(cfg: DetectorConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(ffmm levels, mcdm levels)`` whose ground-truth masks training needs."""
    mcdm = tuple(cfg.model.mcdm_levels) if cfg.model.mcdm_mode != "none" else ()
    return tuple(cfg.model.ffmm_levels), mcdm


class TargetBuilder:
    """Computes :class:`TrainBatch` targets for square (or any) training inputs.

    Anchors are cached per padded input size and device. Inputs are padded bottom/right to a
    multiple of ``anchors.pad_multiple``, so targets are for the padded size (boxes do not move).
    """

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self.ffmm_levels, self.mcdm_levels = mask_levels(cfg)
        self._anchor_cache: dict[tuple[int, int, str], Tensor] = {}

    def __getstate__(self) -> dict[str, Any]:  # sent to DataLoader workers without the cache
        state = dict(self.__dict__)
        state["_anchor_cache"] = {}
        return state

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return padded_size(height, width, self.cfg.anchors.pad_multiple)

    def anchors(self, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        """Anchors of the padded input of an ``height x width`` image."""
        ph, pw = self.input_size(height, width)
        key = (ph, pw, str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = anchors_for_input(ph, pw, self.cfg.anchors, device=device)
        return self._anchor_cache[key]

    def match(self, anchors: Tensor, boxes: Sequence[Tensor], ignore: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        labels, deltas = build_targets(anchors, list(boxes), list(ignore), self.cfg.match, self.cfg.anchors.variances)
        return labels.to(torch.int64), deltas.to(torch.float32)

    def masks(
        self, height: int, width: int, boxes: Sequence[Tensor], ignore: Sequence[Tensor], device: torch.device | str
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Ground-truth masks of the FFMM and MCDM levels, each ``(N, H_l, W_l)`` float32."""
        levels = tuple(sorted(set(self.ffmm_levels) | set(self.mcdm_levels)))
        if not levels:
            return [], []
        ph, pw = self.input_size(height, width)
        sizes = feature_sizes(ph, pw, self.cfg.anchors.strides)
        gm = self.cfg.gt_mask
        per_level: dict[int, list[Tensor]] = {lvl: [] for lvl in levels}
        for b, ig in zip(boxes, ignore):
            b = b.to(device=device, dtype=torch.float32)
            ig = ig.to(device=device, dtype=torch.bool)
            maps = gt_masks(b, (ph, pw), sizes, self.cfg.anchors.sides, levels, gm, gt_ignore=ig)
            for lvl, m in zip(levels, maps):
                per_level[lvl].append(m.to(device=device, dtype=torch.float32))
        stacked = {
            lvl: torch.stack(ms) if ms else torch.zeros((0, *sizes[lvl]), device=device) for lvl, ms in per_level.items()
        }
        return [stacked[lvl] for lvl in self.ffmm_levels], [stacked[lvl] for lvl in self.mcdm_levels]

    def __call__(
        self,
        images: Tensor,
        boxes: Sequence[Tensor],
        ignore: Sequence[Tensor],
        names: Sequence[str] = (),
        device: torch.device | str | None = None,
    ) -> TrainBatch:
        """Targets of a batch of images ``(N, 3, H, W)`` with their boxes, on ``device``
        (default: the images' device)."""
        device = torch.device(device) if device is not None else images.device
        height, width = int(images.shape[-2]), int(images.shape[-1])
        boxes = [torch.as_tensor(b, dtype=torch.float32, device=device).reshape(-1, 4) for b in boxes]
        ignore = [torch.as_tensor(i, dtype=torch.bool, device=device).reshape(-1) for i in ignore]
        anchors = self.anchors(height, width, device)
        labels, deltas = self.match(anchors, boxes, ignore)
        ffmm, mcdm = self.masks(height, width, boxes, ignore, device)
        return TrainBatch(images, labels, deltas, ffmm, mcdm, boxes, ignore, list(names))

    def padded(
        self,
        images: Tensor,
        boxes: Tensor,
        ignore: Tensor,
        counts: Sequence[int] | np.ndarray,
        names: Sequence[str] = (),
        chunk_elements: int | None = None,
    ) -> TrainBatch:
        """Targets of a batch whose faces are padded (``ufssd.data.batch_augment``), with no host
        synchronisation: the same labels, deltas and masks as :meth:`__call__` on the unpadded
        faces (:func:`ufssd.geometry.build_targets_padded`, :func:`ufssd.geometry.gt_masks_padded`).

        Args:
            images: ``(N, 3, H, W)`` on the training device.
            boxes, ignore: ``(N, G, 4)``, ``(N, G)``; padded or dropped rows have a zero box and
                ignore True.
            counts: host numbers, an upper bound on the rows in use of each image (its faces
                before the crop). The batch is cut into runs of consecutive images whose
                ``images x anchors x max(count)`` stays under ``chunk_elements`` (default
                :data:`CHUNK_ELEMENTS`), each matched with its own face count; sort the batch by
                count for few, tight chunks.
        """
        device = images.device
        height, width = int(images.shape[-2]), int(images.shape[-1])
        anchors = self.anchors(height, width, device)
        ph, pw = self.input_size(height, width)
        sizes = feature_sizes(ph, pw, self.cfg.anchors.strides)
        levels = tuple(sorted(set(self.ffmm_levels) | set(self.mcdm_levels)))
        labels, deltas, masks = [], [], []
        for lo, hi, g in _chunks(np.asarray(counts, dtype=np.int64), anchors.shape[0], chunk_elements or CHUNK_ELEMENTS):
            b, ig = boxes[lo:hi, :g], ignore[lo:hi, :g]
            lab, dl = build_targets_padded(anchors, b, ig, self.cfg.match, self.cfg.anchors.variances)
            labels.append(lab.to(torch.int64))
            deltas.append(dl.to(torch.float32))
            if levels:
                masks.append(gt_masks_padded(b, ig, (ph, pw), sizes, self.cfg.anchors.sides, levels, self.cfg.gt_mask))
        per_level = {lvl: torch.cat([m[k] for m in masks]) for k, lvl in enumerate(levels)} if levels else {}
        return TrainBatch(
            images,
            torch.cat(labels),
            torch.cat(deltas),
            [per_level[lvl] for lvl in self.ffmm_levels],
            [per_level[lvl] for lvl in self.mcdm_levels],
            list(boxes.unbind(0)),
            list(ignore.unbind(0)),
            list(names),
        )

    def from_batch(self, batch: Any, device: torch.device | str | None = None) -> TrainBatch:
        """Targets of a ``ufssd.data`` ``Batch`` (``images``, ``boxes``, ``ignore``, ``names``)."""
        images = batch.images if device is None else batch.images.to(device, non_blocking=True)
        return self(images, batch.boxes, batch.ignore, getattr(batch, "names", ()), device=device)


class TargetCollate:
    """``collate`` followed by :class:`TargetBuilder` on the CPU: runs in the DataLoader workers."""

    def __init__(self, cfg: DetectorConfig, collate_fn: Any = None) -> None:
        self.builder = TargetBuilder(cfg)
        self.collate_fn = collate_fn

    def __call__(self, items: Sequence[Any]) -> TrainBatch:
        collate_fn = self.collate_fn
        if collate_fn is None:
            from ufssd.data import collate as collate_fn
        with torch.no_grad():
            return self.builder.from_batch(collate_fn(items))


def _chunks(counts: np.ndarray, num_anchors: int, budget: int) -> list[tuple[int, int, int]]:
    """Runs ``[lo, hi)`` of consecutive images and their face count ``g`` (the run's largest,
    at least 1) such that ``(hi - lo) * num_anchors * g <= budget`` (a single image may exceed
    it alone). Host arithmetic only."""
    out: list[tuple[int, int, int]] = []
    lo, g = 0, 1
    for i, c in enumerate(counts.tolist()):
        g_new = max(g, int(c), 1)
        if i > lo and (i + 1 - lo) * num_anchors * g_new > budget:
            out.append((lo, i, g))
            lo, g_new = i, max(int(c), 1)
        g = g_new
    if counts.shape[0]:
        out.append((lo, int(counts.shape[0]), g))
    return out
