"""Box conversions and the SSD box coding (paper notes section 3, "Box coding").

Inside the package every box is ``(x1, y1, x2, y2)`` float pixels; ``(x, y, w, h)`` (WIDER
files) is converted at the edges with :func:`xywh_to_xyxy` / :func:`xyxy_to_xywh`. Widths are
``x2 - x1`` (no ``+ 1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["xywh_to_xyxy", "xyxy_to_xywh", "encode", "decode"]


def _check_last_dim(name: str, t: Tensor) -> None:
    if t.shape[-1:] != (4,):
        raise ValueError(f"{name} must have a last dimension of 4, got shape {tuple(t.shape)}")


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` ``x y w h`` (top-left corner and size) -> ``(..., 4)`` ``x1 y1 x2 y2``."""
    _check_last_dim("boxes", boxes)
    xy, wh = boxes[..., :2], boxes[..., 2:]
    return torch.cat([xy, xy + wh], dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` ``x1 y1 x2 y2`` -> ``(..., 4)`` ``x y w h`` (top-left corner and size)."""
    _check_last_dim("boxes", boxes)
    xy1, xy2 = boxes[..., :2], boxes[..., 2:]
    return torch.cat([xy1, xy2 - xy1], dim=-1)


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """``(..., 4)`` xyxy -> centres ``(..., 2)`` and sizes ``(..., 2)``."""
    return (boxes[..., :2] + boxes[..., 2:]) * 0.5, boxes[..., 2:] - boxes[..., :2]


def encode(boxes: Tensor, anchors: Tensor, variances: Sequence[float]) -> Tensor:
    """SSD offsets of ``boxes`` relative to ``anchors``.

    ``t_xy = (g_c - a_c) / (v0 * a_wh)``, ``t_wh = log(g_wh / a_wh) / v1`` with
    ``variances = (v0, v1)`` (S3FD: (0.1, 0.2)).

    Args:
        boxes: ``(..., 4)`` xyxy ground truth, positive width and height.
        anchors: ``(..., 4)`` xyxy, broadcastable against ``boxes`` (usually ``(A, 4)``).
    Returns:
        deltas: ``(..., 4)`` ``t_x t_y t_w t_h``.
    """
    _check_last_dim("boxes", boxes)
    _check_last_dim("anchors", anchors)
    v_xy, v_wh = float(variances[0]), float(variances[1])
    g_c, g_wh = _centre_size(boxes)
    a_c, a_wh = _centre_size(anchors)
    t_xy = (g_c - a_c) / (v_xy * a_wh)
    t_wh = torch.log(g_wh / a_wh) / v_wh
    return torch.cat([t_xy, t_wh], dim=-1)


def decode(deltas: Tensor, anchors: Tensor, variances: Sequence[float], max_log_size: float) -> Tensor:
    """Inverse of :func:`encode`, with the log-size term clamped before ``exp``.

    ``c = a_c + t_xy * v0 * a_wh``; ``wh = a_wh * exp(min(t_wh * v1, max_log_size))`` (the clamp
    acts *after* the variance, conventions "Geometry": ``0.2 * t_wh <= log(1000 / 16)``).

    Args:
        deltas: ``(..., 4)``, e.g. ``(N, A, 4)``.
        anchors: ``(..., 4)`` broadcastable against ``deltas``, e.g. ``(A, 4)``.
    Returns:
        boxes: ``(..., 4)`` xyxy in input pixels.
    """
    _check_last_dim("deltas", deltas)
    _check_last_dim("anchors", anchors)
    v_xy, v_wh = float(variances[0]), float(variances[1])
    a_c, a_wh = _centre_size(anchors.to(deltas.dtype))
    c = a_c + deltas[..., :2] * v_xy * a_wh
    wh = a_wh * torch.exp(torch.clamp(deltas[..., 2:] * v_wh, max=float(max_log_size)))
    return torch.cat([c - 0.5 * wh, c + 0.5 * wh], dim=-1)
