"""Image files and in-memory images -> ``(H, W, 3) uint8`` RGB: the one decoder of training and
inference.

Training (:func:`ufssd.data.load_image`), the WIDER prediction files and ``FaceDetector`` all
decode image files with :func:`decode_file` (Pillow), so they see the same pixels. It sits in the
lowest layer (NumPy and Pillow, no torch) because both the ``data`` and the ``inference`` layers use
it. Until this module, training decoded with OpenCV; on all 1,438 JPEGs of the WIDER FACE subset
(and on WebP copies of them) OpenCV's and Pillow's pixels are identical, so training pixels did
not change (``tests/test_images.py`` checks this on shared images when they are present).

Conversions (documented in ``docs/inference.md``, "Inputs and conversions"):

* grayscale (2-D, ``(H, W, 1)``, PIL ``L``/``1``) -> the value repeated in R, G and B;
* RGBA / LA / palette with transparency -> alpha dropped (not composited);
* 16-bit (``uint16``, PIL ``I;16``/``I``) -> ``round(v / 257)``, i.e. 65535 -> 255;
* float arrays must lie in ``[0, 1]`` (scikit-image / matplotlib convention) -> ``round(v * 255)``;
  other integer arrays must lie in ``[0, 255]``;
* NumPy arrays are RGB unless ``bgr=True`` (OpenCV's order) is given;
* EXIF orientation: applied with ``exif=True`` (``FaceDetector``, ``ufssd detect``); ``exif=False``
  keeps the stored pixels (training and WIDER prediction files, whose boxes refer to them).

Every problem is a specific :class:`InputError` that names the input and says what is wrong, in
one line. Images larger than :data:`MAX_INPUT_PIXELS` (100 megapixels) are refused before they are
decoded (a decompression-bomb guard); this is separate from the detector's ``max_pixels`` policy,
which *downscales* large (but acceptable) images before the network.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "MAX_INPUT_PIXELS",
    "InputError",
    "MissingInputError",
    "EmptyImageError",
    "NotAnImageError",
    "CorruptImageError",
    "ImageTooLargeError",
    "decode_file",
    "open_file",
    "pil_to_rgb",
    "to_rgb_array",
    "check_pixels",
    "source_name",
]

MAX_INPUT_PIXELS = 100_000_000  # refused above this (error, not a downscale)


# ---------------------------------------------------------------------------------------------
# errors


class InputError(ValueError):
    """An input the detector cannot use. ``str(err)`` is ``"<source>: <message>"``."""

    def __init__(self, source: Any, message: str) -> None:
        self.source = str(source) if isinstance(source, (str, os.PathLike)) else source_name(source)
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


# ---------------------------------------------------------------------------------------------
# decoding and conversion


def source_name(source: Any) -> str:
    """How an error names an input: the path, or a short description of an array or PIL image."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    return f"<{type(source).__name__}>"


def check_pixels(source: Any, height: int, width: int, pixel_limit: int | None) -> None:
    """Raise :class:`EmptyImageError` for no pixels, :class:`ImageTooLargeError` beyond the limit."""
    if height <= 0 or width <= 0:
        raise EmptyImageError(source, f"image has no pixels ({width}x{height})")
    if pixel_limit is not None and height * width > pixel_limit:
        raise ImageTooLargeError(
            source,
            f"image too large: {width}x{height} = {height * width / 1e6:.1f} megapixels "
            f"(limit {pixel_limit / 1e6:g} megapixels)",
        )


def decode_file(
    path: str | os.PathLike, *, exif: bool = True, pixel_limit: int | None = MAX_INPUT_PIXELS
) -> np.ndarray:
    """An image file -> ``(H, W, 3) uint8`` RGB, C-contiguous: the package's one image decoder.

    Pillow decodes; the conversions are the module's (grayscale repeated, alpha dropped, 16-bit
    rounded). The pixel limit is checked from the header, before decoding.

    Args:
        path: the image file.
        exif: turn the image upright by its EXIF orientation tag; ``False`` keeps the stored
            pixels (training and WIDER prediction files: the annotations refer to them).
        pixel_limit: refuse images with more pixels than this (``None``: PIL's own guard only).
    Raises:
        InputError: a subclass naming the problem (missing, empty, not an image, corrupt, too large).
    """
    with _decoded(Path(path), exif, pixel_limit) as im:
        return pil_to_rgb(im, Path(path))


def open_file(
    path: str | os.PathLike, *, exif: bool = True, pixel_limit: int | None = MAX_INPUT_PIXELS
) -> Image.Image:
    """An image file -> the decoded PIL image in the file's own mode, before :func:`decode_file`
    converts it to RGB: for callers that keep the mode (``ufssd blur``), which decode once with
    this and give the detector :func:`pil_to_rgb` of it. Arguments, checks and errors as
    :func:`decode_file`."""
    with _decoded(Path(path), exif, pixel_limit) as im:
        return im


@contextlib.contextmanager
def _decoded(path: Path, exif: bool, pixel_limit: int | None) -> Iterator[Image.Image]:
    """The decoded image of ``path`` (upright with ``exif``); every problem, in the body too, is
    the :class:`InputError` that names it."""
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
                check_pixels(path, im.height, im.width, pixel_limit)
                im.load()
                yield ImageOps.exif_transpose(im) if exif else im
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


def pil_to_rgb(im: Image.Image, source: Any) -> np.ndarray:
    """A PIL image of any mode -> ``(H, W, 3) uint8`` RGB (the conversions of the module doc)."""
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
    check_pixels(name, a.shape[0], a.shape[1], pixel_limit)
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
