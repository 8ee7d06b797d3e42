"""WIDER FACE on disk: the folder layout, the split names, image lists and annotation files.

The one home of the dataset's file formats, so that ``ufssd.data``, ``ufssd.evaluation``,
``ufssd.cli`` and ``scripts/`` all read them here. Pure Python; NumPy is imported only where
annotation blocks are parsed (the command line builds its parser from the split names here
without loading it), and never torch. The official layout under a root::

    root/WIDER_<split>/images/<event>/<name>.jpg               split = train | val | test
    root/wider_face_split/wider_face_<split>_bbx_gt.txt        split = train | val
    root/eval_tools/wider_{face,easy,medium,hard}_val.mat      the organisers' val ground truth

and, beside it in the shared subset, two image lists: ``dev_images.txt`` (the dev slice) and
``val_train_images.txt`` (the val images that training may use).

An image list holds one ``<event>/<name>.jpg`` per line; :func:`list_entries` states its comment
rule, the same for every reader.

An annotation file (``wider_face_<split>_bbx_gt.txt``) is a sequence of blocks::

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "ANNOTATION_FOLDER",
    "DEV_LIST",
    "GROUND_TRUTH_FOLDER",
    "IMAGE_EXTENSIONS",
    "IMAGE_SPLITS",
    "SPLITS",
    "VAL_TRAIN_LIST",
    "DataError",
    "DataSource",
    "ListEntry",
    "Sample",
    "annotation_file",
    "ground_truth_folder",
    "image_folder",
    "list_entries",
    "normalize_name",
    "parse_source",
    "format_annotations",
    "read_annotations",
    "read_image_list",
    "read_list_entries",
    "read_sources",
    "read_split",
    "split_paths",
]

SPLITS = ("train", "val")  # the splits with annotation files
IMAGE_SPLITS = ("train", "val", "test")  # the splits with an image folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
ANNOTATION_FOLDER = "wider_face_split"
GROUND_TRUTH_FOLDER = "eval_tools"
DEV_LIST = "dev_images.txt"
VAL_TRAIN_LIST = "val_train_images.txt"
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
# the folder layout


def image_folder(root: str | os.PathLike, split: str) -> Path:
    """``root/WIDER_<split>/images``, the folder of ``<event>/<name>.jpg`` (train, val or test)."""
    if split not in IMAGE_SPLITS:
        raise ValueError(f"split must be one of {IMAGE_SPLITS}, got {split!r}")
    return Path(root) / f"WIDER_{split}" / "images"


def annotation_file(root: str | os.PathLike, split: str) -> Path:
    """``root/wider_face_split/wider_face_<split>_bbx_gt.txt`` (train or val)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return Path(root) / ANNOTATION_FOLDER / f"wider_face_{split}_bbx_gt.txt"


def split_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """``(annotation file, image folder)`` of ``split`` (train or val) under a WIDER FACE root."""
    return annotation_file(root, split), image_folder(root, split)


def ground_truth_folder(root: str | os.PathLike) -> Path:
    """``root/eval_tools``, the folder of the organisers' ``wider_*_val.mat`` files."""
    return Path(root) / GROUND_TRUTH_FOLDER


def _read_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file; :class:`DataError` ``"<path>: <what> not found"`` etc."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read {what} ({exc})") from None


# ---------------------------------------------------------------------------------------------
# image lists


class ListEntry(NamedTuple):
    """One entry of an image list: its 1-based line number and its text (comment removed)."""

    line: int
    text: str


def list_entries(lines: Iterable[str]) -> list[ListEntry]:
    """The entries of an image list, given its lines; the comment rule of every list reader.

    On each line everything from the first ``#`` on is a comment, also after a name
    (``ev/a.jpg  # why`` is ``ev/a.jpg``; so a name cannot contain ``#``, and no WIDER FACE
    name does); what is left is stripped of leading and trailing white space; lines left empty
    (blank lines, comment lines, indented ones too) are skipped. Line numbers count every line,
    from 1. Entries are returned as written, in order, duplicates included.
    """
    entries = []
    for lineno, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if text:
            entries.append(ListEntry(lineno, text))
    return entries


def read_list_entries(path: str | os.PathLike) -> list[ListEntry]:
    """:func:`list_entries` of a UTF-8 list file; :class:`DataError` if it cannot be read."""
    return list_entries(_read_lines(Path(path), "image list"))


def normalize_name(entry: str) -> str:
    """``"<event>/<name>.jpg"`` or ``"<event>/<name>"`` -> ``"<event>/<name>"``."""
    entry = entry.strip().replace("\\", "/")
    stem, ext = os.path.splitext(entry)
    return stem if ext.lower() in IMAGE_EXTENSIONS else entry


