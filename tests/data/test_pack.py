"""ufssd.data.pack: a pack reads back as the bytes it stores, verify_pack names every difference,
and the two scripts around it (pack_device_data.py, pack_cost.py) handle their arguments."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ufssd.data.pack import (
    FORMAT,
    MANIFEST_NAME,
    VERSION,
    PackError,
    encode_image,
    load_pack,
    plan_transfer,
    read_manifest,
    shrink,
    verify_pack,
    write_pack,
)
from ufssd.widerface_files import DataError, Sample, format_annotations, read_split

MAX_SIDE = 256
SHARD_MIB = 0.04  # about 42 KB: the 7 test images (about 20 KB each) need several shards


@pytest.fixture(scope="module")
def samples(widerface_dir: Path) -> list[Sample]:
    """Six real train images and a face-less copy of the first (a negative, kept in the pack)."""
    real = read_split(widerface_dir, "train")[:6]
    empty = dataclasses.replace(
        real[0], name=f"{real[0].name}_noface", boxes=np.zeros((0, 4), np.float32), ignore=np.zeros(0, bool)
    )
    return [*real, empty]


@pytest.fixture(scope="module")
def pack_dir(samples: list[Sample], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "pack"
    write_pack(samples, out, max_side=MAX_SIDE, quality=80, shard_mib=SHARD_MIB, source="test")
    return out


def _copy(pack_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pack_dir, tmp_path / "copy"))


def _edit_manifest(pack: Path, edit) -> None:
    path = pack / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------------------------------------
# encode_image


def test_encode_image_shrinks_the_longer_side_and_never_enlarges() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    data, scale = encode_image(image, max_side=150, quality=90)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert scale == 0.5 and decoded.shape == (150, 100, 3)
    data, scale = encode_image(image, max_side=1024, quality=90)
    assert scale == 1.0 and cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (300, 200, 3)
    flat = np.full((40, 60, 3), (200, 100, 50), np.uint8)  # RGB in, RGB out (the JPEG is BGR inside)
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(encode_image(flat, 64, 95)[0], np.uint8), 1), cv2.COLOR_BGR2RGB)
    assert np.abs(rgb.astype(int) - flat).max() <= 2
    with pytest.raises(ValueError, match="uint8"):
        encode_image(image.astype(np.float32), 100, 90)
    small, scale = shrink(image, 150)  # the resize of encode_image, for a pool that skips JPEG
    assert small.shape == (150, 100, 3) and scale == 0.5 and shrink(image, 300)[0] is image


# ---------------------------------------------------------------------------------------------
# round trip


def test_round_trip_decodes_the_stored_bytes_and_scales_the_boxes(pack_dir: Path, samples: list[Sample]) -> None:
    manifest = verify_pack(pack_dir)
    assert (manifest.format, manifest.version, manifest.count) == (FORMAT, VERSION, len(samples))
    assert read_manifest(pack_dir).names == manifest.names == [s.name for s in samples]
    assert len(manifest.shards) >= 3 and all(s.bytes <= SHARD_MIB * 2**20 for s in manifest.shards)
    packed = load_pack(pack_dir, decode_batch=3)
    assert packed.names == [s.name for s in samples]
    rows = zip(manifest.images, packed.images, packed.boxes, packed.ignore, samples)
    for entry, image, boxes, ignore, sample in rows:
        raw = (pack_dir / manifest.shards[entry.shard].file).read_bytes()[entry.offset : entry.offset + entry.length]
        expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert image.dtype == torch.uint8 and image.shape == (3, entry.height, entry.width)
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected)
        h, w = cv2.imread(str(sample.image_path)).shape[:2]
        assert entry.scale == pytest.approx(min(1.0, MAX_SIDE / max(h, w)))
        assert max(entry.height, entry.width) <= MAX_SIDE
        assert boxes.shape == (sample.num_faces, 4)
        np.testing.assert_allclose(boxes.numpy(), sample.boxes * entry.scale, atol=1e-3)
        assert ignore.tolist() == sample.ignore.tolist()
    assert packed.boxes[-1].shape == (0, 4)  # the face-less image is kept


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG decoding)")
def test_load_pack_decodes_on_the_gpu(pack_dir: Path) -> None:
    cpu = load_pack(pack_dir)
    gpu = load_pack(pack_dir, device="cuda", decode_batch=4)
    assert gpu.names == cpu.names
    for a, b, boxes in zip(gpu.images, cpu.images, gpu.boxes):
        assert a.is_cuda and boxes.is_cuda and a.shape == b.shape and a.dtype == torch.uint8
        assert (a.cpu().float() - b.float()).abs().mean() < 2.0  # nvJPEG and libjpeg may round differently


# ---------------------------------------------------------------------------------------------
# verify_pack: one case per difference, the message names it


def _drop_shard(pack: Path) -> None:
    (pack / "shard-001.bin").unlink()


def _truncate_shard(pack: Path) -> None:  # a half-written transfer
    path = pack / "shard-001.bin"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(pack: Path) -> None:  # same size, other content
    path = pack / "shard-000.bin"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))


def _entry(key, value):
    return lambda pack: _edit_manifest(pack, lambda d: d["images"][1].__setitem__(key, value))


CASES = {
    "missing manifest": (lambda p: (p / MANIFEST_NAME).unlink(), "no manifest.json"),
    "not JSON": (lambda p: (p / MANIFEST_NAME).write_text("{ half"), "cannot read the manifest"),
    "not an object": (lambda p: (p / MANIFEST_NAME).write_text("[1, 2]"), "invalid manifest"),
    "missing field": (lambda p: _edit_manifest(p, lambda d: d.pop("shards")), "invalid manifest.*shards"),
    "wrong format": (lambda p: _edit_manifest(p, lambda d: d.update(format="other")), "format 'other'"),
    "wrong version": (lambda p: _edit_manifest(p, lambda d: d.update(version=99)), "version 99"),
    "missing shard": (_drop_shard, "shard shard-001.bin is missing"),
    "truncated shard": (_truncate_shard, r"shard shard-001.bin has \d+ bytes, the manifest says"),
    "changed shard": (_flip_byte, "shard-000.bin: SHA-256 differs"),
    "entry outside its shard": (_entry("offset", 10**6), "image .*: bytes 1000000..* lie outside shard-"),
    "no such shard": (_entry("shard", 42), "shard 42 does not exist"),
    "count": (lambda p: _edit_manifest(p, lambda d: d.update(count=8)), "states 8 images but lists 7"),
    "boxes shape": (_entry("boxes", [[1, 2, 3]]), r"boxes have shape \(1, 3\), expected \(G, 4\)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_verify_refuses_a_pack_that_differs_from_its_manifest(case: str, pack_dir: Path, tmp_path: Path) -> None:
    change, message = CASES[case]
    pack = _copy(pack_dir, tmp_path)
    change(pack)
    with pytest.raises(PackError, match=message):
        verify_pack(pack)
    assert issubclass(PackError, DataError)


def test_verify_lists_every_difference_at_once(pack_dir: Path, tmp_path: Path) -> None:
    pack = _copy(pack_dir, tmp_path)
    _drop_shard(pack)
    _truncate_shard_2 = pack / "shard-002.bin"
    _truncate_shard_2.write_bytes(_truncate_shard_2.read_bytes()[:10])
    _edit_manifest(pack, lambda d: d.update(count=3))
    with pytest.raises(PackError) as err:
        verify_pack(pack)
    text = str(err.value)
    assert "3 problems" in text and "shard-001.bin is missing" in text
    assert "shard-002.bin has 10 bytes" in text and "states 3 images but lists 7" in text


def test_load_pack_refuses_a_half_transferred_shard(pack_dir: Path, tmp_path: Path) -> None:
    pack = _copy(pack_dir, tmp_path)
    _truncate_shard(pack)
    with pytest.raises(PackError, match="shard-001.bin has"):
        load_pack(pack)


def test_load_pack_names_an_image_that_does_not_decode(pack_dir: Path, tmp_path: Path) -> None:
    pack = _copy(pack_dir, tmp_path)
    manifest = verify_pack(pack)
    entry = manifest.images[2]
    path = pack / manifest.shards[entry.shard].file
    data = bytearray(path.read_bytes())
    data[entry.offset : entry.offset + entry.length] = b"x" * entry.length
    path.write_bytes(bytes(data))
    with pytest.raises(PackError, match="SHA-256"):
        load_pack(pack)
    with pytest.raises(PackError, match=f"image {entry.name} cannot be decoded"):
        load_pack(pack, verify=False)


# ---------------------------------------------------------------------------------------------
# write_pack: bad images, interrupted packs, existing packs


def test_a_corrupt_image_is_named_and_left_out(
    samples: list[Sample], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = tmp_path / "broken.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    broken = dataclasses.replace(samples[1], name="9--Broken/broken", image_path=garbage)
    with caplog.at_level(logging.WARNING, logger="ufssd.data.pack"):
        manifest = write_pack([samples[0], broken, samples[2]], tmp_path / "pack", max_side=64, shard_mib=1)
    assert "9--Broken/broken" in caplog.text and str(garbage) in caplog.text
    assert [e.name for e in manifest.images] == [samples[0].name, samples[2].name]
    assert [x.name for x in manifest.left_out] == ["9--Broken/broken"]
    assert verify_pack(tmp_path / "pack").left_out[0].reason == manifest.left_out[0].reason


def test_an_interrupted_pack_has_no_manifest(samples: list[Sample], tmp_path: Path, monkeypatch) -> None:
    import ufssd.data.pack as pack_module

    calls = []

    def failing(rgb, max_side, quality):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return encode_image(rgb, max_side, quality)

    monkeypatch.setattr(pack_module, "encode_image", failing)
    out = tmp_path / "pack"
    with pytest.raises(KeyboardInterrupt):
        write_pack(samples[:4], out, max_side=64, shard_mib=0.002)
    assert list(out.glob("shard-*.bin")) and not (out / MANIFEST_NAME).exists()
    with pytest.raises(PackError, match="no manifest.json"):
        verify_pack(out)


def test_an_existing_different_pack_is_refused(samples: list[Sample], tmp_path: Path) -> None:
    out = tmp_path / "pack"
    first = write_pack(samples[:4], out, max_side=64, quality=80, shard_mib=0.002)
    assert len(first.shards) >= 2
    again = write_pack(samples[:4], out, max_side=64, quality=80, shard_mib=0.002)  # the same pack: written anew
    assert [s.sha256 for s in again.shards] == [s.sha256 for s in first.shards]
    with pytest.raises(PackError, match="holds a different pack"):
        write_pack(samples[:4], out, max_side=64, quality=60, shard_mib=0.002)
    with pytest.raises(PackError, match="holds a different pack"):
        write_pack(samples[:3], out, max_side=64, quality=80, shard_mib=0.002)
    smaller = write_pack(samples[:1], out, max_side=64, quality=80, shard_mib=1, overwrite=True)
    assert sorted(p.name for p in out.glob("shard-*.bin")) == ["shard-000.bin"]  # old shards removed
    assert verify_pack(out).count == smaller.count == 1


def test_duplicate_names_are_refused(samples: list[Sample], tmp_path: Path) -> None:
    with pytest.raises(PackError, match="duplicate"):
        write_pack([samples[0], samples[0]], tmp_path / "pack", max_side=64)


# ---------------------------------------------------------------------------------------------
# scripts


def test_plan_calls_fills_each_call_up_to_its_limit(load_script) -> None:
    script = load_script("pack_device_data")
    mib = 2**20
    files = [("s0", 56 * mib), ("s1", 56 * mib), ("s2", 10 * mib), ("manifest.json", 3 * mib)]
    calls = plan_transfer(files, 60)
    assert [[p for p, _ in call] for call in calls] == [["s0"], ["s1"], ["s2", "manifest.json"]]
    small = [(f"s{k}", mib) for k in range(9)]  # at most 8 carried paths per call
    assert [len(c) for c in plan_transfer(small, 60)] == [8, 1]
    with pytest.raises(ValueError, match="does not fit"):
        plan_transfer([("big", 61 * mib)], 60)
    with pytest.raises(SystemExit):
        script.parse_args(["--shard-mib", "70", "--call-mib", "60"])


def _mini_root(samples: list[Sample], root: Path, dev_overlap: bool = False) -> Path:
    """A WIDER root with 2 train and 2 val images (linked), the val ones in val_train_images.txt."""
    for split, part in (("train", samples[:2]), ("val", samples[2:4])):
        blocks = []
        for s in part:
            link = root / f"WIDER_{split}" / "images" / f"{s.name}.jpg"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(s.image_path.resolve())
            blocks.append((f"{s.name}.jpg", s.boxes, s.ignore))
        (root / "wider_face_split").mkdir(parents=True, exist_ok=True)
        (root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").write_text(format_annotations(blocks))
    (root / "val_train_images.txt").write_text("".join(f"{s.name}.jpg\n" for s in samples[2:4]))
    dev = samples[2:3] if dev_overlap else []
    (root / "dev_images.txt").write_text("".join(f"{s.name}.jpg\n" for s in dev))
    return root


def test_pack_device_data_packs_train_and_val_train(load_script, samples, tmp_path: Path, capsys) -> None:
    script = load_script("pack_device_data")
    root = _mini_root(samples, tmp_path / "root")
    out = tmp_path / "pack"
    assert script.main(["--data-root", str(root), "--out", str(out), "--max-side", "64", "--shard-mib", "0.01"]) == 0
    manifest = verify_pack(out)
    expected = sorted(s.name for s in samples[:2]) + sorted(s.name for s in samples[2:4])
    assert [e.name for e in manifest.images] == expected
    printed = capsys.readouterr().out
    assert "4 images (0 left out)" in printed and "call 1:" in printed and MANIFEST_NAME in printed


def test_pack_device_data_refuses_dev_images(load_script, samples, tmp_path: Path, capsys) -> None:
    script = load_script("pack_device_data")
    root = _mini_root(samples, tmp_path / "root", dev_overlap=True)
    assert script.main(["--data-root", str(root), "--out", str(tmp_path / "pack")]) == 1
    assert "lists 1 dev images" in capsys.readouterr().err
    assert not (tmp_path / "pack").exists()


def test_pack_cost_settings_and_table(load_script) -> None:
    script = load_script("pack_cost")
    assert script.parse_setting("original") is None
    assert script.parse_setting("800:85") == script.Setting(800, 85, False)
    assert script.parse_setting("640:85:restored") == script.Setting(640, 85, True)
    for bad in ("800", "800:x", "800:101", "800:85:up"):
        with pytest.raises(Exception, match="MAX_SIDE"):
            script.parse_setting(bad)
    with pytest.raises(SystemExit):
        script.parse_args(["--settings", "original", "1024"])
    row = dict(bytes_per_image="1000.0", pack_mib="4.66", device_calls="1", size_method="m", train_images="4885",
               dev_images="1045")
    rows = [
        {**row, "setting": "original", "ap_easy": "0.6779", "ap_medium": "0.6620", "ap_hard": "0.5004"},
        {**row, "setting": "640:85", "ap_easy": "0.6700", "ap_medium": "0.6400", "ap_hard": "0.4000"},
    ]
    table = script.markdown(rows, 60)
    assert "| 640:85 | 1,000 | 4.7 | 1 | 0.6700 | 0.6400 | 0.4000 | -0.0079 | -0.0220 | -0.1004 |" in table
