"""Reading prediction files (``docs/widerface-eval-protocol.md`` §2); the writer is
:mod:`ufssd.evaluation.writer`.

Official rule (``read_pred.m``): line 1 is ignored, line 2 is the box count N, lines 3 … N+2 hold
``x y w h score`` (more columns are ignored, lines after N+2 too). A file with fewer than N box
lines, a blank or non-numeric line among them, a line with fewer than 5 numbers, or a count that
is not a non-negative integer is invalid: the image gets no detections and a warning names the
file and line (``strict=True`` raises :class:`PredictionFormatError` instead). A missing file: a
warning, no detections.

Port rule (``protocol="port"``, difference D3): the count line is ignored and every non-blank
line after line 2 is a box. Image identity still comes from the file path; a line 1 that does
not name the image is warned about (the Python port would fail on it, D4).

Every file is read with one ``read()``; the box lines of all files are parsed together
(:func:`ufssd.evaluation.parsing.parse_lines`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ufssd.evaluation.errors import PredictionFormatError
from ufssd.evaluation.parsing import (
    LINE_BLANK,
    LINE_NOT_NUMERIC,
    LINE_OK,
    LINE_TOO_FEW,
    ParsedLines,
    parse_lines,
)

__all__ = [
    "Predictions",
    "PredictionIssue",
    "read_predictions",
    "STATUS_OK",
    "STATUS_EMPTY",
    "STATUS_MISSING",
    "STATUS_INVALID",
]

log = logging.getLogger(__name__)

STATUS_OK, STATUS_EMPTY, STATUS_MISSING, STATUS_INVALID = 0, 1, 2, 3
_MAX_LOGGED = 20  # individual warnings per kind; the rest are summarised
_COUNT_RE = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_LINE_REASON = {
    LINE_TOO_FEW: "fewer than 5 numbers",
    LINE_NOT_NUMERIC: "not a list of numbers",
    LINE_BLANK: "blank line",
}


@dataclass(frozen=True)
class PredictionIssue:
    """A prediction file that gave its image no detections: missing or invalid."""

    path: str
    line: int  # 0 for a missing file
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.reason}"
            if not self.line
            else f"{self.path}, line {self.line}: {self.reason}"
        )


@dataclass
class Predictions:
    """Detections of the evaluated images, in file order.

    boxes: (M, 4) float64 ``x y w h``; scores: (M,) float64 (both may be views of one (M, 5)
    array); image i owns rows
    ``offsets[i]:offsets[i + 1]``. status: (I,) int8, STATUS_OK / EMPTY (count 0) / MISSING /
    INVALID. missing, invalid: the issues, in image order.
    """

    boxes: np.ndarray
    scores: np.ndarray
    offsets: np.ndarray
    status: np.ndarray
    missing: list[PredictionIssue] = field(default_factory=list)
    invalid: list[PredictionIssue] = field(default_factory=list)


def _parse_count(line: bytes) -> int | None:
    """The box count of line 2, or None when it is not a single non-negative integer."""
    tokens = line.replace(b",", b" ").split()
    if len(tokens) != 1 or not _COUNT_RE.fullmatch(tokens[0]):
        return None
    value = float(tokens[0])
    if not (value >= 0 and value.is_integer()) or value > 2**53:
        return None
    return int(value)


def _box_block(
    data: bytes, path: str, protocol: str
) -> tuple[int, bytes, int, PredictionIssue | None]:
    """Split one file: (status, box-line block ending with a newline, its line count, issue)."""
    nl1 = data.find(b"\n")
    nl2 = data.find(b"\n", nl1 + 1) if nl1 >= 0 else -1
    if protocol == "port":
        body = data[nl2 + 1 :] if nl2 >= 0 else b""
        if body and not body.endswith(b"\n"):
            body += b"\n"
        return (STATUS_OK if body else STATUS_EMPTY), body, body.count(b"\n"), None
    if nl1 < 0:
        return STATUS_INVALID, b"", 0, PredictionIssue(path, 2, "no line 2 (the box count)")
    count_line = data[nl1 + 1 : nl2] if nl2 >= 0 else data[nl1 + 1 :]
    n = _parse_count(count_line)
    if n is None:
        shown = count_line.decode("utf-8", "replace").strip()
        issue = PredictionIssue(path, 2, f"box count {shown!r} is not a non-negative integer")
        return STATUS_INVALID, b"", 0, issue
    if n == 0:
        return STATUS_EMPTY, b"", 0, None
    body = data[nl2 + 1 :] if nl2 >= 0 else b""
    newlines = body.count(b"\n")
    if newlines > n:  # extra lines after the N box lines are ignored
        nth = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == 10)[n - 1]
        return STATUS_OK, body[: nth + 1], n, None
    if newlines == n:
        block = body if body.endswith(b"\n") else body[: body.rfind(b"\n") + 1]
        return STATUS_OK, block, n, None
    unterminated = bool(body) and not body.endswith(b"\n")
    present = newlines + unterminated
    if present == n:
        return STATUS_OK, body + b"\n", n, None
    issue = PredictionIssue(
        path, 3 + present, f"the count says {n} boxes but the file has {present} box lines"
    )
    return STATUS_INVALID, b"", 0, issue


def _name_issue(data: bytes, stem: str, path: str) -> PredictionIssue | None:
    """Port mode: an issue when line 1 does not name the image (the port keys images by it)."""
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    name = first.replace("\\", "/").rsplit("/", 1)[-1]
    if name.lower().endswith(".jpg"):
        name = name[:-4]
    if name == stem:
        return None
    return PredictionIssue(path, 1, f"line 1 is {first!r}, not {stem!r}")


@dataclass
class _FileBlocks:
    """What reading the files gave, before any box line is parsed: per image (I) a status and a
    path; the box-line blocks of the files that have boxes, their images and line counts; the
    issues found so far (``invalid`` keyed by image index)."""

    status: np.ndarray
    paths: list[str] = field(default_factory=list)
    blocks: list[bytes] = field(default_factory=list)
    block_images: list[int] = field(default_factory=list)
    block_lines: list[int] = field(default_factory=list)
    missing: list[PredictionIssue] = field(default_factory=list)
    misnamed: list[PredictionIssue] = field(default_factory=list)
    invalid: dict[int, PredictionIssue] = field(default_factory=dict)


def read_predictions(
    pred_dir: str | Path,
    events: Sequence[str],
    stems: Sequence[str],
    protocol: str = "official",
    strict: bool = False,
) -> Predictions:
    """Read ``pred_dir/<event>/<stem>.txt`` for every image; see the module docstring."""
    pred_dir = Path(pred_dir)
    _warm_allocator()
    n_images = len(stems)
    read = _read_files(pred_dir, events, stems, protocol)

    # all box lines of all files at once
    parsed = parse_lines(b"".join(read.blocks), ncols=5)
    read.blocks.clear()
    counts, keep = _count_boxes(parsed, read, n_images, protocol)

    invalid_list = [read.invalid[i] for i in sorted(read.invalid)]
    _report_issues(read.missing, invalid_list, read.misnamed, strict)

    values = parsed.values if keep.all() else parsed.values[keep]
    offsets = np.zeros(n_images + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Predictions(
        boxes=values[:, :4],
        scores=values[:, 4],
        offsets=offsets,
        status=read.status,
        missing=read.missing,
        invalid=invalid_list,
    )


def _read_files(pred_dir: Path, events: Sequence[str], stems: Sequence[str], protocol: str) -> _FileBlocks:
    """Read every image's file with one ``read()`` and split it (:func:`_box_block`)."""
    read = _FileBlocks(status=np.zeros(len(stems), dtype=np.int8))
    for i, (event, stem) in enumerate(zip(events, stems)):
        path = os.path.join(pred_dir, event, stem + ".txt")
        read.paths.append(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            read.status[i] = STATUS_MISSING
            read.missing.append(PredictionIssue(path, 0, "prediction file not found"))
            continue
        if protocol == "port":
            name_issue = _name_issue(data, stem, path)
            if name_issue is not None:
                read.misnamed.append(name_issue)
        st, block, n, issue = _box_block(data, path, protocol)
        read.status[i] = st
        if issue is not None:
            read.invalid[i] = issue
        elif st == STATUS_OK:
            read.blocks.append(block)
            read.block_images.append(i)
            read.block_lines.append(n)
    return read


def _count_boxes(
    parsed: ParsedLines, read: _FileBlocks, n_images: int, protocol: str
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes per image ``(I,)`` int64 and the parsed lines that are kept as boxes ``(L,)`` bool.

    A file with a bad box line (a blank one is not bad in port mode) becomes INVALID, with an
    issue naming its first bad line: ``read.status`` and ``read.invalid`` are updated in place.
    """
    n_lines = np.array(read.block_lines, dtype=np.int64)
    block_images_arr = np.array(read.block_images, dtype=np.int64)
    status, paths = read.status, read.paths
    keep = parsed.status == LINE_OK
    counts = np.zeros(n_images, dtype=np.int64)
    if keep.all():  # the usual case: every line of every file is a box
        counts[block_images_arr] = n_lines
        return counts, keep
    line_image = np.repeat(block_images_arr, n_lines)
    bad = ~keep
    if protocol == "port":
        bad &= parsed.status != LINE_BLANK  # the port skips blank lines
    if bad.any():
        line_start = np.repeat(np.cumsum(n_lines) - n_lines, n_lines)
        bad_lines = np.flatnonzero(bad)
        images, first = np.unique(line_image[bad_lines], return_index=True)
        for img, j in zip(images.tolist(), bad_lines[first].tolist()):
            reason = _LINE_REASON[int(parsed.status[j])]
            read.invalid[img] = PredictionIssue(paths[img], 3 + int(j - line_start[j]), reason)
            status[img] = STATUS_INVALID
        keep &= status[line_image] == STATUS_OK
    counts = np.bincount(line_image[keep], minlength=n_images)
    if protocol == "port":  # a file of blank lines only has no detections
        status[(status == STATUS_OK) & (counts == 0)] = STATUS_EMPTY
    return counts, keep


def _report_issues(
    missing: list[PredictionIssue],
    invalid: list[PredictionIssue],
    misnamed: list[PredictionIssue],
    strict: bool,
) -> None:
    """``strict``: raise on the first invalid file; otherwise (and for the other kinds) log."""
    if strict and invalid:
        first_issue = invalid[0]
        raise PredictionFormatError(
            first_issue.path, first_issue.line, first_issue.reason, more=len(invalid) - 1
        )
    _log_issues(missing, "missing prediction file (its faces count as misses)")
    _log_issues(invalid, "invalid prediction file, the image gets no detections")
    _log_issues(
        misnamed,
        "line 1 does not name the image; the Python port would key the image by it (D4), "
        "this evaluator uses the file path",
    )


_allocator_warm = False


def _warm_allocator() -> None:
    """Free one 16 MB block before the first parse (once per process).

    glibc's malloc serves blocks above its mmap threshold (128 KB at start) with fresh mappings,
    whose pages fault in on first touch, and gives heap memory back when twice that much is
    free at the top. Parsing makes many short-lived temporaries of a few hundred KB, so a fresh
    process would page-fault on nearly all of them (about a second of system time on the full
    val set). Freeing one large mapped block raises both thresholds (glibc adapts them to the
    largest freed block, up to 32 MB); elsewhere this is a harmless allocation.
    """
    global _allocator_warm
    if not _allocator_warm:
        _allocator_warm = True
        block = np.empty(1 << 24, dtype=np.uint8)
        del block


def _log_issues(issues: list[PredictionIssue], what: str) -> None:
    for issue in issues[:_MAX_LOGGED]:
        log.warning("%s: %s", what, issue)
    if len(issues) > _MAX_LOGGED:
        log.warning("... and %d more (%s)", len(issues) - _MAX_LOGGED, what)
