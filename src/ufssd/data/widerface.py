"""WIDER FACE reading: the official annotation text format, the folder layout, subsets, sources.

The official ``wider_face_<split>_bbx_gt.txt`` is a sequence of blocks::

    <event>/<name>.jpg
    <count>
    x1 y1 w h blur expression illumination invalid occlusion pose     (count lines)

Quirks accepted (they are in the official files, see ``docs/data.md``):

- a zero-face image is written ``0`` (train) or ``1`` (val) followed by one line of ten zeros;
  it gets zero boxes;
- faces with ``invalid == 1`` and boxes with zero or negative width/height are kept with
  ``ignore=True`` (never positives, never negatives).

Boxes are converted at this edge to the package convention ``(x1, y1, x2, y2)`` float pixels,
``x2 = x + w``, ``y2 = y + h``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
_NUM_FIELDS = 10
_INVALID_FIELD = 7


class DataError(ValueError):
    """A data file is wrong: the message names the file (and line number where there is one)."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One annotated image.

    image_path: the image file (not opened until it is loaded).
    name: ``"<event>/<stem>"``, e.g. ``"0--Parade/0_Parade_Parade_0_628"``.
    boxes: (G, 4) float32, x1 y1 x2 y2 in original-image pixels.
    ignore: (G,) bool, True for invalid / degenerate faces (neither positive nor negative).
    origin: ``"<annotation file>:<line>"`` of the image's name line, for error messages.
    """

    image_path: Path
    name: str
    boxes: np.ndarray
    ignore: np.ndarray
    origin: str = field(default="", compare=False)

    @property
    def num_faces(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True)
class DataSource:
    """One training source: a WIDER FACE root, a split of it and an optional subset list.

    ``root`` holds the official layout (``WIDER_<split>/images``, ``wider_face_split/``);
    ``subset`` is a list file of ``<event>/<name>.jpg`` lines (see :func:`read_image_list`).
    """

    root: Path
    split: str
    subset: Path | None = None

    def __str__(self) -> str:
        text = f"{self.root}:{self.split}"
        return f"{text}:{self.subset}" if self.subset is not None else text


# ---------------------------------------------------------------------------------------------
# names and subset lists


def normalize_name(entry: str) -> str:
    """``"<event>/<name>.jpg"`` or ``"<event>/<name>"`` -> ``"<event>/<name>"``."""
    entry = entry.strip().replace("\\", "/")
    stem, ext = os.path.splitext(entry)
    return stem if ext.lower() in IMAGE_EXTENSIONS else entry


def read_image_list(path: str | os.PathLike) -> list[str]:
    """Read a subset list file: one ``<event>/<name>.jpg`` (or ``<event>/<name>``) per line.

    Blank lines and ``#`` comments are skipped. Returns names ``"<event>/<stem>"`` in file order,
    duplicates removed. Raises :class:`DataError` for a missing file or a line that is not
    ``<event>/<name>``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: image list not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read image list ({exc})") from None
    names: list[str] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = normalize_name(line)
        parts = name.split("/")
        if len(parts) != 2 or not all(parts) or len(line.split()) != 1:
            raise DataError(f"{path}:{lineno}: expected '<event>/<name>.jpg', got {raw.strip()!r}")
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _subset_names(subset: str | os.PathLike | Iterable[str] | None) -> tuple[list[str] | None, str]:
    """The subset as a list of normalised names, and a description for messages."""
    if subset is None:
        return None, ""
    if isinstance(subset, (str, os.PathLike)):
        return read_image_list(subset), str(subset)
    names = list(dict.fromkeys(normalize_name(s) for s in subset))
    return names, "the given subset"


# ---------------------------------------------------------------------------------------------
# the annotation file


def _is_image_line(line: str) -> bool:
    return line.strip().lower().endswith(IMAGE_EXTENSIONS)


