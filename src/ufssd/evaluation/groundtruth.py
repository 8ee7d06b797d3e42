"""The organisers' ground truth: ``wider_{face,easy,medium,hard}_val.mat``, optionally restricted.

Follows ``docs/widerface-eval-protocol.md`` §1: image identity (events and stems) comes from
``wider_face_val.mat``; setting S takes its boxes and its counted faces (``gt_list``) from
``wider_S_val.mat``. Boxes are ``[x y w h]`` int32 in the files and stay integer here.
A subset keeps the ``.mat`` order and behaves as if the lists held only its images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ufssd.evaluation.errors import GroundTruthError, SubsetError
from ufssd.widerface_files import DataError, list_entries, read_list_entries

__all__ = ["SETTINGS", "GroundTruth", "load_ground_truth", "read_subset"]

log = logging.getLogger(__name__)

SETTINGS = ("easy", "medium", "hard")


@dataclass(frozen=True)
class GroundTruth:
    """Ground truth of the evaluated images, in the official order.

    events, stems: per image (length I). boxes: (B, 4) int64 ``x y w h`` (int32 values) of all
    images, image i owning rows ``box_offsets[i]:box_offsets[i + 1]``. counted[s]: (B,) bool, the
    faces that count in setting s (the others are ignored faces); n_faces[s]: the length of the
    setting's ``gt_list`` over all images (the recall denominator).
    """

    events: tuple[str, ...]
    stems: tuple[str, ...]
    boxes: np.ndarray
    box_offsets: np.ndarray
    counted: dict[str, np.ndarray]
    n_faces: dict[str, int]

    @property
    def n_images(self) -> int:
        return len(self.stems)

    @property
    def names(self) -> list[str]:
        """``<event>/<stem>`` of every image."""
        return [f"{e}/{s}" for e, s in zip(self.events, self.stems)]


def _load_mat(path: Path, names: list[str]) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise GroundTruthError(f"{path}: ground-truth file not found")
    try:
        mat = loadmat(str(path), variable_names=names)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise GroundTruthError(f"{path}: cannot read the .mat file ({exc})") from exc
    missing = [n for n in names if n not in mat]
    if missing:
        raise GroundTruthError(f"{path}: variable(s) {', '.join(missing)} missing")
    return mat


def _cells(value: np.ndarray) -> list:
    return list(np.asarray(value, dtype=object).ravel())


def _string(cell) -> str:
    arr = np.asarray(cell).ravel()
    return str(arr[0]) if arr.size else ""


def _image_lists(path: Path, mat: dict) -> list[list[str]]:
    events = _cells(mat["file_list"])
    return [[_string(c) for c in _cells(files)] for files in events]


def load_ground_truth(
    gt_dir: str | Path, subset: str | Path | Iterable[str] | None = None
) -> GroundTruth:
    """Read the four ``.mat`` files in ``gt_dir``; ``subset``: a list file or names (see
    :func:`read_subset`), or None for every image of the files."""
    gt_dir = Path(gt_dir)
    face_path = gt_dir / "wider_face_val.mat"
    file_lists, events, stems = _image_identity(face_path)

    keep = np.ones(len(stems), dtype=bool)
    if subset is not None:
        keep = _subset_mask(subset, events, stems, face_path)

    boxes_ref: np.ndarray | None = None
    sizes_ref: np.ndarray | None = None
    counted: dict[str, np.ndarray] = {}
    n_faces: dict[str, int] = {}
    for setting in SETTINGS:
        path = gt_dir / f"wider_{setting}_val.mat"
        boxes, sizes, idx = _read_setting(path, face_path, file_lists, events, stems, keep)
        if boxes_ref is None:
            boxes_ref, sizes_ref = boxes, sizes
        elif not (np.array_equal(sizes, sizes_ref) and np.array_equal(boxes, boxes_ref)):
            raise GroundTruthError(
                f"{path}: face_bbx_list differs from wider_{SETTINGS[0]}_val.mat "
                "(the official files hold the same boxes in every setting)"
            )
        mask = np.zeros(int(sizes.sum()), dtype=bool)
        mask[idx] = True
        counted[setting] = mask
        n_faces[setting] = int(idx.size)  # MATLAB counts length(gt_list{j}), repeats included

    assert boxes_ref is not None and sizes_ref is not None
    offsets = np.zeros(sizes_ref.size + 1, dtype=np.int64)
    np.cumsum(sizes_ref, out=offsets[1:])
    kept = np.flatnonzero(keep)
    return GroundTruth(
        events=tuple(events[i] for i in kept),
        stems=tuple(stems[i] for i in kept),
        boxes=boxes_ref,
        box_offsets=offsets,
        counted=counted,
        n_faces=n_faces,
    )


def _image_identity(face_path: Path) -> tuple[list[list[str]], list[str], list[str]]:
    """``wider_face_val.mat``: the stems of each event (its ``file_list``), and the event and stem
    of every image in file order."""
    face = _load_mat(face_path, ["event_list", "file_list"])
    event_names = [_string(c) for c in _cells(face["event_list"])]
    file_lists = _image_lists(face_path, face)
    if len(event_names) != len(file_lists):
        raise GroundTruthError(
            f"{face_path}: event_list has {len(event_names)} events, file_list {len(file_lists)}"
        )
    events = [e for e, files in zip(event_names, file_lists) for _ in files]
    stems = [s for files in file_lists for s in files]
    return file_lists, events, stems


def _read_setting(
    path: Path,
    face_path: Path,
    file_lists: list[list[str]],
    events: list[str],
    stems: list[str],
    keep: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One setting's ``.mat`` file, for the images ``keep`` (I,) bool: its boxes ``(B, 4)`` int64,
    the box count of each kept image, and the global rows ``(K,)`` of its counted faces (repeats
    included)."""
    mat = _load_mat(path, ["file_list", "face_bbx_list", "gt_list"])
    if _image_lists(path, mat) != file_lists:
        raise GroundTruthError(f"{path}: file_list differs from the one in {face_path}")
    box_cells = [c for ev in _cells(mat["face_bbx_list"]) for c in _cells(ev)]
    keep_cells = [c for ev in _cells(mat["gt_list"]) for c in _cells(ev)]
    if len(box_cells) != len(stems) or len(keep_cells) != len(stems):
        raise GroundTruthError(
            f"{path}: face_bbx_list / gt_list do not have one entry per image of file_list"
        )
    kept = np.flatnonzero(keep).tolist()
    boxes, sizes = _kept_boxes(path, box_cells, kept, events, stems)
    idx = _counted_rows(path, keep_cells, kept, sizes, events, stems)
    return boxes, sizes, idx


