"""Input helpers shared by training, inference and export: normalisation and padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ufssd.config import ModelConfig


def normalize(images: Tensor, cfg: ModelConfig) -> Tensor:
    """images: (N, 3, H, W) RGB, uint8 or float in 0..255 -> float32 ``(x / 255 - mean) / std``."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) RGB, got shape {tuple(images.shape)}")
    if images.is_complex() or images.dtype == torch.bool:
        raise TypeError(f"images must be uint8 or float, got {images.dtype}")
    x = images.to(torch.float32) / 255.0
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def pad_to_multiple(images: Tensor, multiple: int) -> Tensor:
    """images: (N, C, H, W) -> (N, C, H', W'), zero-padded bottom/right to multiples of ``multiple``."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), value=0.0)
