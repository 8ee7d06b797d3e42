"""Anchors: one square anchor per feature-map cell (S3FD layout, paper notes section 3).

Anchor order, which is the order of the ``A`` axis of every per-anchor tensor in the package:
level 0 (finest) first; inside a level, row-major over cells (``i`` = row, ``j`` = column).
The anchor of cell ``(i, j)`` on a level of stride ``s`` and side ``a`` is the square of side ``a``
centred on ``((j + 0.5) * s, (i + 0.5) * s)``, as ``(x1, y1, x2, y2)`` in input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ufssd.config import AnchorConfig

__all__ = ["feature_sizes", "padded_size", "make_anchors", "anchors_for_input"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_positive_size(height: int, width: int) -> None:
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"input size must be positive, got height={height}, width={width}")


def feature_sizes(height: int, width: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature-map size ``(H_l, W_l) = (ceil(height / s), ceil(width / s))`` of every stride ``s``.

    With inputs padded to a multiple of the coarsest stride (:func:`padded_size`) the division is
    exact, which is what the network produces.
    """
    _check_positive_size(height, width)
    if any(int(s) <= 0 for s in strides):
        raise ValueError(f"strides must be positive, got {tuple(strides)}")
    return [(_ceil_div(int(height), int(s)), _ceil_div(int(width), int(s))) for s in strides]


def padded_size(height: int, width: int, multiple: int = 128) -> tuple[int, int]:
    """The size ``(H, W)`` after zero-padding bottom/right up to a multiple of ``multiple``."""
    _check_positive_size(height, width)
    if int(multiple) <= 0:
        raise ValueError(f"multiple must be positive, got {multiple}")
    m = int(multiple)
    return _ceil_div(int(height), m) * m, _ceil_div(int(width), m) * m


def make_anchors(
    sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    sides: Sequence[float],
    device: torch.device | str | None = None,
) -> Tensor:
    """All anchors of the given feature-map sizes.

    Args:
        sizes: ``(H_l, W_l)`` per level, finest first.
        strides: stride ``s_l`` per level (input pixels per cell).
        sides: anchor side ``a_l`` per level (input pixels).
    Returns:
        anchors: ``(A, 4)`` float32, ``x1 y1 x2 y2`` in input pixels, ``A = sum_l H_l * W_l``,
        level-major then row-major over cells.
    """
    if not (len(sizes) == len(strides) == len(sides)):
        raise ValueError(
            f"sizes, strides and sides need one entry per level, got "
            f"{len(sizes)}, {len(strides)}, {len(sides)}"
        )
    per_level = []
    for (h, w), stride, side in zip(sizes, strides, sides):
        if h < 0 or w < 0:
            raise ValueError(f"feature-map size must be non-negative, got {(h, w)}")
        cy = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * float(stride)
        cx = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * float(stride)
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")  # (H_l, W_l) each, row-major
        half = float(side) / 2.0
        per_level.append(torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1).reshape(-1, 4))
    if not per_level:
        return torch.zeros((0, 4), dtype=torch.float32, device=device)
    return torch.cat(per_level, dim=0)


def anchors_for_input(
    height: int, width: int, cfg: AnchorConfig, device: torch.device | str | None = None
) -> Tensor:
    """``(A, 4)`` anchors of an input of ``height x width`` pixels (the size the network sees)."""
    sizes = feature_sizes(height, width, cfg.strides)
    return make_anchors(sizes, cfg.strides, cfg.sides, device=device)
