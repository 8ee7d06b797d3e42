"""The training Datasets (augmented, or whole images fitted), their collate function and a sharded
infinite sampler.

Determinism: item ``i`` of epoch ``e`` is augmented with a NumPy Generator seeded from
``(cfg.seed, e, i)`` only, and the sampler's order depends only on ``(seed, epoch)``; so the data
stream of a run is fixed by its seed whatever the number of DataLoader workers, and (for a given
total batch size) whatever the number of processes. See ``docs/data.md`` for how the trainer
wires them together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import Tensor

from ufssd.config import TrainConfig
from ufssd.data.augment import augment, mark_small
from ufssd.images import InputError, MissingInputError, decode_file
from ufssd.widerface_files import DataError, Sample

logger = logging.getLogger(__name__)

# distinct first words, so the sampler's and the augmentation's streams never coincide
_AUGMENT_STREAM = 0x0A06
_SAMPLER_STREAM = 0x5A3F


class Item(NamedTuple):
    """One dataset item."""

    image: Tensor  # (3, H, W) uint8 RGB; H = W = cfg.resolution when training
    boxes: Tensor  # (G, 4) float32 x1 y1 x2 y2 in the item's image pixels
    ignore: Tensor  # (G,) bool
    name: str  # "<event>/<stem>"


class Batch(NamedTuple):
    """A collated batch (what the trainer receives)."""

    images: Tensor  # (N, 3, S, S) uint8 RGB, not normalised
    boxes: list[Tensor]  # N x (G_n, 4) float32 x1 y1 x2 y2
    ignore: list[Tensor]  # N x (G_n,) bool
    names: list[str]  # N x "<event>/<stem>"


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation Generator of item ``index`` in ``epoch`` (all three non-negative)."""
    if min(seed, epoch, index) < 0:
        raise ValueError(f"seed, epoch and index must be >= 0, got {seed}, {epoch}, {index}")
    return np.random.default_rng(np.random.SeedSequence([_AUGMENT_STREAM, seed, epoch, index]))


