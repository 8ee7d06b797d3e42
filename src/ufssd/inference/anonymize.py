"""Hiding faces: :func:`anonymize` (detect, then hide) and :func:`hide_faces` (hide given boxes).

Each face box is enlarged by ``expand`` (a fraction of the box's width on the left and right, of
its height above and below: the box alone leaves hair, ears and chin visible), clipped to the
image, and its pixels are replaced, inside an ellipse inscribed in that region or the whole
region, by one of:

* ``"blur"``: a Gaussian blur (``cv2.GaussianBlur``) whose sigma is ``blur_sigma`` times the
  region's longer side;
* ``"pixelate"``: the region shrunk to ``pixel_blocks`` blocks across its longer side
  (``cv2.resize``, area interpolation) and enlarged back (nearest neighbour);
* ``"fill"``: a solid colour (black).

Pixels outside the enlarged boxes are never changed. Colour channels are hidden; an alpha channel
is kept as it was. The output has the input's type, size, mode (PIL) or dtype and layout (NumPy).

The blur threshold (:data:`BLUR_SCORE_THRESHOLD`) is lower than the detector's own: hiding a
face matters more than a false blur. It was chosen on the dev set by the rule in
``docs/anonymize.md`` (``scripts/blur_threshold.py``), for the embedded default model.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
from PIL import Image

from ufssd.images import open_file
from ufssd.inference.io import load_image

__all__ = [
    "BLUR_SCORE_THRESHOLD",
    "METHODS",
    "SHAPES",
    "AnonymizeConfig",
    "anonymize",
    "hide_faces",
    "face_regions",
    "face_records",
]

ImageLike = Union[str, os.PathLike, np.ndarray, Image.Image]

# the blur threshold of the embedded default model (docs/anonymize.md, scripts/blur_threshold.py:
# the lowest score on a 0.05 grid at which at least half of the boxes kept on the dev set overlap
# a face; v3.1: recall on dev faces >= 20 px 0.646 there, 0.257 at the detection threshold 0.7)
BLUR_SCORE_THRESHOLD = 0.3
METHODS = ("blur", "pixelate", "fill")
SHAPES = ("ellipse", "box")

# PIL modes whose last band is alpha (kept as it was)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
# the blur runs at a scale where its sigma is this many pixels
_SMALL_SIGMA = 4.0
# dtypes cv2.GaussianBlur / cv2.resize take as they are; others go through float32
_CV_DTYPES = {np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64)}


@dataclass(frozen=True)
class AnonymizeConfig:
    """How faces are hidden (resolved once per call, see the module docstring).

    method: ``"blur"``, ``"pixelate"`` or ``"fill"``.
    expand: each box grows by this fraction of its width (left and right) and height (above and
        below); 0.25 makes it 1.5 times as large, and the inscribed ellipse then covers the
        whole face box (it does from ``sqrt(2) / 2 - 1/2`` = 0.21 up).
    shape: ``"ellipse"`` (inscribed in the enlarged box) or ``"box"``.
    score_threshold: faces scoring at least this are hidden.
    blur_sigma: Gaussian sigma as a fraction of the enlarged box's longer side.
    pixel_blocks: pixelation blocks across the enlarged box's longer side.
    """

    method: str = "blur"
    expand: float = 0.25
    shape: str = "ellipse"
    score_threshold: float = BLUR_SCORE_THRESHOLD
    blur_sigma: float = 0.1
    pixel_blocks: int = 8

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if not 0.0 <= self.expand <= 10.0:
            raise ValueError(f"expand must lie in [0, 10] (a fraction of the box size), got {self.expand}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must lie in [0, 1], got {self.score_threshold}")
        if self.blur_sigma <= 0 or self.pixel_blocks < 1:
            raise ValueError("blur_sigma must be > 0 and pixel_blocks >= 1")

    @classmethod
    def resolve(cls, score_threshold: float | None = None, **options: Any) -> AnonymizeConfig:
        """The config of ``options`` (method, expand, shape ...) with ``score_threshold``, where
        ``None`` means :data:`BLUR_SCORE_THRESHOLD`: the one place that default is resolved
        (:func:`anonymize`, ``ufssd blur --threshold``)."""
        if score_threshold is not None:
            options["score_threshold"] = float(score_threshold)
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=1)
def _default_detector():
    from ufssd.inference import FaceDetector

    return FaceDetector()


def anonymize(
    image: ImageLike,
    detector=None,
    *,
    method: str = "blur",
    expand: float = 0.25,
    shape: str = "ellipse",
    score_threshold: float | None = None,
    bgr: bool = False,
) -> np.ndarray | Image.Image:
    """Find the faces of ``image`` and hide them.

    Args:
        image: a NumPy array (``(H, W)``, ``(H, W, 1|3|4)``; uint8, uint16 or float in [0, 1];
            RGB unless ``bgr``), a PIL image of any mode, or a file path.
        detector: a :class:`~ufssd.inference.FaceDetector` (default: the embedded model, built
            once per process).
        method, expand, shape: see :class:`AnonymizeConfig`.
        score_threshold: faces scoring at least this are hidden (default
            :data:`BLUR_SCORE_THRESHOLD`, chosen for the embedded model; give your own with other
            weights). The detector's own threshold is not used.
        bgr: a NumPy input is B, G, R (only the detector cares).
    Returns:
        the same kind of image with the faces hidden: an array of the input's shape and dtype, a
        PIL image of the input's mode and size; for a path, a PIL image in the file's mode,
        turned upright by its EXIF orientation (the metadata is not copied: an EXIF thumbnail
        would show the faces).
    Raises:
        ufssd.inference.InputError for an image that cannot be used; ValueError for bad options.
    """
    cfg = AnonymizeConfig.resolve(score_threshold, method=method, expand=expand, shape=shape)
    detector = detector if detector is not None else _default_detector()
    if isinstance(image, (str, os.PathLike)):  # decoded once: hidden in its own mode, detected in RGB
        image = open_file(image, pixel_limit=detector.pixel_limit)
    rgb = load_image(image, bgr=bgr, pixel_limit=detector.pixel_limit)
    result = detector.detect(rgb, score_threshold=cfg.score_threshold)
    return hide_faces(image, result.boxes, cfg)


def face_regions(boxes: np.ndarray, image_size: tuple[int, int], expand: float) -> np.ndarray:
    """Face boxes -> the regions to hide: ``(K, 4)`` int64 ``x1 y1 x2 y2`` pixel bounds
    (``x2``, ``y2`` exclusive), each box enlarged by ``expand`` times its width / height on every
    side, rounded outwards and clipped to ``image_size = (height, width)``. Empty regions (a box
    outside the image) keep ``x2 <= x1`` or ``y2 <= y1``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h, w = image_size
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1).clip(min=0)
    grown = boxes + size * expand * np.array([-1.0, -1.0, 1.0, 1.0])
    lo = np.floor(grown[:, :2])
    hi = np.ceil(grown[:, 2:])
    regions = np.concatenate([lo, hi], axis=1)
    return np.clip(regions, 0, [w, h, w, h]).astype(np.int64)


