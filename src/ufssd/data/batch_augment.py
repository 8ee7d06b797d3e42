"""The training augmentation of :mod:`ufssd.data.augment` for a whole batch, as torch ops.

Device-agnostic: the images stay where they are (CPU or CUDA) and every random number comes from
the ``torch.Generator`` passed in (create it on the images' device). Same order and parameters as
:func:`ufssd.data.augment.augment`: random square crop (the centre rule, the same retries) ->
resize to ``S x S`` (one ``torchvision.ops.roi_align`` call for the batch) -> horizontal flip ->
photometric distortion -> faces under ``min_face_px`` become ignore. See ``docs/data.md``
("Augmentation of a batch") for what differs from the CPU path.

Faces travel padded: ``boxes (N, G, 4) float32 x1 y1 x2 y2``, ``ignore (N, G) bool`` and
``present (N, G) bool`` (False for padding and for faces the crop dropped; their boxes are zeros
and their ignore True, so the padded rows give the same anchor targets and masks as no rows).
No step reads a device tensor on the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.ops import roi_align

from ufssd.config import TrainConfig
from ufssd.data.augment import _PCA_EIGVAL, _PCA_EIGVEC

__all__ = [
    "augment_batch",
    "AugmentedBatch",
    "crop_faces",
    "crop_resize",
    "draw_photometric",
    "flip_batch",
    "hsv_to_rgb",
    "pad_boxes",
    "pad_images",
    "photometric_distort_batch",
    "PhotometricDraws",
    "rgb_to_hsv",
    "sample_windows",
]


class AugmentedBatch(NamedTuple):
    """The output of :func:`augment_batch`.

    images: ``(N, 3, S, S) uint8`` RGB.
    boxes: ``(N, G, 4) float32`` x1 y1 x2 y2 within ``[0, S]``; zeros where not ``present``.
    ignore: ``(N, G) bool``; True where not ``present``.
    present: ``(N, G) bool``: the face was given and its centre lay in the crop.
    windows: ``(N, 4) int64`` crop window x0 y0 x1 y1 (x1, y1 exclusive) in source pixels.
    flipped: ``(N,) bool``.
    """

    images: Tensor
    boxes: Tensor
    ignore: Tensor
    present: Tensor
    windows: Tensor
    flipped: Tensor


# ---------------------------------------------------------------------------------------------
# padding: a list of images or of face sets -> one tensor


def pad_images(images: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack ``(3, H_i, W_i) uint8`` images into ``(N, 3, H_max, W_max)``, plus ``sizes (N, 2)
    int64`` (H, W).

    The padding repeats each image's last column and row, so that bilinear samples within half a
    pixel of an image's right or bottom edge see its edge pixels (cv2's border replicate) rather
    than zeros. The sizes come from the tensors' shapes (no device read).
    """
    if not images:
        raise ValueError("pad_images needs at least one image")
    for i, im in enumerate(images):
        if im.ndim != 3 or im.shape[0] != 3 or min(im.shape[1:]) < 1:
            raise ValueError(f"image {i} must be (3, H, W) with H, W >= 1, got {tuple(im.shape)}")
    hmax = max(int(im.shape[1]) for im in images)
    wmax = max(int(im.shape[2]) for im in images)
    out = images[0].new_empty((len(images), 3, hmax, wmax))
    for i, im in enumerate(images):
        h, w = int(im.shape[1]), int(im.shape[2])
        out[i, :, :h, :w] = im
        out[i, :, :h, w:] = im[:, :, w - 1 :]
        out[i, :, h:, :] = out[i, :, h - 1 : h, :]
    sizes = torch.tensor([[int(im.shape[1]), int(im.shape[2])] for im in images], dtype=torch.int64)
    return out, sizes.to(out.device)


