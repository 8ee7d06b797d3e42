"""Which images a run trains on and evaluates on (the ``--data-root`` / ``--source`` forms).

A source is ``ROOT:SPLIT[:SUBSET_LIST]`` (:func:`ufssd.data.parse_source`); on the command line
``SPLIT[:SUBSET_LIST]`` is also accepted and taken relative to ``--data-root``. Without any
``--source`` the trainer uses ``ROOT:train`` (restricted to ``--subset`` when given) plus, when
``ROOT/val_train_images.txt`` exists (the shared subset's layout), ``ROOT:val:val_train_images.txt``.

The dev slice never trains: images listed in ``ROOT/dev_images.txt`` of any val source, and the
images of the periodic evaluation, are dropped from the training set with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ufssd.widerface_files import DEV_LIST, SPLITS, VAL_TRAIN_LIST, image_folder

logger = logging.getLogger(__name__)

__all__ = ["default_sources", "expand_source", "read_training_samples", "DEV_LIST", "VAL_TRAIN_LIST"]


def expand_source(spec: str, data_root: str | os.PathLike | None) -> str:
    """``"train"`` / ``"val:LIST"`` -> ``"<data_root>:val:LIST"``; a full spec unchanged."""
    head = str(spec).split(":", 1)[0]
    if head in SPLITS:
        if data_root is None:
            raise ValueError(f"source {spec!r} names no root: give --data-root or ROOT:{spec}")
        return f"{Path(data_root)}:{spec}"
    return str(spec)


def default_sources(data_root: str | os.PathLike, subset: str | os.PathLike | None = None) -> list[str]:
    """WIDER train (optionally a subset) + the val part that training may use, when listed."""
    root = Path(data_root)
    specs = [f"{root}:train" + (f":{subset}" if subset else "")]
    val_train = root / VAL_TRAIN_LIST
    if val_train.is_file():
        specs.append(f"{root}:val:{val_train}")
    return specs


def _dev_paths(root: Path) -> set[Path]:
    from ufssd.data import read_image_list

    dev = root / DEV_LIST
    if not dev.is_file():
        return set()
    image_root = image_folder(root, "val")
    return {(image_root / f"{name}.jpg").resolve() for name in read_image_list(dev)}


def read_training_samples(
    specs: Sequence[str],
    exclude_images: Iterable[str | os.PathLike] = (),
    on_error: str = "raise",
) -> list[Any]:
    """Read the sources and drop the dev slice and any ``exclude_images`` (paths) from them."""
    from ufssd.data import parse_source, read_sources

    samples = read_sources(list(specs), on_error=on_error)
    exclude = {Path(p).resolve() for p in exclude_images}
    for spec in specs:
        source = parse_source(spec)
        if source.split == "val":
            exclude |= _dev_paths(Path(source.root))
    if exclude:
        kept = [s for s in samples if Path(s.image_path).resolve() not in exclude]
        dropped = len(samples) - len(kept)
        if dropped:
            logger.warning(
                "dropped %d training images that belong to the dev slice or the evaluation subset", dropped
            )
        samples = kept
    logger.info("training set: %d images, %d faces", len(samples), sum(int(s.boxes.shape[0]) for s in samples))
    return samples
