"""Reading what users hand to the detector: image files, arrays, PIL images, folders, videos.

Everything becomes one thing, ``(H, W, 3) uint8`` RGB, or a specific :class:`InputError` that
names the input and says what is wrong with it (one line; the CLI prints it as
``ufssd detect: <path>: <message>``).

Conversions (documented in ``docs/inference.md``):

* grayscale (2-D, ``(H, W, 1)``, PIL ``L``/``1``) -> the value repeated in R, G and B;
* RGBA / LA / palette with transparency -> alpha dropped (not composited);
* 16-bit (``uint16``, PIL ``I;16``/``I``) -> ``round(v / 257)``, i.e. 65535 -> 255;
* float arrays must lie in ``[0, 1]`` (scikit-image / matplotlib convention) -> ``round(v * 255)``;
  other integer arrays must lie in ``[0, 255]``;
* NumPy arrays are RGB unless ``bgr=True`` (OpenCV's order) is given;
* image *files* are turned upright by their EXIF orientation (``exif=False`` keeps the stored
  pixels, as the WIDER FACE protocol needs).

Images larger than :data:`MAX_INPUT_PIXELS` (100 megapixels) are refused before they are decoded
(a decompression-bomb guard); this is separate from the detector's ``max_pixels`` policy, which
*downscales* large (but acceptable) images before the network.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "MAX_INPUT_PIXELS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "InputError",
    "MissingInputError",
    "EmptyImageError",
    "NotAnImageError",
    "CorruptImageError",
    "ImageTooLargeError",
    "UnreadableVideoError",
    "NoImagesFoundError",
    "load_image",
    "to_rgb_array",
    "InputFile",
    "collect_inputs",
    "VideoReader",
]

MAX_INPUT_PIXELS = 100_000_000  # refused above this (error, not a downscale)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)


# ---------------------------------------------------------------------------------------------
# errors


class InputError(ValueError):
    """An input the detector cannot use. ``str(err)`` is ``"<source>: <message>"``."""

    def __init__(self, source: Any, message: str) -> None:
        self.source = str(source) if isinstance(source, (str, os.PathLike)) else _source_name(source)
        self.message = message
        super().__init__(f"{self.source}: {message}")


class MissingInputError(InputError):
    """The path does not exist."""


class EmptyImageError(InputError):
    """A zero-byte file or an image with no pixels."""


class NotAnImageError(InputError):
    """A file that no image decoder recognises, or an array that is not an image."""


class CorruptImageError(InputError):
    """A recognised image whose pixels cannot be decoded (corrupt or truncated)."""


class ImageTooLargeError(InputError):
    """More pixels than the limit (decompression-bomb guard)."""


class UnreadableVideoError(InputError):
    """A video file OpenCV cannot open or read a frame from."""


class NoImagesFoundError(InputError):
    """A folder with no image or video files in it (searched recursively)."""


# ---------------------------------------------------------------------------------------------
# images


def _source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    return f"<{type(source).__name__}>"


def _check_pixels(source: Any, height: int, width: int, pixel_limit: int | None) -> None:
    if height <= 0 or width <= 0:
        raise EmptyImageError(source, f"image has no pixels ({width}x{height})")
    if pixel_limit is not None and height * width > pixel_limit:
        raise ImageTooLargeError(
            source,
            f"image too large: {width}x{height} = {height * width / 1e6:.1f} megapixels "
            f"(limit {pixel_limit / 1e6:g} megapixels)",
        )


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
        return _load_file(Path(source), pixel_limit=pixel_limit, exif=exif)
    if isinstance(source, Image.Image):
        _check_pixels(_source_name(source), source.height, source.width, pixel_limit)
        return _pil_to_rgb(source, _source_name(source))
    if isinstance(source, np.ndarray):
        return to_rgb_array(source, bgr=bgr, pixel_limit=pixel_limit)
    raise NotAnImageError(
        _source_name(source), "expected a file path, a NumPy array or a PIL image"
    )


def _load_file(path: Path, *, pixel_limit: int | None, exif: bool) -> np.ndarray:
    if not path.exists():
        raise MissingInputError(path, "no such file")
    if path.is_dir():
        raise NotAnImageError(path, "is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise MissingInputError(path, f"cannot read ({exc.strerror or exc})") from exc
    if size == 0:
        raise EmptyImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # our own pixel limit applies; PIL's bomb warning would only add noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(path, im.height, im.width, pixel_limit)
                im.load()
                if exif:
                    im = ImageOps.exif_transpose(im)
                return _pil_to_rgb(im, path)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:  # PIL refuses > 2 x its own limit at open
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "over PIL's decompression-bomb limit"
        limit = f"limit {pixel_limit / 1e6:g} megapixels" if pixel_limit else "decompression-bomb guard"
        raise ImageTooLargeError(path, f"image too large: {size} ({limit})") from exc
    except UnidentifiedImageError as exc:
        raise NotAnImageError(path, "not an image file (unrecognised format)") from exc
    except PermissionError as exc:
        raise MissingInputError(path, f"cannot read ({exc.strerror or exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL raises OSError("image file is truncated ...") / SyntaxError / ValueError on bad data
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptImageError(path, f"corrupt or truncated image ({detail})") from exc


def _pil_to_rgb(im: Image.Image, source: Any) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        arr = np.asarray(im)
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im)
        if arr.ndim != 2:
            arr = np.asarray(im.convert("I"))
        arr = np.clip(arr.astype(np.int64), 0, 65535).astype(np.uint16)
        return to_rgb_array(arr, source=source, pixel_limit=None)
    elif mode == "F":  # PIL's float mode is 0..255 by its own convention
        arr = np.clip(np.asarray(im, dtype=np.float32), 0, 255)
        arr = np.floor(arr + 0.5).astype(np.uint8)
    elif mode in ("P", "PA") and ("transparency" in im.info or mode == "PA"):
        arr = np.asarray(im.convert("RGBA"))[..., :3]
    else:  # L, 1, LA, RGBA, RGBX, CMYK, YCbCr, LAB, HSV, P ...
        if mode in ("RGBA", "RGBa", "LA", "La"):
            im = im.convert("RGBA")
            arr = np.asarray(im)[..., :3]
        else:
            arr = np.asarray(im.convert("RGB"))
    return to_rgb_array(arr, source=source, pixel_limit=None)


def to_rgb_array(
    array: np.ndarray,
    *,
    bgr: bool = False,
    pixel_limit: int | None = MAX_INPUT_PIXELS,
    source: Any = None,
) -> np.ndarray:
    """A NumPy image of any supported layout and dtype -> ``(H, W, 3) uint8`` RGB."""
    name = array if source is None else source
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        channels = 1
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        channels = a.shape[2]
    else:
        raise NotAnImageError(
            name, f"unsupported array shape {a.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    _check_pixels(name, a.shape[0], a.shape[1], pixel_limit)
    a = _to_uint8(a, name)
    if channels == 1:
        a = np.repeat(a[..., None], 3, axis=2)
    else:
        a = a[..., :3]  # drop alpha
        if bgr:
            a = a[..., ::-1]
    return np.ascontiguousarray(a)


def _to_uint8(a: np.ndarray, name: Any) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise NotAnImageError(name, "float image has NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise NotAnImageError(
                name,
                f"float image values must lie in [0, 1], got [{lo:g}, {hi:g}] "
                "(pass uint8 for 0..255 values)",
            )
        return np.floor(a.astype(np.float64) * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise NotAnImageError(
                name,
                f"{a.dtype} image values must lie in [0, 255], got [{lo}, {hi}] "
                "(pass uint16 for 16-bit images)",
            )
        return a.astype(np.uint8)
    raise NotAnImageError(name, f"unsupported array dtype {a.dtype}")


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
        _check_pixels(self.path, self.height, self.width, pixel_limit)
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
