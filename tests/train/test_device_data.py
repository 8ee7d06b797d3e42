"""The device data path (``--data-device``) on CPU tensors: its batches, its targets, its stream,
exact resume, the time budget and the CLI's refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ufssd.data import ShardedInfiniteSampler
from ufssd.presets import get_preset, replace
from ufssd.train import TrainingError, load_checkpoint, train
from ufssd.train.device_data import DeviceBatches, DevicePool, pool_from_samples
from ufssd.train.distributed import DistInfo
from ufssd.train.targets import TargetBuilder, _chunks

NAMES = [
    "0--Parade/0_Parade_marchingband_1_1038",
    "1--Handshaking/1_Handshaking_Handshaking_1_234",
    "13--Interview/13_Interview_Interview_On_Location_13_536",
    "20--Family_Group/20_Family_Group_Family_Group_20_1001",
    "2--Demonstration/2_Demonstration_Demonstration_Or_Protest_2_151",
]


@pytest.fixture(scope="module")
def samples(widerface_dir):
    from ufssd.data import read_split

    found = read_split(widerface_dir, "train", subset=NAMES)
    assert len(found) == len(NAMES)
    return found


@pytest.fixture(scope="module")
def pool(samples) -> DevicePool:
    return pool_from_samples(samples, "cpu", max_side=512)


def _cfg(iters: int = 4, batch: int = 2, preset: str = "ufssd_light_ffmm_x1"):
    return replace(
        get_preset(preset),
        train={"iters": iters, "batch_size": batch, "resolution": 128, "warmup_iters": 2,
               "lr_milestones": (0.5,), "checkpoint_every": 1000, "lr": 0.02},
    )  # fmt: skip


INFO = DistInfo()  # rank 0 of 1, on the CPU


def test_pool_holds_every_image_and_face(samples, pool) -> None:
    assert len(pool) == len(samples) and pool.names == tuple(s.name for s in samples)
    assert pool.images.dtype == torch.uint8 and int(pool.sizes.max()) <= 512
    for p, s in enumerate(samples):
        h, w = (int(v) for v in pool.sizes[p])
        scale = 512 / max(s_ for s_ in _shape(s)) if max(_shape(s)) > 512 else 1.0
        assert abs(h - round(_shape(s)[0] * scale)) <= 1 and abs(w - round(_shape(s)[1] * scale)) <= 1
        g = int(pool.counts[p])
        assert g == s.num_faces and bool(pool.present[p, :g].all()) and not bool(pool.present[p, g:].any())
        np.testing.assert_allclose(pool.boxes[p, :g].numpy(), s.boxes * np.float32(scale), rtol=1e-6)


def _shape(sample) -> tuple[int, int]:
    from ufssd.data import load_image

    return load_image(sample.image_path).shape[:2]


def test_chunks_bound_the_work_and_cover_the_batch() -> None:
    counts = np.array([0, 1, 3, 3, 10, 40, 41])
    chunks = _chunks(counts, num_anchors=100, budget=2000)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(counts)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    for lo, hi, g in chunks:
        assert g == max(1, counts[lo:hi].max())
        assert (hi - lo) * 100 * g <= 2000 or hi - lo == 1
    assert _chunks(np.array([5, 5]), 10, 10**9) == [(0, 2, 5)]


@pytest.mark.parametrize("preset", ["ufssd_light_ffmm_x1", "ufssd_light_fem_mcdm_b_eta0.10"])
def test_padded_targets_equal_the_per_image_targets(pool, preset) -> None:
    """Whatever the chunking, the batch's targets are TargetBuilder's on the unpadded faces."""
    cfg = _cfg(batch=4, preset=preset)
    stream = DeviceBatches(cfg, pool, INFO, chunk_elements=1)  # one image a chunk
    builder = TargetBuilder(cfg)
    for _ in range(3):
        batch = next(stream)
        faces = [b[~(b == 0).all(dim=1) | ~ig] for b, ig in zip(batch.boxes, batch.ignore)]
        flags = [ig[~(b == 0).all(dim=1) | ~ig] for b, ig in zip(batch.boxes, batch.ignore)]
        ref = builder(batch.images, faces, flags)
        assert torch.equal(batch.labels, ref.labels)
        assert torch.equal(batch.target_deltas, ref.target_deltas)
        assert len(batch.ffmm_masks) == len(ref.ffmm_masks) and len(batch.mcdm_masks) == len(ref.mcdm_masks)
        for a, b in zip([*batch.ffmm_masks, *batch.mcdm_masks], [*ref.ffmm_masks, *ref.mcdm_masks]):
            assert torch.equal(a, b)
        assert batch.images.shape == (4, 3, 128, 128) and batch.images.dtype == torch.uint8
        assert int((batch.labels == 1).sum()) > 0  # faces were matched at all


def test_batches_take_the_loader_streams_images(pool) -> None:
    """Step k takes the images the DataLoader path takes at step k (a batch sorted by face count)."""
    cfg = _cfg(batch=2)
    stream = DeviceBatches(cfg, pool, INFO, start_items=6)
    sampler = iter(ShardedInfiniteSampler(len(pool), 0, 1, seed=cfg.train.seed, shuffle=True, start=6))
    for _ in range(7):  # past an epoch boundary and a refill
        expected = sorted(pool.names[next(sampler)[1]] for _ in range(2))
        assert sorted(next(stream).names) == expected


def test_same_seed_same_batches_other_seed_others(pool) -> None:
    a, b = DeviceBatches(_cfg(), pool, INFO), DeviceBatches(_cfg(), pool, INFO)
    other = DeviceBatches(replace(_cfg(), train={"seed": 1}), pool, INFO)
    x, y, z = next(a), next(b), next(other)
    assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
    assert not torch.equal(x.images, z.images)


def _run(samples, out, **kw):
    return train(_cfg(6), samples, out, data_device="cpu", pool_max_side=512, progress=False, tensorboard=False,
                 warmup_max_fraction=None, log_every=1, **kw)  # fmt: skip


def test_device_path_resumes_exactly(samples, tmp_path) -> None:
    straight = _run(samples, tmp_path / "straight")
    first = _run(samples, tmp_path / "split", stop_at=3)
    assert first.step == 3 and "data_rng" in load_checkpoint(tmp_path / "split" / "last.pt")
    second = _run(samples, tmp_path / "split", resume=True)
    assert second.finished and straight.checksum == second.checksum
    assert [r["loss"] for r in straight.history[3:]] == [r["loss"] for r in second.history]
    assert straight.history[0]["loss"] != straight.history[-1]["loss"]


def test_time_budget_sizes_the_schedule(samples, tmp_path) -> None:
    out = tmp_path / "budget"
    result = train(replace(_cfg(10**6), train={"checkpoint_every": 3}), samples, out, data_device="cpu",
                   pool_max_side=512, progress=False, tensorboard=False, log_every=1, time_budget_s=6.0,
                   probe_steps=4)  # fmt: skip
    assert result.finished and 4 < result.step < 10**6
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["iters"] == result.step
    assert load_checkpoint(out / "last.pt")["extra"]["budget_iters"] == result.step
    # the schedule followed the chosen length: the lr fell at half of it (lr_milestones 0.5)
    rows = result.history
    assert rows[-1]["lr"] < rows[3]["lr"]


def test_refusals(samples, tmp_path) -> None:
    with pytest.raises(TrainingError, match="give data_device too"):
        train(_cfg(), samples, tmp_path / "a", pack=tmp_path, progress=False)
    with pytest.raises(TrainingError, match="always augments"):
        train(_cfg(), samples, tmp_path / "b", data_device="cpu", augment=False, progress=False)
    with pytest.raises(TrainingError, match="must be the training device"):
        train(_cfg(), samples, tmp_path / "c", data_device="cuda", device="cpu", progress=False)


def test_a_batch_never_reads_the_device(monkeypatch) -> None:
    """The whole step of the data path on ``meta`` tensors, which hold no values: any read on the
    host (``.item()``, ``nonzero``, boolean-mask indexing, a data-dependent shape) raises there.
    The generator stays on the CPU (there is no meta generator; on CUDA it lives on the device)."""
    cfg = _cfg(batch=4, preset="ufssd_light_fem_mcdm_b_eta0.10")
    meta = {"device": "meta"}
    n, g = 6, 9
    pool = DevicePool(
        images=torch.empty((n, 3, 200, 300), dtype=torch.uint8, **meta),
        sizes=torch.empty((n, 2), dtype=torch.int64, **meta),
        boxes=torch.empty((n, g, 4), **meta),
        ignore=torch.empty((n, g), dtype=torch.bool, **meta),
        present=torch.empty((n, g), dtype=torch.bool, **meta),
        counts=np.array([0, 1, 9, 3, 2, 5]),
        names=tuple(f"e/{k}" for k in range(n)),
    )
    real = torch.Generator
    monkeypatch.setattr(torch, "Generator", lambda device=None: real())
    stream = DeviceBatches(cfg, pool, INFO, chunk_elements=2 * 8500 * 3)  # several chunks
    for _ in range(3):
        batch = next(stream)
        assert batch.labels.device.type == "meta" and batch.labels.shape[0] == 4
        assert batch.images.shape == (4, 3, 128, 128)
        assert len(batch.ffmm_masks) == len(cfg.model.ffmm_levels) and len(batch.mcdm_masks) >= 1
        assert all(m.device.type == "meta" and m.shape[0] == 4 for m in batch.mcdm_masks)