def _kept_boxes(
    path: Path, box_cells: list, kept: list[int], events: list[str], stems: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The boxes of the kept images, concatenated ``(B, 4)`` int64, and each one's box count."""
    box_arrays = [np.asarray(box_cells[i]) for i in kept]
    for i, arr in zip(kept, box_arrays):
        if arr.size and (arr.ndim != 2 or arr.shape[1] < 4):
            raise GroundTruthError(
                f"{path}: boxes of {events[i]}/{stems[i]} have shape {arr.shape}, not (G, 4)"
            )
    sizes = np.array([len(arr) if arr.size else 0 for arr in box_arrays], dtype=np.int64)
    nonempty = [arr[:, :4] for arr in box_arrays if arr.size]
    boxes = (
        np.concatenate(nonempty).astype(np.int64) if nonempty else np.zeros((0, 4), np.int64)
    )
    return boxes, sizes


def _counted_rows(
    path: Path,
    keep_cells: list,
    kept: list[int],
    sizes: np.ndarray,
    events: list[str],
    stems: list[str],
) -> np.ndarray:
    """Counted faces: the 1-based rows of each kept image (``gt_list``) -> global rows ``(K,)``."""
    keeps = [np.asarray(keep_cells[i]).ravel().astype(np.int64) for i in kept]
    lengths = np.array([k.size for k in keeps], dtype=np.int64)
    local = np.concatenate(keeps) - 1 if keeps else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(kept), dtype=np.int64), lengths)
    bad = np.flatnonzero((local < 0) | (local >= sizes[owner]))
    if bad.size:
        i = kept[owner[bad[0]]]
        raise GroundTruthError(
            f"{path}: gt_list of {events[i]}/{stems[i]} has index {local[bad[0]] + 1}, "
            f"outside 1..{sizes[owner[bad[0]]]}"
        )
    starts = np.cumsum(sizes) - sizes
    return local + starts[owner]


def read_subset(source: str | Path | Iterable[str]) -> list[tuple[str, int, str]]:
    """Entries of a subset list: ``(where, line number, entry)`` for each entry.

    ``source`` is a text file of ``<event>/<name>.jpg`` lines (``<event>/<stem>``, a bare stem,
    or a longer path ending in ``<event>/<name>.jpg`` are accepted too), or an iterable of such
    entries. Comments and blank lines as every image list
    (:func:`ufssd.widerface_files.list_entries`).
    """
    if isinstance(source, (str, Path)):
        try:
            entries = read_list_entries(source)
        except DataError as exc:
            raise SubsetError(str(exc)) from exc
        where = str(Path(source))
    else:
        entries, where = list_entries(str(x) for x in source), "subset"
    return [(where, n, entry) for n, entry in entries]


def _subset_mask(
    subset: str | Path | Iterable[str], events: list[str], stems: list[str], gt_path: Path
) -> np.ndarray:
    by_name = {f"{e}/{s}": i for i, (e, s) in enumerate(zip(events, stems))}
    by_stem: dict[str, int] = {}
    for i, s in enumerate(stems):
        by_stem.setdefault(s, i)
    keep = np.zeros(len(stems), dtype=bool)
    for where, n, entry in read_subset(subset):
        parts = entry.replace("\\", "/").split("/")
        stem = parts[-1][:-4] if parts[-1].lower().endswith(".jpg") else parts[-1]
        i = by_name.get(f"{parts[-2]}/{stem}") if len(parts) >= 2 else by_stem.get(stem)
        if i is None:
            raise SubsetError(f"{where}, line {n}: {entry!r} is not an image of {gt_path}")
        keep[i] = True
    log.debug("subset: %d of %d images", int(keep.sum()), len(stems))
    return keep
