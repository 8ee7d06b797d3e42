"""WIDER FACE data for training: augmentation (``augment``), Dataset and collate (``dataset``).

The files themselves (layout, image lists, annotations, sources) are read by the torch-free
:mod:`ufssd.widerface_files`; its readers are re-exported here. See ``docs/data.md``."""

from ufssd.data.augment import (
    augment,
    box_centres_inside,
    crop_boxes,
    hflip,
    mark_small,
    photometric_distort,
    resize,
    sample_crop,
)
from ufssd.data.dataset import (
    Batch,
    FitDataset,
    Item,
    ShardedInfiniteSampler,
    WiderFaceDataset,
    collate,
    item_rng,
    load_image,
    worker_init,
)
from ufssd.widerface_files import (
    DataError,
    DataSource,
    Sample,
    parse_source,
    read_annotations,
    read_image_list,
    read_sources,
    read_split,
    split_paths,
)

__all__ = [
    "Batch",
    "DataError",
    "DataSource",
    "FitDataset",
    "Item",
    "Sample",
    "ShardedInfiniteSampler",
    "WiderFaceDataset",
    "augment",
    "box_centres_inside",
    "collate",
    "crop_boxes",
    "hflip",
    "item_rng",
    "load_image",
    "mark_small",
    "parse_source",
    "photometric_distort",
    "read_annotations",
    "read_image_list",
    "read_sources",
    "read_split",
    "resize",
    "sample_crop",
    "split_paths",
]