def face_records(
    boxes: np.ndarray, scores: np.ndarray, image_size: tuple[int, int], expand: float, held: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """The hidden faces as JSON-ready dicts: the face box ``x1 y1 x2 y2`` (2 decimals), ``score``,
    ``region`` (the pixels hidden, :func:`face_regions`) and, for video, ``held``."""
    regions = face_regions(boxes, image_size, expand)
    records = []
    for i, (box, score, region) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), np.asarray(scores), regions)):
        record = {k: round(float(v), 2) for k, v in zip(("x1", "y1", "x2", "y2"), box)}
        record["score"] = round(float(score), 4)
        if held is not None:
            record["held"] = int(held[i])
        record["region"] = [int(v) for v in region]
        records.append(record)
    return records


def hide_faces(image: ImageLike, boxes: np.ndarray, cfg: AnonymizeConfig | None = None) -> np.ndarray | Image.Image:
    """Hide the face ``boxes`` (``(K, 4)`` x1 y1 x2 y2, original pixels) of ``image`` as ``cfg``
    says; no detection. Same input and output types as :func:`anonymize`; never changes the input."""
    cfg = cfg or AnonymizeConfig()
    if isinstance(image, (str, os.PathLike)):
        image = open_file(image, pixel_limit=None)
    if isinstance(image, Image.Image):
        return _hide_pil(image, boxes, cfg)
    if isinstance(image, np.ndarray):
        out = np.array(image, copy=True)
        colour = out[..., :3] if out.ndim == 3 and out.shape[2] == 4 else out  # alpha kept
        _hide_channels(colour, face_regions(boxes, out.shape[:2], cfg.expand), cfg)
        return out
    raise TypeError(f"expected a NumPy array, a PIL image or a path, got {type(image).__name__}")


