"""Dataset, collate and the sharded infinite sampler on tiny synthetic images."""

from __future__ import annotations

import dataclasses
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ufssd.config import TrainConfig
from ufssd.data import (
    Batch,
    DataError,
    Sample,
    ShardedInfiniteSampler,
    WiderFaceDataset,
    collate,
    worker_init,
)

CFG = TrainConfig(resolution=64, seed=3)


@pytest.fixture()
def samples(tmp_path: Path) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(5):
        h, w = 60 + 10 * k, 90 - 5 * k
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = tmp_path / f"img{k}.png"  # PNG: lossless, so the test can compare pixels
        cv2.imwrite(str(path), image[..., ::-1])  # stored BGR
        boxes = np.array([[5, 5, 30, 35], [40, 20, 60, 50]], np.float32)[: k % 3]
        out.append(Sample(path, f"ev/img{k}", boxes, np.zeros(len(boxes), bool), f"gt.txt:{k + 1}"))
    return out


def test_item_and_collate_shapes(samples: list[Sample]) -> None:
    ds = WiderFaceDataset(samples, CFG)
    assert len(ds) == 5
    batch = collate([ds[i] for i in range(4)])
    assert isinstance(batch, Batch)
    assert batch.images.shape == (4, 3, 64, 64) and batch.images.dtype == torch.uint8
    assert [b.shape[1] for b in batch.boxes if len(b)] == [4] * sum(len(b) > 0 for b in batch.boxes)
    assert all(b.dtype == torch.float32 and b.ndim == 2 for b in batch.boxes)
    assert all(i.dtype == torch.bool and i.shape == (len(b),) for i, b in zip(batch.ignore, batch.boxes))
    assert batch.names == ["ev/img0", "ev/img1", "ev/img2", "ev/img3"]


def test_eval_mode_returns_the_original(samples: list[Sample]) -> None:
    ds = WiderFaceDataset(samples, CFG, train=False)
    item = ds[2]
    original = cv2.imread(str(samples[2].image_path))[..., ::-1]  # RGB
    np.testing.assert_array_equal(item.image.permute(1, 2, 0).numpy(), original)
    np.testing.assert_array_equal(item.boxes.numpy(), samples[2].boxes)
    with pytest.raises(ValueError, match="different sizes"):
        collate([ds[0], ds[1]])


def test_determinism_and_epochs(samples: list[Sample]) -> None:
    a = WiderFaceDataset(samples, CFG)
    b = WiderFaceDataset(samples, CFG)
    ba = collate([a[i] for i in range(5)])
    bb = collate([b[i] for i in range(5)])
    assert ba.images.numpy().tobytes() == bb.images.numpy().tobytes()
    for x, y in zip(ba.boxes, bb.boxes):
        assert torch.equal(x, y)
    # (epoch, index) keys carry their epoch; set_epoch sets it for int keys
    assert torch.equal(a[(0, 1)].image, a[1].image)
    a.set_epoch(4)
    assert torch.equal(a[(4, 1)].image, a[1].image)
    assert not torch.equal(a[(4, 1)].image, b[1].image)
    other_seed = WiderFaceDataset(samples, dataclasses.replace(CFG, seed=4))
    assert not torch.equal(other_seed[1].image, b[1].image)


def test_missing_image_names_file_and_line(samples: list[Sample], tmp_path: Path) -> None:
    gone = dataclasses.replace(samples[0], image_path=tmp_path / "gone.jpg", origin="gt.txt:17")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    broken = dataclasses.replace(samples[0], image_path=tmp_path / "broken.jpg", origin="gt.txt:21")
    ds = WiderFaceDataset([gone, broken], CFG)
    with pytest.raises(DataError, match=r"gt\.txt:17: image not found: .*gone\.jpg"):
        ds[0]
    with pytest.raises(DataError, match=r"gt\.txt:21: cannot decode image: .*broken\.jpg"):
        ds[1]


def _batches(loader: DataLoader, n: int) -> list[Batch]:
    return list(islice(iter(loader), n))


def test_same_stream_with_any_number_of_workers(samples: list[Sample]) -> None:
    ds = WiderFaceDataset(samples, CFG)

    def loader(workers: int) -> DataLoader:
        sampler = ShardedInfiniteSampler(len(ds), seed=CFG.seed)
        return DataLoader(
            ds, batch_size=3, sampler=sampler, num_workers=workers, collate_fn=collate,
            worker_init_fn=worker_init,
            # a forked worker deadlocks in OpenCV once this process has used cv2's thread pool
            # (other tests do); the trainer starts its workers with forkserver too
            multiprocessing_context="forkserver" if workers else None,
        )

    b0, b2 = _batches(loader(0), 3), _batches(loader(2), 3)  # 9 items: crosses an epoch
    for x, y in zip(b0, b2):
        assert x.names == y.names
        assert x.images.numpy().tobytes() == y.images.numpy().tobytes()


# ---------------------------------------------------------------------------------------------
# sampler


@pytest.mark.parametrize("n", [10, 7])
def test_sampler_ranks_are_disjoint_and_cover_each_epoch(n: int) -> None:
    per_rank = [list(islice(ShardedInfiniteSampler(n, r, 2, seed=1), 3 * n)) for r in range(2)]
    for epoch in range(2):
        seen = [[i for e, i in items if e == epoch] for items in per_rank]
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == list(range(n))
        assert abs(len(seen[0]) - len(seen[1])) <= 1
    # every epoch is reshuffled
    s = ShardedInfiniteSampler(n, seed=1)
    assert not np.array_equal(s.permutation(0), s.permutation(1))
    assert sorted(s.permutation(1).tolist()) == list(range(n))


def test_sampler_resume_offset() -> None:
    full = list(islice(ShardedInfiniteSampler(7, 1, 3, seed=2), 40))
    resumed = list(islice(ShardedInfiniteSampler(7, 1, 3, seed=2, start=13), 27))
    assert resumed == full[13:]


def test_sampler_stream_does_not_depend_on_world_size() -> None:
    """For a fixed total batch, step k sees the same items with 1 or 2 processes."""
    total, steps = 4, 5
    one = list(islice(ShardedInfiniteSampler(9, 0, 1, seed=5), total * steps))
    two = [list(islice(ShardedInfiniteSampler(9, r, 2, seed=5), total // 2 * steps)) for r in range(2)]
    for k in range(steps):
        step_two = two[0][2 * k : 2 * k + 2] + two[1][2 * k : 2 * k + 2]
        assert sorted(one[total * k : total * (k + 1)]) == sorted(step_two)


def test_sampler_plain_indices_and_errors() -> None:
    s = ShardedInfiniteSampler(4, shuffle=False, with_epoch=False)
    assert list(islice(s, 6)) == [0, 1, 2, 3, 0, 1]
    with pytest.raises(ValueError):
        ShardedInfiniteSampler(4, rank=2, world_size=2)
    with pytest.raises(ValueError):
        ShardedInfiniteSampler(0)
