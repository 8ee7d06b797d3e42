"""Packs: training images re-encoded as JPEG in a few shard files, with a manifest, for a GPU machine.

A call to the lent GPU machine carries at most 64 MiB, and a warm machine keeps ignored files
between back-to-back calls, so the training images travel as a *pack* (``docs/data.md``, "Packs
for the device")::

    pack_dir/shard-000.bin   the encoded images, one after another (at most ``shard_mib`` MiB)
    pack_dir/shard-001.bin   ...
    pack_dir/manifest.json   settings, one entry per image, one per shard (size, SHA-256)

Each image is shrunk so that its longer side is at most ``max_side`` (never enlarged) and saved
as baseline JPEG (:func:`encode_image`), because ``torchvision.io.decode_jpeg(..., device="cuda")``
decodes a list of them on the GPU in one call (:func:`load_pack`). Boxes in the manifest are in
packed pixels (the original boxes times the entry's ``scale``).

Writing (:func:`write_pack`) is atomic file by file and the manifest comes last: an interrupted
pack has no manifest and :func:`verify_pack` refuses it. Before training, :func:`verify_pack`
checks every shard's size and SHA-256 (a half-transferred shard is refused) and every entry
against its shard, and raises one :class:`PackError` that lists every difference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from ufssd.atomic import atomic_write_bytes, atomic_write_text
from ufssd.data.dataset import load_image
from ufssd.widerface_files import DataError, Sample

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "MAX_CARRY_PATHS",
    "VERSION",
    "LeftOut",
    "PackEntry",
    "PackError",
    "PackManifest",
    "PackedImages",
    "ShardRecord",
    "decode_jpegs",
    "encode_image",
    "load_pack",
    "plan_transfer",
    "read_manifest",
    "shard_name",
    "sha256_file",
    "shrink",
    "verify_pack",
    "write_pack",
]

log = logging.getLogger(__name__)

FORMAT = "ufssd-pack"
VERSION = 1
MANIFEST_NAME = "manifest.json"
_SHARD_PATTERN = re.compile(r"shard-\d{3,}\.bin")
_MIB = 2**20
_BOX_DECIMALS = 3  # boxes are stored to 0.001 packed pixel
_MAX_LISTED = 20  # image-entry problems listed one by one; the rest are counted


class PackError(DataError):
    """A pack that cannot be written, or does not match its manifest; the message says why."""


# ---------------------------------------------------------------------------------------------
# the manifest


@dataclass(frozen=True, eq=False)
class PackEntry:
    """One packed image.

    name: ``"<event>/<stem>"``; shard: index into :attr:`PackManifest.shards`; offset, length:
    its bytes in the shard; height, width: the packed image; scale: packed / original pixels;
    boxes: (G, 4) float32, x1 y1 x2 y2 in packed pixels; ignore: (G,) bool.
    """

    name: str
    shard: int
    offset: int
    length: int
    height: int
    width: int
    scale: float
    boxes: np.ndarray
    ignore: np.ndarray

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shard": self.shard,
            "offset": self.offset,
            "length": self.length,
            "height": self.height,
            "width": self.width,
            "scale": self.scale,
            "boxes": np.round(self.boxes.astype(np.float64), _BOX_DECIMALS).tolist(),
            "ignore": self.ignore.astype(bool).tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PackEntry:
        """Raises KeyError, TypeError or ValueError for a malformed entry (shapes are not checked
        here: :func:`verify_pack` reports them)."""
        boxes = np.asarray(d["boxes"], dtype=np.float32)
        ignore = np.asarray(d["ignore"], dtype=bool)
        return cls(
            name=str(d["name"]),
            shard=int(d["shard"]),
            offset=int(d["offset"]),
            length=int(d["length"]),
            height=int(d["height"]),
            width=int(d["width"]),
            scale=float(d["scale"]),
            boxes=boxes.reshape(0, 4) if boxes.size == 0 else boxes,
            ignore=ignore.reshape(0) if ignore.size == 0 else ignore,
        )


@dataclass(frozen=True)
class ShardRecord:
    """One shard file: its name in the pack folder, its size and SHA-256 (hex)."""

    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class LeftOut:
    """An image that is not in the pack, and why (a corrupt or unreadable file)."""

    name: str
    reason: str


@dataclass(frozen=True, eq=False)
class PackManifest:
    """What ``manifest.json`` holds. ``count`` is the stated number of images (it must equal
    ``len(images)``); ``encoder`` names the JPEG encoder (OpenCV's version)."""

    max_side: int
    quality: int
    shard_mib: float
    source: str
    encoder: str
    count: int
    images: tuple[PackEntry, ...]
    shards: tuple[ShardRecord, ...]
    left_out: tuple[LeftOut, ...] = ()
    format: str = FORMAT
    version: int = VERSION

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    @property
    def names(self) -> list[str]:
        """The packed images' names (``"<event>/<stem>"``), in pack order."""
        return [e.name for e in self.images]

    @property
    def num_faces(self) -> int:
        return sum(len(e.boxes) for e in self.images)

    def settings(self) -> dict[str, Any]:
        return {"max_side": self.max_side, "quality": self.quality, "shard_mib": self.shard_mib}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "version": self.version,
            "settings": {**self.settings(), "encoder": self.encoder},
            "source": self.source,
            "count": self.count,
            "faces": self.num_faces,
            "total_bytes": self.total_bytes,
            "shards": [vars(s) for s in self.shards],
            "left_out": [vars(s) for s in self.left_out],
            "images": [e.to_json() for e in self.images],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PackManifest:
        """Raises KeyError, TypeError or ValueError for a malformed manifest."""
        settings = d["settings"]
        return cls(
            max_side=int(settings["max_side"]),
            quality=int(settings["quality"]),
            shard_mib=float(settings["shard_mib"]),
            source=str(d.get("source", "")),
            encoder=str(settings.get("encoder", "")),
            count=int(d["count"]),
            images=tuple(PackEntry.from_json(e) for e in d["images"]),
            shards=tuple(ShardRecord(str(s["file"]), int(s["bytes"]), str(s["sha256"])) for s in d["shards"]),
            left_out=tuple(LeftOut(str(s["name"]), str(s["reason"])) for s in d.get("left_out", [])),
            format=str(d["format"]),
            version=int(d["version"]),
        )


def _dump_manifest(manifest: PackManifest) -> str:
    """JSON with one shard, left-out image or image entry per line (readable with ``head``)."""
    data = manifest.to_json()
    lines = []
    for key, value in data.items():
        if isinstance(value, list):
            items = ",\n".join(f"  {json.dumps(v, separators=(',', ':'))}" for v in value)
            lines.append(f' "{key}": [\n{items}\n ]' if value else f' "{key}": []')
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def read_manifest(pack_dir: str | Path) -> PackManifest:
    """The manifest of ``pack_dir``, the shards not checked (:func:`verify_pack` checks them);
    :class:`PackError` if it is missing, unreadable, of another format or version, or malformed."""
    pack_dir = Path(pack_dir)
    path = pack_dir / MANIFEST_NAME
    if not path.is_file():
        raise PackError(f"{pack_dir}: no {MANIFEST_NAME} (not a pack, or an interrupted one)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackError(f"{path}: cannot read the manifest ({exc})") from None
    if not isinstance(data, dict):
        raise PackError(f"{path}: invalid manifest (a JSON object expected)")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise PackError(
            f"{path}: format {data.get('format')!r} version {data.get('version')!r}, "
            f"expected {FORMAT!r} version {VERSION}"
        )
    try:
        return PackManifest.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise PackError(f"{path}: invalid manifest ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------------------------
# encoding and decoding


def shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``(image, scale)``: ``rgb`` (H, W, 3) shrunk by ``scale = min(1, max_side / max(H, W))``
    with ``cv2.INTER_AREA``, never enlarged (then returned as is, scale 1.0). ``fx = fy = scale``,
    so OpenCV maps pixels by exactly this factor: a box ``b`` of the original is ``b * scale``;
    each side is ``round(side * scale)`` (:func:`_packed_size`)."""
    if max_side < 1:
        raise ValueError(f"shrink: max_side must be >= 1, got {max_side}")
    scale = min(1.0, max_side / max(rgb.shape[:2]))
    if scale < 1.0:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return rgb, scale


def encode_image(rgb: np.ndarray, max_side: int, quality: int) -> tuple[bytes, float]:
    """An image as the pack stores it: ``(JPEG bytes, scale)``.

    rgb: (H, W, 3) uint8. The image is shrunk by :func:`shrink` (``scale = min(1, max_side /
    max(H, W))``, never enlarged; a box ``b`` of the original is ``b * scale`` in the packed
    image) and encoded as baseline JPEG at ``quality`` (1..100) with optimised Huffman tables
    and OpenCV's default 4:2:0 chroma subsampling.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"encode_image: expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if not 1 <= quality <= 100:
        raise ValueError(f"encode_image: quality must be 1..100, got {quality}")
    rgb, scale = shrink(rgb, max_side)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    if not ok:
        raise ValueError(f"encode_image: JPEG encoding failed for a {rgb.shape} image")
    return data.tobytes(), scale


def decode_jpegs(datas: Sequence[torch.Tensor], device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """JPEG byte tensors (1-D uint8, on the CPU) -> ``(3, H, W) uint8`` RGB tensors on ``device``,
    with one ``torchvision.io.decode_jpeg`` call (batched on the GPU with ``device="cuda"``)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    return decode_jpeg(list(datas), mode=ImageReadMode.RGB, device=device)


# ---------------------------------------------------------------------------------------------
# writing


def shard_name(index: int) -> str:
    return f"shard-{index:03d}.bin"


class _ShardWriter:
    """Collects encoded images and writes a shard (atomically) whenever the next would not fit."""

    def __init__(self, out_dir: Path, limit: int) -> None:
        self.out_dir, self.limit = out_dir, limit
        self.buffer = bytearray()
        self.shards: list[ShardRecord] = []

    def add(self, data: bytes, name: str) -> tuple[int, int]:
        """Append one image; returns ``(shard index, offset)``."""
        if len(data) > self.limit:
            raise PackError(
                f"{name}: {len(data)} bytes encoded, more than a whole shard ({self.limit} bytes)"
            )
        if len(self.buffer) + len(data) > self.limit:
            self.flush()
        offset = len(self.buffer)
        self.buffer += data
        return len(self.shards), offset

    def flush(self) -> None:
        if not self.buffer:
            return
        name = shard_name(len(self.shards))
        atomic_write_bytes(self.out_dir / name, bytes(self.buffer))
        self.shards.append(ShardRecord(name, len(self.buffer), hashlib.sha256(self.buffer).hexdigest()))
        self.buffer = bytearray()


def _prepare_out_dir(
    out_dir: Path, settings: dict[str, Any], source: str, names: list[str], overwrite: bool
) -> None:
    """Refuse a folder holding a different pack (unless ``overwrite``); then remove the old
    manifest and shards, the manifest first, so that an interrupted pack has no manifest."""
    manifest_path = out_dir / MANIFEST_NAME
    if manifest_path.exists() and not overwrite:
        try:
            old = read_manifest(out_dir)
        except PackError as exc:
            raise PackError(
                f"{out_dir} holds another pack ({exc}); pass overwrite=True to replace it"
            ) from None
        old_names = [e.name for e in old.images] + [s.name for s in old.left_out]
        if old.settings() != settings or old.source != source or sorted(old_names) != sorted(names):
            raise PackError(
                f"{out_dir} holds a different pack ({old.count} images, {old.settings()}, source "
                f"{old.source!r}); pass overwrite=True to replace it"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    for path in out_dir.iterdir():
        if _SHARD_PATTERN.fullmatch(path.name):
            path.unlink()


def write_pack(
    samples: Iterable[Sample],
    out_dir: str | Path,
    *,
    max_side: int = 1024,
    quality: int = 75,
    shard_mib: float = 56,
    source: str = "",
    overwrite: bool = False,
    progress: bool = False,
) -> PackManifest:
    """Pack ``samples`` (in the given order) into ``out_dir`` and return its manifest.

    Each image is read with :func:`ufssd.data.load_image` and encoded with :func:`encode_image`;
    shards hold at most ``shard_mib`` MiB. Images without faces are kept (negatives); an image
    that cannot be read is named in a warning and recorded under ``left_out``. ``source``
    describes the data in the manifest. A folder that holds a different pack (other settings,
    source or images) is refused unless ``overwrite``; the same pack is written again.
    Raises :class:`PackError` for duplicate names or an image larger than a shard.
    """
    out_dir = Path(out_dir)
    samples = list(samples)
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PackError(f"duplicate image names cannot be packed: {dup[:5]}")
    settings = {"max_side": int(max_side), "quality": int(quality), "shard_mib": float(shard_mib)}
    _prepare_out_dir(out_dir, settings, source, names, overwrite)

    writer = _ShardWriter(out_dir, int(shard_mib * _MIB))
    entries: list[PackEntry] = []
    left_out: list[LeftOut] = []
    iterator: Iterable[Sample] = samples
    if progress:
        from tqdm import tqdm

        iterator = tqdm(samples, desc="pack", unit="img", dynamic_ncols=True)
    for sample in iterator:
        try:
            rgb = load_image(sample.image_path, sample.origin)
        except DataError as exc:
            log.warning("left out of the pack: %s: %s", sample.name, exc)
            left_out.append(LeftOut(sample.name, str(exc)))
            continue
        data, scale = encode_image(rgb, max_side, quality)
        shard, offset = writer.add(data, sample.name)
        height, width = _packed_size(rgb.shape[:2], scale)
        boxes = (sample.boxes.astype(np.float64) * scale).astype(np.float32).reshape(-1, 4)
        entries.append(
            PackEntry(sample.name, shard, offset, len(data), height, width, scale, boxes, sample.ignore.copy())
        )
    writer.flush()

    manifest = PackManifest(
        max_side=settings["max_side"], quality=settings["quality"], shard_mib=settings["shard_mib"],
        source=source, encoder=f"OpenCV {cv2.__version__} JPEG", count=len(entries),
        images=tuple(entries), shards=tuple(writer.shards), left_out=tuple(left_out),
    )
    atomic_write_text(out_dir / MANIFEST_NAME, _dump_manifest(manifest))
    log.info("packed %d images (%d left out) in %d shards, %.1f MiB: %s",
             len(entries), len(left_out), len(writer.shards), manifest.total_bytes / _MIB, out_dir)
    return manifest


def _packed_size(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(H, W)`` after ``cv2.resize(fx=fy=scale)``: each side times ``scale``, rounded half to
    even as OpenCV's ``cvRound`` does (``load_pack`` checks the decoded size against it)."""
    if scale >= 1.0:
        return int(shape[0]), int(shape[1])
    return int(round(shape[0] * scale)), int(round(shape[1] * scale))


# ---------------------------------------------------------------------------------------------
# verifying and loading


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex), read a MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def _shard_problems(pack_dir: Path, shards: Sequence[ShardRecord]) -> list[str]:
    problems = []
    for shard in shards:
        path = pack_dir / shard.file
        if not path.is_file():
            problems.append(f"shard {shard.file} is missing")
            continue
        size = path.stat().st_size
        if size != shard.bytes:
            problems.append(
                f"shard {shard.file} has {size} bytes, the manifest says {shard.bytes} (half-transferred?)"
            )
        elif sha256_file(path) != shard.sha256:
            problems.append(
                f"shard {shard.file}: SHA-256 differs from the manifest's (corrupt or half-transferred)"
            )
    return problems


def _entry_problems(entry: PackEntry, shards: Sequence[ShardRecord]) -> list[str]:
    problems = []
    if not 0 <= entry.shard < len(shards):
        problems.append(f"image {entry.name}: shard {entry.shard} does not exist ({len(shards)} shards)")
    elif entry.offset < 0 or entry.length <= 0 or entry.offset + entry.length > shards[entry.shard].bytes:
        problems.append(
            f"image {entry.name}: bytes {entry.offset}..{entry.offset + entry.length} lie outside "
            f"{shards[entry.shard].file} ({shards[entry.shard].bytes} bytes)"
        )
    if entry.height <= 0 or entry.width <= 0:
        problems.append(f"image {entry.name}: packed size {entry.width}x{entry.height} has no pixels")
    if entry.boxes.ndim != 2 or entry.boxes.shape[1] != 4:
        problems.append(f"image {entry.name}: boxes have shape {entry.boxes.shape}, expected (G, 4)")
    elif entry.ignore.shape != (len(entry.boxes),):
        problems.append(
            f"image {entry.name}: ignore has shape {entry.ignore.shape}, expected ({len(entry.boxes)},)"
        )
    return problems


def verify_pack(pack_dir: str | Path) -> PackManifest:
    """The manifest of ``pack_dir`` after checking the pack against it.

    Raises one :class:`PackError` that lists every difference: a missing, unreadable or invalid
    manifest, another format or version (these three stop the check), a missing shard, a shard
    of another size or SHA-256, an image entry outside its shard, boxes not of shape (G, 4) or
    flags not (G,), duplicate names, and an image count that differs from the stated one. (Past
    20 image entries the rest are counted, not listed.)
    """
    pack_dir = Path(pack_dir)
    manifest = read_manifest(pack_dir)
    problems = _shard_problems(pack_dir, manifest.shards)
    if manifest.count != len(manifest.images):
        problems.append(f"the manifest states {manifest.count} images but lists {len(manifest.images)}")
    names = [e.name for e in manifest.images]
    if len(set(names)) != len(names):
        problems.append(f"{len(names) - len(set(names))} image names appear more than once")
    entry_problems = [p for e in manifest.images for p in _entry_problems(e, manifest.shards)]
    problems += entry_problems[:_MAX_LISTED]
    if len(entry_problems) > _MAX_LISTED:
        problems.append(f"... and {len(entry_problems) - _MAX_LISTED} more problems of image entries")
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise PackError(
            f"{pack_dir}: the pack does not match {MANIFEST_NAME} ({len(problems)} problems):\n{listed}"
        )
    return manifest


class PackedImages(NamedTuple):
    """A loaded pack: per image a ``(3, H, W) uint8`` RGB tensor, ``(G, 4)`` float32 boxes in its
    pixels and ``(G,)`` bool ignore flags, all on the requested device; and its name."""

    images: list[torch.Tensor]
    boxes: list[torch.Tensor]
    ignore: list[torch.Tensor]
    names: list[str]


def load_pack(
    pack_dir: str | Path, device: str | torch.device = "cpu", decode_batch: int = 64, verify: bool = True
) -> PackedImages:
    """Decode every image of a pack onto ``device``, in manifest order, with :func:`decode_jpegs`
    (``decode_batch`` images of one shard per call; one shard is read at a time). With
    ``verify`` (the default) :func:`verify_pack` checks the pack first.

    Raises :class:`PackError` naming the image that cannot be decoded or whose size differs from
    its entry.
    """
    pack_dir = Path(pack_dir)
    manifest = verify_pack(pack_dir) if verify else read_manifest(pack_dir)
    out = PackedImages([], [], [], [])
    shard_index, shard_data = -1, torch.empty(0, dtype=torch.uint8)
    batch: list[PackEntry] = []
    for entry in [*manifest.images, None]:
        if batch and (entry is None or entry.shard != shard_index or len(batch) >= max(1, decode_batch)):
            shard_path = pack_dir / manifest.shards[shard_index].file
            out.images.extend(_decode_batch(batch, shard_data, device, shard_path))
            batch = []
        if entry is None:
            break
        if entry.shard != shard_index:
            shard_index = entry.shard
            shard_data = _read_shard(pack_dir / manifest.shards[shard_index].file)
        batch.append(entry)
        out.boxes.append(torch.from_numpy(entry.boxes.reshape(-1, 4).copy()).to(device))
        out.ignore.append(torch.from_numpy(entry.ignore.copy()).to(device))
        out.names.append(entry.name)
    return out


def _read_shard(path: Path) -> torch.Tensor:
    """A shard file as a 1-D uint8 tensor (CPU)."""
    try:
        data = bytearray(path.read_bytes())
    except OSError as exc:
        raise PackError(f"{path}: cannot read the shard ({exc})") from None
    return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def _decode_batch(
    batch: Sequence[PackEntry], data: torch.Tensor, device: str | torch.device, shard: Path
) -> list[torch.Tensor]:
    """Decode one batch; if the batch fails, decode image by image to name the one that does."""
    chunks = [data[e.offset : e.offset + e.length] for e in batch]
    try:
        images = decode_jpegs(chunks, device)
    except RuntimeError:
        images = []
        for entry, chunk in zip(batch, chunks):
            try:
                images.extend(decode_jpegs([chunk], device))
            except RuntimeError as exc:
                raise PackError(f"{shard}: image {entry.name} cannot be decoded ({exc})") from None
    for entry, image in zip(batch, images):
        if tuple(image.shape) != (3, entry.height, entry.width):
            raise PackError(
                f"{shard}: image {entry.name} decodes to {tuple(image.shape)}, the manifest says "
                f"(3, {entry.height}, {entry.width})"
            )
    return images


# ---------------------------------------------------------------------------------------------
# the transfer: which files each call of the device tool carries

MAX_CARRY_PATHS = 8  # paths one call may carry


def plan_transfer(files: list[tuple[str, int]], call_mib: float) -> list[list[tuple[str, int]]]:
    """Group ``(path, bytes)`` files, in order, into calls of at most ``call_mib`` MiB and
    :data:`MAX_CARRY_PATHS` paths each; raises ValueError for a file larger than a call."""
    limit = call_mib * _MIB
    calls: list[list[tuple[str, int]]] = []
    for path, size in files:
        if size > limit:
            raise ValueError(f"{path}: {size / _MIB:.1f} MiB does not fit in one call of {call_mib} MiB")
        last = calls[-1] if calls else None
        if last is None or sum(s for _, s in last) + size > limit or len(last) >= MAX_CARRY_PATHS:
            calls.append([])
        calls[-1].append((path, size))
    return calls