def read_image_list(path: str | os.PathLike) -> list[str]:
    """Read a subset list file: one ``<event>/<name>.jpg`` (or ``<event>/<name>``) per line.

    Comments and blank lines as :func:`list_entries`. Returns names ``"<event>/<stem>"`` in file
    order, duplicates removed. Raises :class:`DataError` for a missing file or a line that is
    not ``<event>/<name>``.
    """
    path = Path(path)
    names: list[str] = []
    for lineno, entry in read_list_entries(path):
        name = normalize_name(entry)
        parts = name.split("/")
        if len(parts) != 2 or not all(parts) or len(entry.split()) != 1:
            raise DataError(f"{path}:{lineno}: expected '<event>/<name>.jpg', got {entry!r}")
        names.append(name)
    return list(dict.fromkeys(names))


def _subset_names(subset: str | os.PathLike | Iterable[str] | None) -> tuple[list[str] | None, str]:
    """The subset as a list of normalised names, and a description for messages."""
    if subset is None:
        return None, ""
    if isinstance(subset, (str, os.PathLike)):
        return read_image_list(subset), str(subset)
    names = list(dict.fromkeys(normalize_name(s) for s in subset))
    return names, "the given subset"


# ---------------------------------------------------------------------------------------------
# one block of an annotation file


def _is_image_line(line: str) -> bool:
    return line.strip().lower().endswith(IMAGE_EXTENSIONS)


def _parse_count(lines: list[str], index: int, txt_path: Path, name_line: str) -> int:
    """The face count on ``lines[index]``, the line after the name line ``name_line``."""
    if index >= len(lines):
        raise DataError(f"{txt_path}:{index + 1}: missing face count for {name_line} (end of file)")
    count_text = lines[index].strip()
    try:
        count = int(count_text)
    except ValueError:
        raise DataError(
            f"{txt_path}:{index + 1}: face count must be a non-negative integer, got {count_text!r}"
        ) from None
    if count < 0:
        raise DataError(f"{txt_path}:{index + 1}: negative face count {count}")
    return count


def _parse_face_lines(
    lines: list[str], first: int, count: int, txt_path: Path, name_line: str
) -> np.ndarray:
    """``count`` face lines from ``lines[first]`` on: (count, 10) float64, the file's fields."""
    import numpy as np

    rows = np.zeros((count, _NUM_FIELDS), dtype=np.float64)
    for k in range(count):
        lineno = first + k
        if lineno >= len(lines):
            raise DataError(
                f"{txt_path}:{lineno + 1}: block of {name_line} ends early "
                f"({k} of {count} face lines; end of file)"
            )
        line = lines[lineno]
        fields = line.split()
        if len(fields) != _NUM_FIELDS:
            what = "ends early" if _is_image_line(line) else "has a malformed face line"
            raise DataError(
                f"{txt_path}:{lineno + 1}: block of {name_line} {what}: expected {_NUM_FIELDS} "
                f"fields (x y w h blur expression illumination invalid occlusion pose), "
                f"got {line.strip()!r}"
            )
        try:
            rows[k] = [float(f) for f in fields]
        except ValueError:
            raise DataError(f"{txt_path}:{lineno + 1}: non-numeric field in {line.strip()!r}") from None
        if not np.isfinite(rows[k]).all():
            raise DataError(f"{txt_path}:{lineno + 1}: non-finite value in {line.strip()!r}")
    return rows


def _zero_face_convention(
    lines: list[str], next_start: int, rows: np.ndarray, txt_path: Path
) -> tuple[np.ndarray, int]:
    """Apply the two ways of writing a face-less image: ``(rows, index of the next block)``.

    Train: count 0, then one line of ten zeros (tolerated if absent). Val: count 1 and a line
    of ten zeros.
    """
    if len(rows) == 0:
        if next_start < len(lines) and not _is_image_line(lines[next_start]):
            fields = lines[next_start].split()
            if len(fields) != _NUM_FIELDS or any(f not in ("0", "0.0") for f in fields):
                raise DataError(
                    f"{txt_path}:{next_start + 1}: after a count of 0 expected a line of ten "
                    f"zeros or the next image, got {lines[next_start].strip()!r}"
                )
            next_start += 1
    elif len(rows) == 1 and not rows.any():
        rows = rows[:0]
    return rows, next_start


def _parse_block(
    lines: list[str], start: int, txt_path: Path
) -> tuple[str, np.ndarray, np.ndarray, int]:
    """Parse the block whose name line is ``lines[start]``.

    Returns ``(name, boxes (G,4) float32 xyxy, ignore (G,) bool, index of the next block)``.
    Raises :class:`DataError` naming ``txt_path`` and the 1-based line number.
    """
    import numpy as np

    name_line = lines[start].strip()
    if not _is_image_line(name_line) or len(name_line.split()) != 1:
        raise DataError(f"{txt_path}:{start + 1}: expected an image path, got {name_line!r}")
    count = _parse_count(lines, start + 1, txt_path, name_line)
    rows = _parse_face_lines(lines, start + 2, count, txt_path, name_line)
    rows, next_start = _zero_face_convention(lines, start + 2 + count, rows, txt_path)
    after = lines[next_start] if next_start < len(lines) else ""
    if after.strip() and not _is_image_line(after):
        raise DataError(
            f"{txt_path}:{next_start + 1}: block of {name_line} has more face lines than its "
            f"count {count} (expected the next image path, got {after.strip()!r})"
        )
    x, y, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([x, y, x + w, y + h], axis=1).astype(np.float32).reshape(-1, 4)
    ignore = (rows[:, _INVALID_FIELD] != 0) | (w <= 0) | (h <= 0)
    return normalize_name(name_line), boxes, ignore.astype(bool), next_start


