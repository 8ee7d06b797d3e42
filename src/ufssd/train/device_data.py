"""The device-resident data path of ``ufssd train --data-device`` (issue 16; ``docs/data.md``).

The training images are decoded once into the training device's memory (:class:`DevicePool`,
from a pack made by ``scripts/pack_device_data.py`` or from WIDER samples), and every step draws
its batch there: the paper's augmentation for the whole batch
(:func:`ufssd.data.batch_augment.augment_batch`) and the anchor targets and ground-truth masks
for the whole batch (:meth:`ufssd.train.targets.TargetBuilder.padded`). :class:`DeviceBatches`
yields :class:`~ufssd.train.targets.TrainBatch` es like the DataLoader path does.

Host-device traffic: the pool once; then one copy of the next epoch's image indices per epoch
(host to device, non-blocking). Every shape a step needs is known on the host (the batch's image
indices and the face count of each image in the pool), so no step reads a device tensor.

The data stream is the loader path's: :class:`ufssd.data.ShardedInfiniteSampler` decides which
images each step of each rank takes (the same images, in the same steps, as the DataLoader path
with the same seed); the augmentation draws from one ``torch.Generator`` on the device, whose
state the checkpoint keeps (:meth:`DeviceBatches.state`), so a resumed run is the straight run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ufssd.config import DetectorConfig
from ufssd.data import Sample, ShardedInfiniteSampler, load_image
from ufssd.data.batch_augment import PhotometricDraws, augment_batch, pad_boxes, pad_images, photometric_distort_batch
from ufssd.train.distributed import DistInfo
from ufssd.train.targets import TrainBatch, TargetBuilder

logger = logging.getLogger(__name__)

__all__ = ["DeviceBatches", "DevicePool", "keep_pools", "pool_from_pack", "pool_from_samples"]

# seeds the augmentation generator of rank r: (seed, _STREAM, r) -> one 63-bit integer
_STREAM = 0x5EED_DA7A


@dataclass(frozen=True)
class DevicePool:
    """The training images and faces, padded, on one device.

    images: ``(P, 3, H_max, W_max) uint8`` RGB, image ``p`` in the top-left corner
        (:func:`~ufssd.data.batch_augment.pad_images`).
    sizes: ``(P, 2) int64`` (H, W).
    boxes, ignore, present: ``(P, G_max, 4) float32``, ``(P, G_max) bool`` x2
        (:func:`~ufssd.data.batch_augment.pad_boxes`).
    counts: ``(P,)`` host int64, the faces of each image (its rows ``0 .. counts[p] - 1``).
    names: ``"<event>/<stem>"`` of each image.
    """

    images: Tensor
    sizes: Tensor
    boxes: Tensor
    ignore: Tensor
    present: Tensor
    counts: np.ndarray
    names: tuple[str, ...]

    @classmethod
    def build(
        cls, images: Sequence[Tensor], boxes: Sequence[Tensor], ignore: Sequence[Tensor], names: Sequence[str]
    ) -> DevicePool:
        """Pad ``(3, H_p, W_p) uint8`` images and their ``(G_p, 4)`` boxes / ``(G_p,)`` flags (on
        the device already) into a pool."""
        if not images:
            raise ValueError("a device pool needs at least one image")
        if not len(images) == len(boxes) == len(ignore) == len(names):
            raise ValueError(f"{len(images)} images, {len(boxes)} box sets, {len(ignore)} flag sets, {len(names)} names")
        padded, sizes = pad_images(images)
        device = padded.device
        b, ig, present = pad_boxes(boxes, ignore, device=device)
        counts = np.array([int(x.shape[0]) for x in boxes], dtype=np.int64)
        return cls(padded, sizes, b, ig, present, counts, tuple(names))

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.images, self.sizes, self.boxes, self.ignore, self.present))


def pool_from_samples(samples: Sequence[Sample], device: torch.device | str, max_side: int | None = None) -> DevicePool:
    """Decode ``samples`` on the host (the package's decoder) into a pool on ``device``; with
    ``max_side``, images whose longer side exceeds it are shrunk first (as a pack does)."""
    from ufssd.data.pack import shrink

    images, boxes, ignore = [], [], []
    for s in samples:
        rgb = load_image(s.image_path, s.origin)
        scale = 1.0
        if max_side is not None:
            rgb, scale = shrink(rgb, max_side)
        images.append(torch.tensor(rgb).permute(2, 0, 1).to(device))  # a copy: the decoder's array is read-only
        boxes.append(torch.as_tensor(np.asarray(s.boxes, dtype=np.float32) * np.float32(scale), device=device))
        ignore.append(torch.as_tensor(np.asarray(s.ignore, dtype=bool), device=device))
    return DevicePool.build(images, boxes, ignore, [s.name for s in samples])


# pools kept by keep_pools(), by (pack folder, its manifest's size and mtime, device); None: off
_KEPT: dict[tuple[str, int, int, str], DevicePool] | None = None


@contextlib.contextmanager
def keep_pools() -> Iterator[None]:
    """Within this block, :func:`pool_from_pack` decodes a pack once per device and hands the same
    pool to every later run (several trainings in one process: ``scripts/device_train.py
    compare``); the pools are released at its end."""
    global _KEPT
    outer, _KEPT = _KEPT, {} if _KEPT is None else _KEPT
    try:
        yield
    finally:
        if outer is None:
            _KEPT = None


def pool_from_pack(pack_dir: str | Path, device: torch.device | str) -> DevicePool:
    """The pool of a pack (``ufssd.data.pack``), verified against its manifest and decoded on
    ``device`` (``torchvision.io.decode_jpeg``, on the GPU when ``device`` is CUDA); inside
    :func:`keep_pools`, decoded only the first time."""
    from ufssd.data.pack import MANIFEST_NAME, load_pack

    key = None
    if _KEPT is not None:
        stat = (Path(pack_dir) / MANIFEST_NAME).stat()
        key = (str(Path(pack_dir).resolve()), stat.st_size, stat.st_mtime_ns, str(torch.device(device)))
        if key in _KEPT:
            return _KEPT[key]
    packed = load_pack(pack_dir, device=device)
    pool = DevicePool.build(packed.images, packed.boxes, packed.ignore, packed.names)
    if key is not None and _KEPT is not None:
        _KEPT[key] = pool
    return pool


def _first_call_fallback(
    fast: Callable[[Tensor, PhotometricDraws], Tensor], slow: Callable[[Tensor, PhotometricDraws], Tensor]
) -> Callable[[Tensor, PhotometricDraws], Tensor]:
    """``fast`` (a compiled function), or ``slow`` for good when ``fast`` fails on its first call
    (a machine without a working compiler must not lose its GPU lease to it)."""
    chosen: list[Callable[[Tensor, PhotometricDraws], Tensor]] = []

    def call(images: Tensor, draws: PhotometricDraws) -> Tensor:
        if chosen:
            return chosen[0](images, draws)
        try:
            out = fast(images, draws)
            chosen.append(fast)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say so
            logger.warning("compiled photometric distortion failed (%s: %s); running it eagerly", type(exc).__name__, exc)
            chosen.append(slow)
            out = slow(images, draws)
        return out

    return call


class DeviceBatches(Iterator[TrainBatch]):
    """Endless :class:`TrainBatch` es of one rank, augmented and targeted on the pool's device.

    Args:
        cfg: the resolved config (``train``: batch size, seed, augmentation; targets).
        pool: the images.
        info: this process's rank, world size and device.
        start_items: items this rank already consumed (``step * batch_per_rank`` on resume).
        compile_augment: fuse the photometric step with ``torch.compile`` (default: on CUDA).
        chunk_elements: bound on ``images x anchors x faces`` of one target chunk
            (:meth:`TargetBuilder.padded`).
    """

    def __init__(
        self,
        cfg: DetectorConfig,
        pool: DevicePool,
        info: DistInfo,
        start_items: int = 0,
        compile_augment: bool | None = None,
        chunk_elements: int | None = None,
    ) -> None:
        self.cfg, self.pool = cfg, pool
        self.device = pool.images.device
        self.per_rank = cfg.train.batch_size // info.world_size
        self.items = iter(
            ShardedInfiniteSampler(
                len(pool), info.rank, info.world_size, seed=cfg.train.seed, shuffle=True, start=start_items
            )
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(np.random.SeedSequence([_STREAM, cfg.train.seed, info.rank]).generate_state(1)[0]))
        self.builder = TargetBuilder(cfg)
        self.chunk_elements = chunk_elements
        if compile_augment is None:
            compile_augment = self.device.type == "cuda"
        self.distort = photometric_distort_batch
        if compile_augment:
            fast = torch.compile(photometric_distort_batch, fullgraph=True, dynamic=False)
            self.distort = _first_call_fallback(fast, photometric_distort_batch)
        self.steps_per_refill = max(1, -(-len(pool) // self.per_rank))  # about one epoch a copy
        self._host: list[np.ndarray] = []  # the next steps' image indices, sorted by face count
        self._dev: Tensor | None = None  # the same, on the device: (steps, per_rank)
        self._next = 0

    # ------------------------------------------------------------------ the state of the stream

    def state(self) -> Tensor:
        """The augmentation generator's state (the sampler's position is the step count)."""
        return self.generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self.generator.set_state(state)

    # ------------------------------------------------------------------ batches

    def _refill(self) -> None:
        """The image indices of the next ``steps_per_refill`` steps: drawn from the sampler on the
        host, each step's sorted by face count (stable; cheaper target chunks, same images), then
        one non-blocking copy to the device."""
        steps = []
        for _ in range(self.steps_per_refill):
            idx = np.fromiter((next(self.items)[1] for _ in range(self.per_rank)), dtype=np.int64, count=self.per_rank)
            steps.append(idx[np.argsort(self.pool.counts[idx], kind="stable")])
        self._host = steps
        host = torch.from_numpy(np.stack(steps))
        if self.device.type == "cuda":
            host = host.pin_memory()
        self._dev = host.to(self.device, non_blocking=True)
        self._next = 0

    def __next__(self) -> TrainBatch:
        if self._next >= len(self._host):
            self._refill()
        assert self._dev is not None
        host, idx = self._host[self._next], self._dev[self._next]
        self._next += 1
        counts = self.pool.counts[host]
        g = max(1, int(counts.max()))  # host numbers: the faces of the batch's busiest image
        p = self.pool
        out = augment_batch(
            p.images.index_select(0, idx),
            p.sizes.index_select(0, idx),
            p.boxes.index_select(0, idx)[:, :g],
            p.ignore.index_select(0, idx)[:, :g],
            p.present.index_select(0, idx)[:, :g],
            self.generator,
            self.cfg.train,
            distort=self.distort,
        )
        names = [p.names[i] for i in host]
        return self.builder.padded(out.images, out.boxes, out.ignore, counts, names, self.chunk_elements)