def _parse_block(
    lines: list[str], start: int, txt_path: Path
) -> tuple[str, np.ndarray, np.ndarray, int]:
    """Parse the block whose name line is ``lines[start]``.

    Returns ``(name, boxes (G,4) float32 xyxy, ignore (G,) bool, index of the next block)``.
    Raises :class:`DataError` naming ``txt_path`` and the 1-based line number.
    """
    name_line = lines[start].strip()
    if not _is_image_line(name_line) or len(name_line.split()) != 1:
        raise DataError(f"{txt_path}:{start + 1}: expected an image path, got {name_line!r}")
    name = normalize_name(name_line)
    if start + 1 >= len(lines):
        raise DataError(f"{txt_path}:{start + 2}: missing face count for {name_line} (end of file)")
    count_text = lines[start + 1].strip()
    try:
        count = int(count_text)
    except ValueError:
        raise DataError(
            f"{txt_path}:{start + 2}: face count must be a non-negative integer, got {count_text!r}"
        ) from None
    if count < 0:
        raise DataError(f"{txt_path}:{start + 2}: negative face count {count}")

    rows = np.zeros((count, _NUM_FIELDS), dtype=np.float64)
    for k in range(count):
        lineno = start + 2 + k
        if lineno >= len(lines):
            raise DataError(
                f"{txt_path}:{lineno + 1}: block of {name_line} ends early "
                f"({k} of {count} face lines; end of file)"
            )
        fields = lines[lineno].split()
        if len(fields) != _NUM_FIELDS:
            what = "ends early" if _is_image_line(lines[lineno]) else "has a malformed face line"
            raise DataError(
                f"{txt_path}:{lineno + 1}: block of {name_line} {what}: expected {_NUM_FIELDS} "
                f"fields (x y w h blur expression illumination invalid occlusion pose), "
                f"got {lines[lineno].strip()!r}"
            )
        try:
            rows[k] = [float(f) for f in fields]
        except ValueError:
            raise DataError(
                f"{txt_path}:{lineno + 1}: non-numeric field in {lines[lineno].strip()!r}"
            ) from None
        if not np.isfinite(rows[k]).all():
            raise DataError(
                f"{txt_path}:{lineno + 1}: non-finite value in {lines[lineno].strip()!r}"
            )
    next_start = start + 2 + count

    if count == 0:
        # train convention: count 0 then one line of ten zeros (tolerated if absent)
        if next_start < len(lines) and not _is_image_line(lines[next_start]):
            fields = lines[next_start].split()
            if len(fields) != _NUM_FIELDS or any(f not in ("0", "0.0") for f in fields):
                raise DataError(
                    f"{txt_path}:{next_start + 1}: after a count of 0 expected a line of ten "
                    f"zeros or the next image, got {lines[next_start].strip()!r}"
                )
            next_start += 1
    elif count == 1 and not rows.any():
        rows = rows[:0]  # val convention: count 1 and a line of ten zeros = no face
    after = lines[next_start] if next_start < len(lines) else ""
    if after.strip() and not _is_image_line(after):
        raise DataError(
            f"{txt_path}:{next_start + 1}: block of {name_line} has more face lines than its "
            f"count {count} (expected the next image path, got {lines[next_start].strip()!r})"
        )

    x, y, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([x, y, x + w, y + h], axis=1).astype(np.float32).reshape(-1, 4)
    ignore = (rows[:, _INVALID_FIELD] != 0) | (w <= 0) | (h <= 0)
    return name, boxes, ignore.astype(bool), next_start