def pad_boxes(
    boxes: Sequence[Tensor], ignore: Sequence[Tensor], device: torch.device | str | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Pad per-image ``(G_i, 4)`` boxes and ``(G_i,)`` ignore flags to ``boxes (N, G, 4) float32``
    (zeros), ``ignore (N, G) bool`` (True) and ``present (N, G) bool``; ``G = max(1, max G_i)``."""
    if len(boxes) != len(ignore):
        raise ValueError(f"{len(boxes)} box tensors but {len(ignore)} ignore tensors")
    boxes = [torch.as_tensor(b, dtype=torch.float32, device=device).reshape(-1, 4) for b in boxes]
    ignore = [torch.as_tensor(i, dtype=torch.bool, device=device).reshape(-1) for i in ignore]
    for n, (b, i) in enumerate(zip(boxes, ignore)):
        if i.shape[0] != b.shape[0]:
            raise ValueError(f"image {n}: {b.shape[0]} boxes but {i.shape[0]} ignore flags")
    g = max([1, *(b.shape[0] for b in boxes)])
    dev = boxes[0].device if boxes else device
    out_boxes = torch.zeros((len(boxes), g, 4), dtype=torch.float32, device=dev)
    out_ignore = torch.ones((len(boxes), g), dtype=torch.bool, device=dev)
    present = torch.zeros((len(boxes), g), dtype=torch.bool, device=dev)
    for n, (b, i) in enumerate(zip(boxes, ignore)):
        out_boxes[n, : b.shape[0]] = b
        out_ignore[n, : b.shape[0]] = i
        present[n, : b.shape[0]] = True
    return out_boxes, out_ignore, present


# ---------------------------------------------------------------------------------------------
# the crop


def _rand(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """``U[0, 1)`` float32 on the generator's device."""
    return torch.rand(shape, generator=generator, device=generator.device)


def _centres_inside(boxes: Tensor, windows: Tensor) -> Tensor:
    """``(N, R, G) bool``: the centre of box ``(N, G, 4)`` lies in window ``(N, R, 4)``
    (``x0 <= cx < x1``, same in y), the rule of :func:`ufssd.data.augment.box_centres_inside`."""
    c = (boxes[..., :2] + boxes[..., 2:]) * 0.5  # (N, G, 2)
    c = c[:, None]  # (N, 1, G, 2)
    w = windows.to(c.dtype)[:, :, None]  # (N, R, 1, 4)
    return ((c >= w[..., :2]) & (c < w[..., 2:])).all(dim=-1)


def sample_windows(
    sizes: Tensor,
    boxes: Tensor,
    ignore: Tensor,
    present: Tensor,
    generator: torch.Generator,
    crop_min: float = 0.3,
    crop_max: float = 1.0,
    retries: int = 50,
) -> Tensor:
    """Crop windows ``(N, 4) int64`` x0 y0 x1 y1 of :func:`ufssd.data.augment.sample_crop`, for a
    batch at once.

    ``retries`` candidate windows are drawn per image in one go (side ``round(r * min(H, W))``,
    ``r ~ U[crop_min, crop_max]``, integer position uniform inside the image); the first one that
    holds the centre of a present, non-ignored face is taken (the first one if the image has no
    such face); if none does, the whole image ``(0, 0, W, H)``. As the draws are independent, this
    is the CPU path's distribution (not its random stream).

    Args:
        sizes: ``(N, 2) int64`` (H, W) of each image.
        boxes, ignore, present: ``(N, G, 4)``, ``(N, G)``, ``(N, G)`` as :func:`pad_boxes` gives.
    """
    if not 0.0 < crop_min <= crop_max <= 1.0:
        raise ValueError(f"need 0 < crop_min <= crop_max <= 1, got {crop_min}, {crop_max}")
    n, r = sizes.shape[0], max(1, retries)
    draws = _rand((3, n, r), generator).to(sizes.device)
    h, w = sizes[:, :1], sizes[:, 1:]  # (N, 1)
    short = torch.minimum(h, w)
    ratio = crop_min + (crop_max - crop_min) * draws[0]
    side = torch.round(ratio * short).to(torch.int64).clamp(min=1)
    side = torch.minimum(side, short)
    x0 = torch.minimum((draws[1] * (w - side + 1)).floor().to(torch.int64), w - side)
    y0 = torch.minimum((draws[2] * (h - side + 1)).floor().to(torch.int64), h - side)
    cand = torch.stack([x0, y0, x0 + side, y0 + side], dim=-1)  # (N, R, 4)
    valid = (present & ~ignore)[:, None]  # (N, 1, G)
    ok = (_centres_inside(boxes, cand) & valid).any(dim=-1) | ~valid.any(dim=-1)  # (N, R)
    first = ok.to(torch.uint8).argmax(dim=1)  # the first True (0 when none)
    chosen = cand.gather(1, first[:, None, None].expand(n, 1, 4))[:, 0]
    whole = torch.cat([torch.zeros_like(sizes), w, h], dim=1)
    return torch.where(ok.any(dim=1)[:, None], chosen, whole)


def crop_faces(
    boxes: Tensor, ignore: Tensor, present: Tensor, windows: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`ufssd.data.augment.crop_boxes` for a batch: keep the faces whose centre lies in
    their image's window ``(N, 4)``, shift them to its origin and clip them to it.

    Returns boxes ``(N, G, 4) float32`` in window pixels (zeros where dropped), ignore (True where
    dropped) and present (False where dropped).
    """
    keep = present & _centres_inside(boxes, windows[:, None])[:, 0]
    win = windows.to(boxes.dtype)
    origin = win[:, None, :2].repeat(1, 1, 2)  # (N, 1, 4): x0 y0 x0 y0
    extent = (win[:, 2:] - win[:, :2]).repeat(1, 2)[:, None]  # (N, 1, 4): w h w h
    shifted = torch.minimum((boxes - origin).clamp(min=0), extent)
    out = torch.where(keep[..., None], shifted, torch.zeros_like(shifted))
    return out, ignore | ~keep, keep


# ---------------------------------------------------------------------------------------------
# resize and flip


def crop_resize(
    images: Tensor, windows: Tensor, size: int, index: Tensor | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Crop image ``index[n]`` of ``images (M, 3, H, W)`` to window ``n`` of ``windows (N, 4)``
    and resize it to ``size x size`` bilinearly, all in one ``roi_align`` call; returns
    ``(N, 3, size, size)`` float 0..255.

    ``index (N,) int64`` defaults to ``arange(N)``. Integer images are converted to ``dtype``
    first (the whole tensor); floating images are used as they are (a resident pool of images can
    be stored as float once), and the windows and index then take their dtype (exact in float16 up
    to 2048, so a float16 pool holds at most 2048 images of at most 2048 px).

    With ``aligned=True`` and one sample per output pixel, output pixel ``j`` samples the source at
    ``x0 + (j + 0.5) * w / size - 0.5``: cv2's ``INTER_LINEAR`` on the crop. The bilinear
    neighbours of the outermost samples come from the image around the crop (cv2 repeats the
    crop's edge pixels instead): at most the outer half output pixel differs, and only when
    upsampling.
    """
    src = images if images.is_floating_point() else images.to(dtype)
    if src.dtype in (torch.float16, torch.bfloat16) and max(src.shape[0], *src.shape[2:]) > 2048:
        raise ValueError(f"a {src.dtype} image pool of shape {tuple(src.shape)} cannot be indexed exactly")
    if index is None:
        index = torch.arange(windows.shape[0], device=src.device)
    rois = torch.cat([index.to(device=src.device, dtype=src.dtype)[:, None], windows.to(src.device, src.dtype)], dim=1)
    return roi_align(src, rois, (size, size), spatial_scale=1.0, sampling_ratio=1, aligned=True).float()


def flip_batch(images: Tensor, boxes: Tensor, present: Tensor, flip: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror left-right the images ``(N, C, S, W)`` where ``flip (N,) bool``, and their boxes
    ``(N, G, 4)`` (``x -> W - x``, rows not ``present`` stay zeros)."""
    width = images.shape[-1]
    mirrored = torch.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], dim=-1)
    use = flip[:, None, None] & present[..., None]
    out_boxes = torch.where(use, mirrored, boxes)
    out_images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return out_images, out_boxes


# ---------------------------------------------------------------------------------------------
# photometric distortion


def rgb_to_hsv(rgb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``rgb (N, 3, H, W)`` float in ``[0, 1]`` -> hue, saturation, value, each ``(N, H, W)`` in
    ``[0, 1)`` / ``[0, 1]`` / ``[0, 1]`` (the hexcone model of cv2's ``COLOR_RGB2HSV_FULL``)."""
    r, g, b = rgb.unbind(dim=1)
    value = rgb.amax(dim=1)
    chroma = value - rgb.amin(dim=1)
    sat = chroma / value.clamp(min=1e-12)
    c = chroma.clamp(min=1e-12)
    hue = torch.where(value == r, (g - b) / c, torch.where(value == g, (b - r) / c + 2.0, (r - g) / c + 4.0))
    return torch.remainder(hue / 6.0, 1.0), sat, value


def hsv_to_rgb(hue: Tensor, sat: Tensor, value: Tensor) -> Tensor:
    """The inverse of :func:`rgb_to_hsv`: ``(N, H, W)`` each -> ``(N, 3, H, W)``; channel ``n`` of
    R, G, B is ``V - V S clamp(min(k, 4 - k), 0, 1)`` with ``k = (n' + 6 H) mod 6``, ``n' = 5, 3, 1``."""
    n = torch.arange(5.0, 0.0, -2.0, device=hue.device, dtype=hue.dtype).view(1, 3, 1, 1)  # 5, 3, 1
    k = torch.remainder(n + 6.0 * hue[:, None], 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value[:, None] * (1.0 - sat[:, None] * ramp)


class PhotometricDraws(NamedTuple):
    """Per-image parameters of :func:`photometric_distort_batch`, each ``(N,)`` (light ``(N, 3)``);
    a stage that does not apply has its neutral value (0 shift, factor 1)."""

    delta: Tensor  # brightness, added
    contrast_first: Tensor  # bool
    alpha: Tensor  # contrast factor
    sat: Tensor  # saturation factor
    hue: Tensor  # hue shift, in turns (degrees / 360)
    light: Tensor  # (N, 3) RGB offset of the PCA lighting, in 0..255 levels


@functools.lru_cache(maxsize=None)
def _pca(device: torch.device) -> tuple[Tensor, Tensor]:
    """The PCA lighting's eigenvalues ``(3,)`` and eigenvectors ``(3, 3)`` on ``device``, copied
    there once (a copy per call would wait for the device)."""
    return (
        torch.tensor(_PCA_EIGVAL, dtype=torch.float32).to(device),
        torch.tensor(_PCA_EIGVEC, dtype=torch.float32).to(device),
    )


def draw_photometric(
    n: int,
    generator: torch.Generator,
    brightness_delta: float = 32.0,
    contrast: tuple[float, float] = (0.5, 1.5),
    saturation: tuple[float, float] = (0.5, 1.5),
    hue_delta: float = 18.0,
    lighting_std: float = 0.1,
) -> PhotometricDraws:
    """The random numbers of :func:`ufssd.data.augment.photometric_distort` for ``n`` images:
    each of brightness, contrast, saturation and hue with p = 0.5, contrast first with p = 0.5,
    PCA lighting always (same ranges; the defaults are that function's)."""
    u = _rand((9, n), generator)
    normal = torch.randn((n, 3), generator=generator, device=generator.device)

    def span(x: Tensor, low: float, high: float) -> Tensor:
        return low + (high - low) * x

    delta = torch.where(u[0] < 0.5, span(u[1], -brightness_delta, brightness_delta), 0.0)
    alpha = torch.where(u[3] < 0.5, span(u[4], *contrast), 1.0)
    sat = torch.where(u[5] < 0.5, span(u[6], *saturation), 1.0)
    hue = torch.where(u[7] < 0.5, span(u[8], -hue_delta, hue_delta) / 360.0, 0.0)
    eigval, eigvec = _pca(u.device)
    light = (normal * lighting_std * eigval) @ eigvec.T * 255.0
    return PhotometricDraws(delta, u[2] < 0.5, alpha, sat, hue, light)


def _round_clip(x: Tensor) -> Tensor:
    return x.round().clamp(0.0, 255.0)


def photometric_distort_batch(images: Tensor, draws: PhotometricDraws) -> Tensor:
    """SSD's PhotometricDistort as :func:`ufssd.data.augment.photometric_distort` applies it, on
    ``images (N, 3, H, W)`` float RGB 0..255; returns float 0..255 with integer values.

    Stages (values rounded and clipped to 0..255 between them, as the CPU path's uint8 tables):
    ``+ delta`` (then ``* alpha`` if contrast comes first) -> HSV: ``S * sat`` (clipped to 1),
    ``H + hue`` (mod 1) -> RGB (only images with a saturation or hue change) -> ``* alpha`` (if
    contrast comes last) ``+ light``. The HSV round trip is in float, not in uint8 HSV.
    """
    d = PhotometricDraws(*(t.to(images.device) for t in draws))
    per_image = (-1, 1, 1, 1)
    first = d.contrast_first.view(per_image)
    alpha = d.alpha.view(per_image)
    x = _round_clip((images + d.delta.view(per_image)) * torch.where(first, alpha, 1.0))
    hue, sat, value = rgb_to_hsv(x / 255.0)
    hue = torch.remainder(hue + d.hue.view(-1, 1, 1), 1.0)
    sat = (sat * d.sat.view(-1, 1, 1)).clamp(max=1.0)
    hsv_changed = ((d.sat != 1.0) | (d.hue != 0.0)).view(per_image)
    x = torch.where(hsv_changed, _round_clip(hsv_to_rgb(hue, sat, value) * 255.0), x)
    x = (x * torch.where(first, 1.0, alpha)).clamp(0.0, 255.0)
    return _round_clip(x + d.light[:, :, None, None])


# ---------------------------------------------------------------------------------------------
# the composition


def augment_batch(
    images: Tensor,
    sizes: Tensor,
    boxes: Tensor,
    ignore: Tensor,
    present: Tensor,
    generator: torch.Generator,
    cfg: TrainConfig,
    index: Tensor | None = None,
    distort: Callable[[Tensor, PhotometricDraws], Tensor] = photometric_distort_batch,
) -> AugmentedBatch:
    """The training augmentation of a batch (:func:`ufssd.data.augment.augment` per image).

    Args:
        images: ``(M, 3, H_max, W_max)`` RGB 0..255 (uint8, or float: see :func:`crop_resize`),
            each image in its top-left corner (:func:`pad_images`); ``M = N`` unless ``index``.
        sizes: ``(N, 2) int64`` (H, W) of the image of each draw.
        boxes, ignore, present: ``(N, G, 4) float`` x1 y1 x2 y2 in source pixels, ``(N, G) bool``,
            ``(N, G) bool`` (:func:`pad_boxes`).
        generator: the only source of randomness, on the images' device.
        cfg: ``resolution`` (S), ``crop_min``, ``crop_max``, ``crop_retries``, ``flip_p``,
            ``photometric``, ``min_face_px``.
        index: ``(N,) int64``: draw ``n`` crops ``images[index[n]]`` (default ``arange(N)``), so
            a batch can draw from a resident pool without copying it.
        distort: the photometric step; pass ``torch.compile(photometric_distort_batch)`` to fuse
            its ~30 elementwise passes (it takes no generator, so it compiles as one graph).
    """
    n = sizes.shape[0]
    size = cfg.resolution
    boxes = boxes.to(torch.float32)
    windows = sample_windows(sizes, boxes, ignore, present, generator, cfg.crop_min, cfg.crop_max, cfg.crop_retries)
    boxes, ignore, present = crop_faces(boxes, ignore, present, windows)
    extent = (windows[:, 2:] - windows[:, :2]).to(torch.float32).repeat(1, 2)  # (N, 4): w h w h
    boxes = (boxes * (size / extent)[:, None]).clamp(0.0, float(size))  # rounding: never past S
    out = crop_resize(images, windows, size, index)
    flip = _rand((n,), generator).to(images.device) < cfg.flip_p
    out, boxes = flip_batch(out, boxes, present, flip)
    if cfg.photometric:
        out = distort(out, draw_photometric(n, generator))
    small = (boxes[..., 2:] - boxes[..., :2]).amin(dim=-1) < cfg.min_face_px
    ignore = ignore | small
    return AugmentedBatch(_round_clip(out).to(torch.uint8), boxes, ignore, present, windows, flip)