# ---------------------------------------------------------------------------------------------
# the annotation file


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


class _OnError:
    """What ``on_error`` does with a problem: raise it (``"raise"``), or log it as a warning,
    count it and remember the image it concerns (``"skip"``)."""

    def __init__(self, on_error: str) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.raise_errors = on_error == "raise"
        self.skipped = 0
        self.skipped_names: set[str] = set()

    def report(self, message: str, name: str | None = None) -> None:
        if self.raise_errors:
            raise DataError(message)
        self.skipped += 1
        if name is not None:
            self.skipped_names.add(name)
        logger.warning("skipping: %s", message)


def _blocks(lines: list[str], txt_path: Path, image_root: Path, on_error: _OnError) -> Iterator[Sample]:
    """Every block of the file as a :class:`Sample`, lazily and in file order. A malformed block
    goes to ``on_error``; reading resumes at the next line that looks like an image path."""
    i = 0
    while i < len(lines):
        if not lines[i].strip():  # tolerate blank lines between blocks (e.g. a trailing one)
            i += 1
            continue
        try:
            name, boxes, ignore, nxt = _parse_block(lines, i, txt_path)
        except DataError as exc:
            on_error.report(str(exc), normalize_name(lines[i]) if _is_image_line(lines[i]) else None)
            i += 1
            while i < len(lines) and not _is_image_line(lines[i]):
                i += 1
            continue
        yield Sample(image_root / lines[i].strip(), name, boxes, ignore, f"{txt_path}:{i + 1}")
        i = nxt


def _select(
    blocks: Iterable[Sample], wanted: set[str] | None, check_images: bool, on_error: _OnError
) -> tuple[list[Sample], set[str]]:
    """The samples to return (in the subset ``wanted``, images checked), and every name seen."""
    samples: list[Sample] = []
    seen: set[str] = set()
    for sample in blocks:
        if sample.name in seen:
            on_error.report(f"{sample.origin}: duplicate block for {sample.name}")
            continue
        seen.add(sample.name)
        if wanted is not None and sample.name not in wanted:
            continue
        if check_images:
            problem = _check_image(sample.image_path)
            if problem is not None:
                on_error.report(f"{sample.origin}: {problem}: {sample.image_path}", sample.name)
                continue
        samples.append(sample)
    return samples, seen


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
    errors = _OnError(on_error)
    txt_path, image_root = Path(txt_path), Path(image_root)
    lines = _read_lines(txt_path, "annotation file")
    wanted, subset_desc = _subset_names(subset)
    blocks = _blocks(lines, txt_path, image_root, errors)
    samples, seen = _select(blocks, set(wanted) if wanted is not None else None, check_images, errors)
    if wanted is not None:
        missing = [n for n in wanted if n not in seen and n not in errors.skipped_names]
        if missing:
            shown = ", ".join(missing[:5])
            if len(missing) > 5:
                shown += f" (and {len(missing) - 5} more)"
            raise DataError(f"{subset_desc}: {len(missing)} image(s) not in {txt_path}: {shown}")
    if errors.skipped:
        logger.warning("%s: skipped %d malformed or unreadable item(s)", txt_path, errors.skipped)
    logger.info(
        "%s: %d images, %d faces (%d ignored)",
        txt_path,
        len(samples),
        sum(s.num_faces for s in samples),
        sum(int(s.ignore.sum()) for s in samples),
    )
    return samples


def format_annotations(blocks: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """The text of an annotation file, the writer that :func:`read_annotations` reads back.

    ``blocks``: ``(name line, boxes (G, 4) x1 y1 x2 y2, ignore (G,) bool)`` per image, the name
    line with its extension (``"<event>/<name>.jpg"``). Faces are written ``x y w h`` with two
    decimals, ``invalid`` = ``ignore``, the other attributes (blur, pose ...) 0; a face-less
    image the train way (count 0, then a line of ten zeros).
    """
    lines: list[str] = []
    for name, boxes, ignore in blocks:
        if len(boxes) == 0:
            lines += [name, "0", "0 0 0 0 0 0 0 0 0 0"]
            continue
        lines += [name, str(len(boxes))]
        for (x1, y1, x2, y2), invalid in zip(boxes.tolist(), ignore.tolist()):
            lines.append(f"{x1:.2f} {y1:.2f} {x2 - x1:.2f} {y2 - y1:.2f} 0 0 0 {int(invalid)} 0 0")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# splits and several sources


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