def load_image(path: str | Path, origin: str = "") -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8 RGB`` with the package's one decoder,
    :func:`ufssd.images.decode_file` (the pixels inference gets too), EXIF orientation ignored, as
    the WIDER annotations are in stored-pixel coordinates. Raises :class:`DataError` naming the
    file and ``origin`` (``"<annotation file>:<line>"``) when it is missing or unreadable."""
    where = f"{origin}: " if origin else ""
    try:
        return decode_file(path, exif=False)
    except MissingInputError as exc:
        raise DataError(f"{where}image not found: {path}") from exc
    except InputError as exc:
        raise DataError(f"{where}cannot decode image: {path} ({exc.message})") from exc


class WiderFaceDataset(torch.utils.data.Dataset):
    """Samples -> augmented items.

    ``dataset[i]`` uses the epoch set by :meth:`set_epoch`; ``dataset[(epoch, i)]`` (what
    :class:`ShardedInfiniteSampler` yields) carries its own epoch, which also works with
    persistent workers, whose copy of the dataset never sees ``set_epoch``.

    With ``train=True`` an item is ``augment(...)`` of the image (``(3, S, S)``,
    ``S = cfg.resolution``); with ``train=False`` the original image and boxes, unchanged.
    """

    def __init__(self, samples: Sequence[Sample], cfg: TrainConfig, train: bool = True) -> None:
        self.samples = list(samples)
        self.cfg = cfg
        self.train = train
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        if isinstance(key, tuple):
            epoch, index = int(key[0]), int(key[1])
        else:
            epoch, index = self.epoch, int(key)
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")
        sample = self.samples[index]
        image = load_image(sample.image_path, sample.origin)
        boxes, ignore = sample.boxes, sample.ignore
        if self.train:
            rng = item_rng(self.cfg.seed, epoch, index)
            image, boxes, ignore = augment(image, boxes, ignore, rng, self.cfg)
        return Item(
            image=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            boxes=torch.from_numpy(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
            ignore=torch.from_numpy(np.array(ignore, dtype=bool).reshape(-1)),
            name=sample.name,
        )


class FitDataset(torch.utils.data.Dataset):
    """Samples -> whole images, no augmentation (the trainer's ``augment=False``, for debugging
    and the overfit test): each image scaled so its longer side is ``resolution``, zero-padded
    bottom/right to ``resolution x resolution``; faces shorter than ``min_face_px`` after the
    scaling become "ignore". Accepts the ``(epoch, index)`` keys of
    :class:`ShardedInfiniteSampler` (the epoch changes nothing)."""

    def __init__(self, samples: Sequence[Sample], resolution: int, min_face_px: float) -> None:
        self.samples = list(samples)
        self.resolution = int(resolution)
        self.min_face_px = float(min_face_px)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        index = int(key[1]) if isinstance(key, tuple) else int(key)
        sample = self.samples[index]
        image = load_image(sample.image_path, sample.origin)
        h, w = image.shape[:2]
        s = self.resolution / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((self.resolution, self.resolution, 3), dtype=np.uint8)
        canvas[:nh, :nw] = resized
        boxes = np.asarray(sample.boxes, dtype=np.float32).reshape(-1, 4) * np.float32(s)
        ignore = mark_small(boxes, np.asarray(sample.ignore, dtype=bool).reshape(-1), self.min_face_px)
        return Item(
            image=torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1))),
            boxes=torch.from_numpy(boxes),
            ignore=torch.from_numpy(ignore),
            name=sample.name,
        )


def collate(items: Sequence[Item]) -> Batch:
    """Stack items into a :class:`Batch`; images must all have the same size."""
    if not items:
        raise ValueError("collate: empty batch")
    shapes = {tuple(it.image.shape) for it in items}
    if len(shapes) != 1:
        raise ValueError(f"collate: images of different sizes {sorted(shapes)} cannot be stacked")
    return Batch(
        images=torch.stack([it.image for it in items]),
        boxes=[it.boxes for it in items],
        ignore=[it.ignore for it in items],
        names=[it.name for it in items],
    )


def worker_init(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: one OpenCV and one torch thread per worker (the
    workers already run in parallel). Seeding is not needed: items carry their own seed."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class ShardedInfiniteSampler(torch.utils.data.Sampler):
    """Endless ``(epoch, index)`` pairs for one rank of a distributed run.

    The global stream is epoch 0's permutation of ``range(num_samples)``, then epoch 1's, ...
    (permutation of epoch ``e`` drawn from ``(seed, e)``; identity order with
    ``shuffle=False``). Rank ``r`` of ``world_size`` takes global positions
    ``r, r + world_size, r + 2 * world_size, ...``: within an epoch the ranks see disjoint
    indices that together cover it, and an epoch boundary may fall inside a step.

    ``start`` = how many items this rank has already consumed: resuming at optimiser step ``k``
    with ``b`` items per rank per step uses ``start = k * b``. For a fixed total batch
    ``B = world_size * b``, step ``k`` sees global positions ``[k * B, (k + 1) * B)`` whatever
    the world size. ``with_epoch=False`` yields plain indices (for other datasets).
    """

    def __init__(
        self,
        num_samples: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        start: int = 0,
        with_epoch: bool = True,
    ) -> None:
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {rank}, {world_size}")
        if start < 0 or seed < 0:
            raise ValueError(f"start and seed must be >= 0, got {start}, {seed}")
        self.num_samples = num_samples
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.start = start
        self.with_epoch = with_epoch

    def permutation(self, epoch: int) -> np.ndarray:
        """(num_samples,) int64: the global order of ``epoch``."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        rng = np.random.default_rng(np.random.SeedSequence([_SAMPLER_STREAM, self.seed, epoch]))
        return rng.permutation(self.num_samples)

    def __iter__(self) -> Iterator[tuple[int, int] | int]:
        n, j = self.num_samples, self.start
        epoch, perm = -1, None
        while True:
            g = self.rank + self.world_size * j
            e = g // n
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            index = int(perm[g % n])
            yield (epoch, index) if self.with_epoch else index
            j += 1
