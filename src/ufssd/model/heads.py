"""Detection heads: per level a 3x3 conv to class logits and a 3x3 conv to 4 box deltas."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FACE_PRIOR = 0.01  # initial face probability (RetinaNet's prior): keeps the early loss stable


def maxout_background(logits: Tensor, num_background: int) -> Tensor:
    """S3FD max-out: (N, k + 1, H, W) with k background logits then the face logit -> (N, 2, H, W).

    The background logit is the max of the k; channel 0 background, 1 face.
    """
    if num_background == 1:
        return logits
    background = logits[:, :num_background].amax(dim=1, keepdim=True)
    return torch.cat([background, logits[:, num_background:]], dim=1)


class LevelHead(nn.Module):
    """Class and box convs of one level; level 0 may use max-out background logits.

    Initialisation: N(0, 0.01^2) weights; the face-logit bias is ``-log((1 - pi) / pi)`` with
    pi = 0.01 and the background biases are 0, so each anchor starts at a face probability of
    about 0.01 (with max-out the max of k near-zero logits makes it a little lower); box biases 0.
    """

    def __init__(self, in_channels: int, num_background: int = 1) -> None:
        super().__init__()
        if num_background < 1:
            raise ValueError(f"maxout_background must be >= 1, got {num_background}")
        self.num_background = num_background
        self.cls = nn.Conv2d(in_channels, num_background + 1, 3, padding=1)
        self.box = nn.Conv2d(in_channels, 4, 3, padding=1)
        for conv in (self.cls, self.box):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        with torch.no_grad():
            self.cls.bias[-1] = -math.log((1.0 - FACE_PRIOR) / FACE_PRIOR)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, C, H, W) -> (class logits (N, H*W, 2), box deltas (N, H*W, 4)), row-major cells.

        The two convs run as one conv with their weights stacked (same result, one pass over x:
        at stride 4 on a CPU this halves the heads' cost).
        """
        weight = torch.cat([self.cls.weight, self.box.weight], dim=0)
        bias = torch.cat([self.cls.bias, self.box.bias], dim=0)
        out = F.conv2d(x, weight, bias, padding=1)
        k = self.num_background + 1
        cls = maxout_background(out[:, :k], self.num_background)
        return flatten_cells(cls), flatten_cells(out[:, k:])


def flatten_cells(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, H*W, C), cells row-major (the anchor order)."""
    n, c = x.shape[0], x.shape[1]
    return x.permute(0, 2, 3, 1).reshape(n, -1, c)
