"""Training augmentation (paper notes section 6, S3FD/SSD style), as pure functions.

Every random number comes from the ``np.random.Generator`` passed in, so a sample's augmentation
is reproducible from a seed. Order (:func:`augment`): random square crop (pixel-aligned, the
centre rule) -> resize to ``S x S`` -> horizontal flip -> photometric distortion -> faces under
``min_face_px`` become ignore. Shapes: ``image (H, W, 3) uint8 RGB``, ``boxes (G, 4) float32
x1 y1 x2 y2`` in that image's pixels, ``ignore (G,) bool``. See ``docs/data.md``.
"""

from __future__ import annotations

import cv2
import numpy as np

from ufssd.config import TrainConfig

Window = tuple[int, int, int, int]  # x0, y0, x1, y1: integer pixel window, x1/y1 exclusive

# AlexNet PCA lighting (Krizhevsky et al. 2012): ImageNet RGB eigenvalues (0..1 scale) and
# eigenvectors (columns), as in fb.resnet.torch / many reference implementations.
_PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
_PCA_EIGVEC = np.array(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]
)
_RAMP = np.arange(256, dtype=np.float64)


def _check_inputs(image: np.ndarray, boxes: np.ndarray, ignore: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (G, 4), got {boxes.shape}")
    if ignore.shape != (boxes.shape[0],):
        raise ValueError(f"ignore must be ({boxes.shape[0]},), got {ignore.shape}")


# ---------------------------------------------------------------------------------------------
# geometry of the crop


def box_centres_inside(boxes: np.ndarray, window: Window) -> np.ndarray:
    """(G,) bool: the centre of each box (G, 4) lies in ``window``: ``x0 <= cx < x1``, same in y."""
    x0, y0, x1, y1 = window
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    return (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)


def sample_crop(
    height: int,
    width: int,
    boxes: np.ndarray,
    ignore: np.ndarray,
    rng: np.random.Generator,
    crop_min: float = 0.3,
    crop_max: float = 1.0,
    retries: int = 50,
) -> Window:
    """Draw a square crop window of side ``r * min(H, W)``, ``r ~ U[crop_min, crop_max]``, at a
    uniform integer position inside the image.

    A window is accepted when the centre of at least one non-ignored face lies in it; up to
    ``retries`` windows are drawn in all. An image without a non-ignored face accepts the first.
    If every draw fails, the whole image ``(0, 0, W, H)`` is returned [choice]: it keeps every
    face (the later resize then changes the aspect ratio).
    """
    if not 0.0 < crop_min <= crop_max <= 1.0:
        raise ValueError(f"need 0 < crop_min <= crop_max <= 1, got {crop_min}, {crop_max}")
    short = min(height, width)
    valid = boxes[~ignore]
    for _ in range(max(1, retries)):
        r = rng.uniform(crop_min, crop_max)
        side = min(short, max(1, int(round(r * short))))
        x0 = int(rng.integers(0, width - side + 1))
        y0 = int(rng.integers(0, height - side + 1))
        window = (x0, y0, x0 + side, y0 + side)
        if valid.shape[0] == 0 or box_centres_inside(valid, window).any():
            return window
    return (0, 0, width, height)


def crop_boxes(
    boxes: np.ndarray, ignore: np.ndarray, window: Window
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the faces whose centre lies in ``window``, shift them to its origin and clip them to it.

    Returns boxes (G', 4) float32 in window pixels and ignore (G',) bool.
    """
    x0, y0, x1, y1 = window
    keep = box_centres_inside(boxes, window)
    out = boxes[keep].astype(np.float32, copy=True)
    out[:, 0::2] = np.clip(out[:, 0::2] - x0, 0, x1 - x0)
    out[:, 1::2] = np.clip(out[:, 1::2] - y0, 0, y1 - y0)
    return out, ignore[keep].copy()


def resize(
    image: np.ndarray, boxes: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``image (H, W, 3)`` to ``(size, size, 3)`` (bilinear) and scale ``boxes (G, 4)``."""
    h, w = image.shape[:2]
    out = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    scale = np.array([size / w, size / h, size / w, size / h], dtype=np.float32)
    return out, (boxes * scale).astype(np.float32)


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror ``image (H, W, 3)`` left-right and its ``boxes (G, 4)``: ``x -> W - x``."""
    w = image.shape[1]
    out = boxes.copy()
    out[:, 0] = w - boxes[:, 2]
    out[:, 2] = w - boxes[:, 0]
    return cv2.flip(image, 1), out


def mark_small(boxes: np.ndarray, ignore: np.ndarray, min_px: float) -> np.ndarray:
    """(G,) bool: ``ignore`` or- a face whose width or height is under ``min_px``."""
    if boxes.shape[0] == 0:
        return ignore.copy()
    wh = boxes[:, 2:] - boxes[:, :2]
    return ignore | (wh.min(axis=1) < min_px)


# ---------------------------------------------------------------------------------------------
# photometric distortion


def _lut(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def photometric_distort(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness_delta: float = 32.0,
    contrast: tuple[float, float] = (0.5, 1.5),
    saturation: tuple[float, float] = (0.5, 1.5),
    hue_delta: float = 18.0,
    lighting_std: float = 0.1,
) -> np.ndarray:
    """SSD's PhotometricDistort (Howard 2013) on ``image (H, W, 3) uint8 RGB``; returns a new one.

    Each of brightness (``+ U[-32, 32]``), contrast (``* U[0.5, 1.5]``), saturation
    (``* U[0.5, 1.5]``) and hue (``+ U[-18, 18]`` degrees) applies with p = 0.5; contrast comes
    first or after the HSV part with p = 0.5 (as SSD); no random channel swap. Then AlexNet PCA
    lighting with ``alpha ~ N(0, lighting_std)`` (always; it is a per-image RGB offset).
    Implemented with 256-entry look-up tables and uint8 HSV (``cv2.COLOR_RGB2HSV_FULL``, hue
    in 256 steps) [choice]: values are rounded and clipped to 0..255 between stages.
    """
    # draw every number, always in the same order, so the stream does not depend on the outcome
    do_brightness, delta = rng.random() < 0.5, rng.uniform(-brightness_delta, brightness_delta)
    contrast_first = rng.random() < 0.5
    do_contrast, alpha = rng.random() < 0.5, rng.uniform(*contrast)
    do_saturation, sat = rng.random() < 0.5, rng.uniform(*saturation)
    do_hue, hue = rng.random() < 0.5, rng.uniform(-hue_delta, hue_delta)
    light = _PCA_EIGVEC @ (rng.normal(0.0, lighting_std, 3) * _PCA_EIGVAL) * 255.0  # (3,) RGB

    delta = delta if do_brightness else 0.0
    alpha = alpha if do_contrast else 1.0
    out = image
    pre = _RAMP + delta
    if contrast_first:
        pre = pre * alpha
    if do_brightness or (contrast_first and do_contrast):
        out = cv2.LUT(out, _lut(pre))
    if do_saturation or do_hue:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV_FULL)
        shift = hue * 256.0 / 360.0 if do_hue else 0.0
        table = np.stack(
            [np.rint(_RAMP + shift) % 256, _RAMP * (sat if do_saturation else 1.0), _RAMP], axis=1
        )
        hsv = cv2.LUT(hsv, _lut(table).reshape(256, 1, 3))
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    post = _RAMP if contrast_first else np.clip(_RAMP * alpha, 0, 255)
    table = post[:, None] + light[None, :]  # (256, 3)
    return cv2.LUT(out, _lut(table).reshape(256, 1, 3))


# ---------------------------------------------------------------------------------------------
# the composition


def augment(
    image: np.ndarray,
    boxes: np.ndarray,
    ignore: np.ndarray,
    rng: np.random.Generator,
    cfg: TrainConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training augmentation of one image.

    Args:
        image: (H, W, 3) uint8 RGB.
        boxes: (G, 4) float x1 y1 x2 y2 in image pixels.
        ignore: (G,) bool.
        rng: the only source of randomness.
        cfg: ``resolution`` (S), ``crop_min``, ``crop_max``, ``crop_retries``, ``flip_p``,
            ``photometric``, ``min_face_px``.

    Returns:
        ``image (S, S, 3) uint8``, ``boxes (G', 4) float32`` within ``[0, S]``,
        ``ignore (G',) bool`` (the kept faces, in their original order).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    ignore = np.asarray(ignore, dtype=bool).reshape(-1)
    _check_inputs(image, boxes, ignore)
    h, w = image.shape[:2]
    window = sample_crop(h, w, boxes, ignore, rng, cfg.crop_min, cfg.crop_max, cfg.crop_retries)
    boxes, ignore = crop_boxes(boxes, ignore, window)
    x0, y0, x1, y1 = window
    image, boxes = resize(image[y0:y1, x0:x1], boxes, cfg.resolution)
    if rng.random() < cfg.flip_p:
        image, boxes = hflip(image, boxes)
    if cfg.photometric:
        image = photometric_distort(image, rng)
    ignore = mark_small(boxes, ignore, cfg.min_face_px)
    return np.ascontiguousarray(image), boxes, ignore
