"""Atomic file writes: a temporary file beside the target, then ``os.replace``.

The lowest layer (stdlib only), so every layer, the NumPy-only evaluation included, writes files
the same way: a process killed mid-write leaves the previous file intact (and at most a
``.<name>.*.tmp`` file that nothing reads). This module is the only home of these writers; no
other module defines or re-exports them.

fsync policy, one default for every writer here: ``fsync=False``. The rename alone makes a write
atomic against a killed process, which is what every caller needs. Surviving a power loss or an
OS crash as well (``fsync`` of the file before the rename and of the folder after it) costs a few
milliseconds per file, so it is asked for only where a lost file costs a training run: training
checkpoints and weight files (``.safetensors``, ``.onnx``) pass ``fsync=True``. Prediction files,
logs, JSON, images and videos are cheap to remake and are written by the thousand, so they do not.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_csv",
    "read_csv",
    "temporary_files",
]

# the temporary file of a target ``<name>``: ``.<name>.<random>.tmp`` beside it (hidden; the writers
# of the package read no such name)
_TMP_SUFFIX = ".tmp"


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", fsync: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit rename it to ``path`` (with
    ``fsync``, flush the file to disk first and the folder after: see the module's fsync policy).

    If the body raises (or the process dies), ``path`` keeps its previous content and the
    temporary file is removed (or, after a kill, left as ``.<name>.*.tmp``, never read).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = _TMP_SUFFIX) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that open the file themselves (SciPy,
    Matplotlib, OpenCV's video writer); on a clean exit it is renamed to ``path``.

    ``suffix`` keeps the extension that such writers read the format from. If the body raises,
    ``path`` keeps its previous content and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def temporary_files(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """The temporary files that :func:`atomic_write` (and :func:`atomic_path` with its default
    suffix) left in ``folder`` for the targets ``names`` when killed mid-write, sorted: what a
    caller that owns the folder may delete."""
    found = set()
    for name in names:
        prefix = _tmp_prefix(Path(name))
        for tmp in Path(folder).glob(f"{glob.escape(prefix)}*{_TMP_SUFFIX}"):
            # mkstemp's random part has no dot: ".last.pt.x1y2.tmp" is not a temporary of "last"
            if "." not in tmp.name[len(prefix) : -len(_TMP_SUFFIX)]:
                found.add(tmp)
    return sorted(found)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (``fsync``: see the module's fsync policy)."""
    with atomic_write(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically (``fsync``: see the
    module's fsync policy)."""
    with atomic_write(path, "w", fsync=fsync) as f:
        f.write(text)
    return Path(path)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV file with a header (what ``atomic_write_csv`` writes); ``[]`` when the
    file does not exist yet."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def atomic_write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> Path:
    """A CSV file with a header of ``fields`` and one line per row (keys beyond ``fields`` are
    left out), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())