def _hide_pil(image: Image.Image, boxes: np.ndarray, cfg: AnonymizeConfig) -> Image.Image:
    mode = image.mode
    if mode == "1":  # bits: hide in grey, then threshold back
        return _hide_pil(image.convert("L"), boxes, cfg).convert("1", dither=Image.Dither.NONE)
    if mode in ("P", "PA"):  # palette indices: hide in colour, then back to the same palette
        hidden = _hide_pil(image.convert("RGB"), boxes, cfg).quantize(palette=image, dither=Image.Dither.NONE)
        if mode == "PA":
            hidden.putalpha(image.getchannel("A"))
        if "transparency" in image.info:
            hidden.info["transparency"] = image.info["transparency"]
        return hidden
    arr = np.array(image)
    colour = arr[..., :-1] if mode in _ALPHA_MODES else arr
    _hide_channels(colour, face_regions(boxes, arr.shape[:2], cfg.expand), cfg)
    out = Image.frombytes(mode, image.size, np.ascontiguousarray(arr).tobytes())
    for key in ("dpi", "icc_profile", "gamma"):  # display metadata only: never EXIF (thumbnails)
        if key in image.info:
            out.info[key] = image.info[key]
    return out


def _hide_channels(arr: np.ndarray, regions: np.ndarray, cfg: AnonymizeConfig) -> None:
    """Hide ``regions`` of ``arr`` (``(H, W)`` or ``(H, W, C)``, a view is fine) in place."""
    for x1, y1, x2, y2 in regions:
        if x2 <= x1 or y2 <= y1:
            continue
        crop = arr[y1:y2, x1:x2]
        hidden = _hidden_crop(crop, cfg)
        if cfg.shape == "box":
            crop[...] = hidden
        else:
            inside = _ellipse_mask(y2 - y1, x2 - x1)
            crop[inside] = hidden[inside]


def _hidden_crop(crop: np.ndarray, cfg: AnonymizeConfig) -> np.ndarray:
    """The crop's replacement: blurred, pixelated or filled, same shape and dtype."""
    import cv2

    if cfg.method == "fill":
        return np.zeros_like(crop)
    work = np.ascontiguousarray(crop if crop.dtype in _CV_DTYPES else crop.astype(np.float32))
    h, w = crop.shape[:2]
    if cfg.method == "blur":
        # a wide Gaussian costs O(sigma) per pixel: blur a copy shrunk by `factor` (area
        # interpolation) with sigma / factor, then enlarge it back (bilinear)
        sigma = max(1.0, cfg.blur_sigma * max(h, w))
        factor = max(1.0, sigma / _SMALL_SIGMA)
        small = (max(1, round(w / factor)), max(1, round(h / factor)))
        out = cv2.resize(work, small, interpolation=cv2.INTER_AREA) if factor > 1 else work
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma / factor, sigmaY=sigma / factor, borderType=cv2.BORDER_REFLECT)
        if factor > 1:
            out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        block = max(h, w) / cfg.pixel_blocks
        small = (max(1, round(w / block)), max(1, round(h / block)))
        out = cv2.resize(cv2.resize(work, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_NEAREST)
    out = out.reshape(crop.shape)  # cv2 drops a trailing channel axis of 1
    return out if out.dtype == crop.dtype else _cast_like(out, crop.dtype)


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.bool_:
        return values >= 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.floor(values + 0.5), info.min, info.max).astype(dtype)
    return values.astype(dtype)


@functools.lru_cache(maxsize=256)
def _ellipse_mask(height: int, width: int) -> np.ndarray:
    """``(height, width)`` bool: pixel centres inside the ellipse inscribed in the box."""
    y = (np.arange(height) + 0.5 - height / 2) / (height / 2)
    x = (np.arange(width) + 0.5 - width / 2) / (width / 2)
    return (y[:, None] ** 2 + x[None, :] ** 2) <= 1.0
