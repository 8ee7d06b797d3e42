"""Reading what users hand to the detector: image files, arrays, PIL images, folders, videos.

Everything becomes one thing, ``(H, W, 3) uint8`` RGB, or a specific :class:`InputError` that
names the input and says what is wrong with it (one line; the CLI prints it as
``ufssd detect: <path>: <message>``).

Single images are decoded and converted by :mod:`ufssd.images` (the decoder that training uses
too; its docstring lists the conversions); this module adds the front door :func:`load_image`
(a path, an array or a PIL image), folders (:func:`collect_inputs`) and videos
(:class:`VideoReader`, OpenCV).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ufssd.images import (
    MAX_INPUT_PIXELS,
    InputError,
    MissingInputError,
    NotAnImageError,
    check_pixels,
    decode_file,
    pil_to_rgb,
    source_name,
    to_rgb_array,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "UnreadableVideoError",
    "NoImagesFoundError",
    "load_image",
    "InputFile",
    "collect_inputs",
    "VideoReader",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)


# ---------------------------------------------------------------------------------------------
# errors


class UnreadableVideoError(InputError):
    """A video file OpenCV cannot open or read a frame from."""


class NoImagesFoundError(InputError):
    """A folder with no image or video files in it (searched recursively)."""


# ---------------------------------------------------------------------------------------------
# images


def load_image(
    source: str | os.PathLike | np.ndarray | Image.Image,
    *,
    bgr: bool = False,
    pixel_limit: int | None = MAX_INPUT_PIXELS,
    exif: bool = True,
) -> np.ndarray:
    """Any supported input -> ``(H, W, 3) uint8`` RGB, C-contiguous.

    Args:
        source: a file path, a NumPy array (``(H, W)``, ``(H, W, 1|3|4)``; RGB unless ``bgr``),
            or a PIL image.
        bgr: the array's channels are B, G, R (OpenCV); ignored for files and PIL images.
        pixel_limit: refuse images with more pixels than this (``None``: no limit).
        exif: for files, apply the EXIF orientation tag.
    Raises:
        InputError (a subclass naming the problem).
    """
    if isinstance(source, (str, os.PathLike)):
        return decode_file(source, exif=exif, pixel_limit=pixel_limit)
    if isinstance(source, Image.Image):
        check_pixels(source_name(source), source.height, source.width, pixel_limit)
        return pil_to_rgb(source, source_name(source))
    if isinstance(source, np.ndarray):
        return to_rgb_array(source, bgr=bgr, pixel_limit=pixel_limit)
    raise NotAnImageError(
        source_name(source), "expected a file path, a NumPy array or a PIL image"
    )


# ---------------------------------------------------------------------------------------------
# folders and videos


@dataclass(frozen=True)
class InputFile:
    """One file to process. ``relative`` is its path relative to the folder it was found in
    (just the file name for a file given directly); ``kind`` is ``"image"`` or ``"video"``."""

    path: Path
    relative: Path
    kind: str


def _kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def collect_inputs(paths: Sequence[str | os.PathLike]) -> list[InputFile | InputError]:
    """Expand files and folders (recursively, sorted) into :class:`InputFile` items.

    A file named directly is taken whatever its extension (videos by extension, everything else
    as an image, so a non-image file gives a clear error later). Inside folders only files with an
    image or video extension are taken. A missing path or a folder with none gives an
    :class:`InputError` in the list, in place, so the caller can report it and go on.
    """
    out: list[InputFile | InputError] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                (p for p in path.rglob("*") if p.is_file() and _kind(p) is not None),
                key=lambda p: p.relative_to(path).as_posix(),
            )
            if not found:
                out.append(NoImagesFoundError(path, "no image or video files found (searched recursively)"))
            for p in found:
                out.append(InputFile(p, p.relative_to(path), _kind(p) or "image"))
        elif path.exists():
            out.append(InputFile(path, Path(path.name), _kind(path) or "image"))
        else:
            out.append(MissingInputError(path, "no such file or directory"))
    return out


class VideoReader:
    """Frames of a video file as ``(H, W, 3) uint8`` RGB, via OpenCV.

    Opening checks that the file exists, that OpenCV opens it and that a first frame decodes;
    otherwise :class:`UnreadableVideoError` (or :class:`MissingInputError`).
    """

    def __init__(self, path: str | os.PathLike, pixel_limit: int | None = MAX_INPUT_PIXELS) -> None:
        import cv2

        self.path = Path(path)
        if not self.path.exists():
            raise MissingInputError(self.path, "no such file")
        if self.path.stat().st_size == 0:
            raise UnreadableVideoError(self.path, "empty file (0 bytes)")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise UnreadableVideoError(self.path, "cannot open video (unknown format or corrupt)")
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise UnreadableVideoError(self.path, "cannot decode any frame")
        self._cap = cap
        self._first = frame
        self.height, self.width = frame.shape[:2]
        check_pixels(self.path, self.height, self.width, pixel_limit)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if fps > 0 else 25.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None

    def __iter__(self) -> Iterator[np.ndarray]:
        """Every frame once, RGB. A decode failure after the first frame ends the iteration."""
        import cv2

        frame = self._first
        self._first = None
        if frame is None:
            raise RuntimeError("VideoReader can be iterated only once")
        while frame is not None:
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            ok, frame = self._cap.read()
            if not ok:
                frame = None
        self.close()

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