def _check_image(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image, or None when it looks fine (header only)."""
    if not path.is_file():
        return "image not found"
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"image not readable ({exc})"
    if not head:
        return "image file is empty"
    is_webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    if not (head[:3] == b"\xff\xd8\xff" or head[:8] == b"\x89PNG\r\n\x1a\n" or is_webp):
        return "not a JPEG, PNG or WebP file"
    return None


def read_annotations(
    txt_path: str | os.PathLike,
    image_root: str | os.PathLike,
    subset: str | os.PathLike | Iterable[str] | None = None,
    on_error: str = "raise",
    check_images: bool = False,
) -> list[Sample]:
    """Read an official WIDER FACE ``*_bbx_gt.txt`` file.

    Args:
        txt_path: the annotation file.
        image_root: the folder that holds ``<event>/<name>.jpg`` (e.g. ``WIDER_train/images``).
        subset: None (all images), a list file (:func:`read_image_list`) or names; only these
            images are returned, in annotation-file order. A subset name that is not in the
            annotations raises :class:`DataError` naming it.
        on_error: ``"raise"``: a malformed block (or, with ``check_images``, a missing or
            unreadable image) raises :class:`DataError` naming the file and line;
            ``"skip"``: it is logged as a warning and skipped, the count logged at the end.
        check_images: check each image now (exists, JPEG/PNG signature) instead of at load time.

    Returns:
        ``list[Sample]``; boxes (G, 4) float32 xyxy and ignore (G,) bool per image.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    txt_path, image_root = Path(txt_path), Path(image_root)
    try:
        lines = txt_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{txt_path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{txt_path}: cannot read annotation file ({exc})") from None

    wanted, subset_desc = _subset_names(subset)
    wanted_set = set(wanted) if wanted is not None else None
    samples: list[Sample] = []
    seen: set[str] = set()
    skipped_names: set[str] = set()
    skipped = 0

    def fail(message: str) -> None:
        nonlocal skipped
        if on_error == "raise":
            raise DataError(message)
        skipped += 1
        logger.warning("skipping: %s", message)

    i = 0
    while i < len(lines):
        if not lines[i].strip():  # tolerate blank lines between blocks (e.g. a trailing one)
            i += 1
            continue
        try:
            name, boxes, ignore, nxt = _parse_block(lines, i, txt_path)
        except DataError as exc:
            fail(str(exc))
            if _is_image_line(lines[i]):
                skipped_names.add(normalize_name(lines[i]))
            # resynchronise on the next line that looks like an image path
            i += 1
            while i < len(lines) and not _is_image_line(lines[i]):
                i += 1
            continue
        origin = f"{txt_path}:{i + 1}"
        image_path = image_root / lines[i].strip()
        i = nxt
        if name in seen:
            fail(f"{origin}: duplicate block for {name}")
            continue
        seen.add(name)
        if wanted_set is not None and name not in wanted_set:
            continue
        if check_images:
            problem = _check_image(image_path)
            if problem is not None:
                fail(f"{origin}: {problem}: {image_path}")
                skipped_names.add(name)
                continue
        samples.append(Sample(image_path, name, boxes, ignore, origin))

    if wanted is not None:
        missing = [n for n in wanted if n not in seen and n not in skipped_names]
        if missing:
            shown = ", ".join(missing[:5])
            if len(missing) > 5:
                shown += f" (and {len(missing) - 5} more)"
            raise DataError(f"{subset_desc}: {len(missing)} image(s) not in {txt_path}: {shown}")
    if skipped:
        logger.warning("%s: skipped %d malformed or unreadable item(s)", txt_path, skipped)
    logger.info(
        "%s: %d images, %d faces (%d ignored)",
        txt_path,
        len(samples),
        sum(s.num_faces for s in samples),
        sum(int(s.ignore.sum()) for s in samples),
    )
    return samples


# ---------------------------------------------------------------------------------------------
# the official layout and several sources


def split_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """``(annotation file, image folder)`` of ``split`` under a WIDER FACE root."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    return (
        root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt",
        root / f"WIDER_{split}" / "images",
    )


def read_split(
    root: str | os.PathLike,
    split: str = "train",
    subset: str | os.PathLike | Iterable[str] | None = None,
    on_error: str = "raise",
    check_images: bool = False,
) -> list[Sample]:
    """Read ``split`` of a root in the official layout::

        root/wider_face_split/wider_face_<split>_bbx_gt.txt
        root/WIDER_<split>/images/<event>/<name>.jpg

    Other arguments as :func:`read_annotations`.
    """
    txt_path, image_root = split_paths(root, split)
    if not image_root.is_dir():
        raise DataError(f"{image_root}: image folder not found (root {root}, split {split!r})")
    return read_annotations(txt_path, image_root, subset, on_error, check_images)


def parse_source(spec: str | DataSource) -> DataSource:
    """Parse ``"ROOT:SPLIT[:SUBSET_LIST]"`` into a :class:`DataSource`.

    SPLIT is ``train`` or ``val``; the first ``:train:``/``:val:`` component after the root
    separates root from subset, so Windows drive letters work. Examples::

        /data/widerface:train
        /data/widerface:val:/data/widerface/val_train_images.txt
    """
    if isinstance(spec, DataSource):
        return spec
    parts = str(spec).split(":")
    for k in range(1, len(parts)):
        if parts[k] in SPLITS:
            root = ":".join(parts[:k])
            subset = ":".join(parts[k + 1 :])
            if not root:
                break
            return DataSource(Path(root), parts[k], Path(subset) if subset else None)
    raise ValueError(
        f"bad data source {spec!r}: expected 'ROOT:SPLIT[:SUBSET_LIST]' with SPLIT in {SPLITS}"
    )


def read_sources(
    sources: Sequence[str | DataSource],
    on_error: str = "raise",
    check_images: bool = False,
) -> list[Sample]:
    """Read and concatenate several sources (``"ROOT:SPLIT[:SUBSET_LIST]"`` strings or
    :class:`DataSource`), in the given order. The same image path twice raises
    :class:`DataError` (a source given twice, or overlapping subsets).

    Example (WIDER train + the val images that training may use)::

        read_sources(["/d/widerface:train", "/d/widerface:val:/d/widerface/val_train_images.txt"])
    """
    if isinstance(sources, (str, DataSource)):
        sources = [sources]
    samples: list[Sample] = []
    where: dict[Path, str] = {}
    for spec in sources:
        source = parse_source(spec)
        part = read_split(source.root, source.split, source.subset, on_error, check_images)
        for s in part:
            key = s.image_path.resolve()
            if key in where:
                raise DataError(f"{s.image_path}: given twice (sources {where[key]} and {source})")
            where[key] = str(source)
        logger.info("source %s: %d images", source, len(part))
        samples.extend(part)
    return samples
