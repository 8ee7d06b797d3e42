"""Per-batch targets: shapes, positives where the faces are, workers == main process."""

from __future__ import annotations

import torch

from ufssd.geometry.matching import IGNORE, POSITIVE
from ufssd.presets import get_preset, replace
from ufssd.train.targets import TargetBuilder, TargetCollate, TrainBatch


def _items():
    from ufssd.data import Item

    img = torch.zeros((3, 128, 128), dtype=torch.uint8)
    return [
        Item(img, torch.tensor([[10.0, 10.0, 42.0, 42.0], [60.0, 60.0, 124.0, 124.0]]), torch.tensor([False, False]), "a/1"),
        Item(img, torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([True]), "a/2"),
        Item(img, torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.bool), "a/3"),
    ]


def test_targets_shapes_and_labels():
    cfg = replace(get_preset("ufssd_light"), model={"ffmm_levels": (0, 1), "mcdm_mode": "drop", "mcdm_levels": (0,)})
    batch = TargetCollate(cfg)(_items())
    assert isinstance(batch, TrainBatch)
    num_anchors = sum((-(-128 // s)) ** 2 for s in cfg.anchors.strides)  # 32^2 + 16^2 + ... = 1365
    assert batch.labels.shape == (3, num_anchors) and batch.labels.dtype == torch.int64
    assert batch.target_deltas.shape == (3, num_anchors, 4)
    assert [tuple(m.shape) for m in batch.ffmm_masks] == [(3, 32, 32), (3, 16, 16)]
    assert [tuple(m.shape) for m in batch.mcdm_masks] == [(3, 32, 32)]
    assert (batch.labels[0] == POSITIVE).sum() >= 2  # both faces matched
    assert (batch.labels[1] == POSITIVE).sum() == 0  # an ignored face makes no positive
    assert (batch.labels[1] == IGNORE).sum() > 0
    assert (batch.labels[2] != 0).sum() == 0  # no face: all background
    assert batch.ffmm_masks[0][0].sum() > 0 and batch.ffmm_masks[0][2].sum() == 0
    # regression targets only where positive
    assert (batch.target_deltas[batch.labels != POSITIVE] == 0).all()
    assert batch.target_deltas[batch.labels == POSITIVE].abs().sum() > 0


def test_main_process_targets_equal_worker_targets():
    from ufssd.data import collate

    cfg = replace(get_preset("ufssd_light"), model={"ffmm_levels": (0,)})
    in_workers = TargetCollate(cfg)(_items())
    in_main = TargetBuilder(cfg).from_batch(collate(_items()), device="cpu")
    assert torch.equal(in_workers.labels, in_main.labels)
    assert torch.equal(in_workers.target_deltas, in_main.target_deltas)
    assert all(torch.equal(a, b) for a, b in zip(in_workers.ffmm_masks, in_main.ffmm_masks))
    assert in_workers.mcdm_masks == [] and in_main.mcdm_masks == []


def test_padded_input_size():
    builder = TargetBuilder(get_preset("ufssd_light"))
    assert builder.input_size(320, 320) == (384, 384)
    assert builder.anchors(320, 320).shape[0] == sum((-(-384 // s)) ** 2 for s in (4, 8, 16, 32, 64, 128))
