"""Pre-processing between images and the network, apart from the models and the backends (as
torchvision's detection ``transform.py`` stands apart from its models).

Input policy (paper notes section 7, ``docs/inference.md``): each image is used at its original
size and downscaled (area interpolation) only when it has more than ``max_pixels`` pixels or,
when ``max_size`` is given, a longer side above ``max_size``; the scaled size is
``floor(side * s)`` with one ``s`` for both sides. It is normalised (``(x / 255 - mean) / std``,
a per-channel table look-up that equals :func:`ufssd.model.normalize` bit for bit), then
zero-padded bottom/right to a multiple of ``pad_multiple`` (128). Boxes found in the network's
input are divided by the per-axis scale (``W / w``, ``H / h``), mirrored back for a flipped pass,
and clipped to the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ufssd.config import ModelConfig
from ufssd.geometry.anchors import padded_size

__all__ = ["InputTransform", "resize", "normalize_table", "boxes_to_original"]


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(height, width, 3)``: area interpolation when shrinking, bilinear
    when enlarging (the TTA's enlarged passes); the image itself when the size is unchanged."""
    import cv2

    if (height, width) == image.shape[:2]:
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def normalize_table(cfg: ModelConfig) -> np.ndarray:
    """``(3, 256)`` float32: :func:`ufssd.model.normalize` of every uint8 value per channel, so
    normalising an image is a table look-up with bit-identical results."""
    from ufssd.model import normalize

    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256)
    return np.ascontiguousarray(normalize(values, cfg)[0, :, 0, :].numpy())


def boxes_to_original(
    boxes: Tensor, image_size: tuple[int, int], network_size: tuple[int, int], flip: bool = False
) -> Tensor:
    """``(K, 4)`` xyxy in network-input pixels -> CPU float32 xyxy in original pixels.

    Args:
        boxes: boxes of an image that was resized from ``image_size`` ``(H, W)`` to
            ``network_size`` ``(h, w)`` (and mirrored left-right when ``flip``).
    Returns:
        ``(K, 4)`` boxes divided by the per-axis scale, mirrored back, clipped to ``[0, W] x [0, H]``.
    """
    (H, W), (h, w) = image_size, network_size
    boxes = boxes.to("cpu", torch.float32)
    scale = torch.tensor([W / w, H / h, W / w, H / h], dtype=torch.float32)
    boxes = boxes * scale
    if flip:
        boxes = torch.stack([W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0], boxes[:, 3]], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, W)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, H)
    return boxes


class InputTransform:
    """The input policy and the batch builder of one model.

    Args:
        cfg: the model's :class:`ModelConfig` (normalisation mean and std).
        pad_multiple: inputs are zero-padded to multiples of this (``AnchorConfig.pad_multiple``).
        max_size: downscale images whose longer side exceeds this many pixels (``None``: no limit).
    """

    def __init__(self, cfg: ModelConfig, pad_multiple: int, max_size: int | None = None) -> None:
        if max_size is not None and int(max_size) < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = None if max_size is None else int(max_size)
        self.pad_multiple = int(pad_multiple)
        self.table = normalize_table(cfg)

    def network_size(self, height: int, width: int, max_pixels: int) -> tuple[int, int]:
        """The size ``(h, w)`` the network sees (before padding) for an image of ``height x width``:
        the original, downscaled only beyond ``max_pixels`` pixels or a longer side of ``max_size``."""
        scale = 1.0
        if self.max_size is not None:
            scale = min(scale, self.max_size / max(height, width))
        if height * width > max_pixels:
            scale = min(scale, math.sqrt(max_pixels / (height * width)))
        if scale >= 1.0:
            return height, width
        return max(1, int(height * scale)), max(1, int(width * scale))

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` rounded up to multiples of ``pad_multiple``: the network's input size."""
        return padded_size(height, width, self.pad_multiple)

    def batch(
        self,
        images: Sequence[np.ndarray],
        sizes: Sequence[tuple[int, int]],
        flips: Sequence[bool],
        padded: tuple[int, int],
    ) -> Tensor:
        """RGB uint8 images -> the network's input ``(N, 3, hp, wp)`` float32 (CPU).

        Image ``k`` is resized to ``sizes[k]``, mirrored left-right when ``flips[k]``, normalised
        and placed top-left in a zero canvas of size ``padded`` (bottom/right padding).
        """
        hp, wp = padded
        out = np.zeros((len(images), 3, hp, wp), dtype=np.float32)
        for k, (image, (h, w), flip) in enumerate(zip(images, sizes, flips)):
            x = resize(image, h, w)
            if flip:
                x = x[:, ::-1]
            for c in range(3):
                np.take(self.table[c], x[..., c], out=out[k, c, :h, :w], mode="clip")
        return torch.from_numpy(out)
