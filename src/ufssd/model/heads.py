"""Detection heads: per level a 3x3 conv to class logits and a 3x3 conv to 4 box deltas, or (a
separable head, ``ModelConfig.separable_head_levels``) a shared depthwise 3x3 + BN + ReLU, then a
1x1 conv to class logits and a 1x1 conv to 4 box deltas."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ufssd.model.modules import conv_bn_relu

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

    ``separable``: a depthwise 3x3 conv (+ BN when ``batch_norm``, + ReLU) shared by both outputs,
    then 1x1 class and box convs: per cell C * 9 + C * (k + 5) MACs instead of C * 9 * (k + 5)
    (at level 0, C = 24 and k + 5 = 8: 408 instead of 1,728). Without it the plain head has no
    ``depthwise`` module (the shipped weights' keys).

    Initialisation: N(0, 0.01^2) weights; the face-logit bias is ``-log((1 - pi) / pi)`` with
    pi = 0.01 and the background biases are 0, so each anchor starts at a face probability of
    about 0.01 (with max-out the max of k near-zero logits makes it a little lower); box biases 0.
    The depthwise conv is Kaiming-normal (fan_out, ReLU), as the backbone's convs.
    """

    def __init__(
        self, in_channels: int, num_background: int = 1, separable: bool = False, batch_norm: bool = True
    ) -> None:
        super().__init__()
        if num_background < 1:
            raise ValueError(f"maxout_background must be >= 1, got {num_background}")
        self.num_background = num_background
        self.depthwise: nn.Sequential | None = None
        kernel = 3
        if separable:
            self.depthwise = conv_bn_relu(in_channels, in_channels, 3, groups=in_channels, batch_norm=batch_norm)
            nn.init.kaiming_normal_(self.depthwise[0].weight, mode="fan_out", nonlinearity="relu")
            if self.depthwise[0].bias is not None:
                nn.init.zeros_(self.depthwise[0].bias)
            kernel = 1
        self.padding = kernel // 2
        self.cls = nn.Conv2d(in_channels, num_background + 1, kernel, padding=self.padding)
        self.box = nn.Conv2d(in_channels, 4, kernel, padding=self.padding)
        for conv in (self.cls, self.box):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        with torch.no_grad():
            self.cls.bias[-1] = -math.log((1.0 - FACE_PRIOR) / FACE_PRIOR)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, C, H, W) -> (class logits (N, H*W, 2), box deltas (N, H*W, 4)), row-major cells.

        The two convs run as one conv with their weights stacked (same result, one pass over x:
        at stride 4 on a CPU this halves the heads' cost). A separable head runs its depthwise conv
        first.
        """
        if self.depthwise is not None:
            x = self.depthwise(x)
        weight = torch.cat([self.cls.weight, self.box.weight], dim=0)
        bias = torch.cat([self.cls.bias, self.box.bias], dim=0)
        out = F.conv2d(x, weight, bias, padding=self.padding)
        k = self.num_background + 1
        cls = maxout_background(out[:, :k], self.num_background)
        return flatten_cells(cls), flatten_cells(out[:, k:])


def flatten_cells(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, H*W, C), cells row-major (the anchor order)."""
    n, c = x.shape[0], x.shape[1]
    return x.permute(0, 2, 3, 1).reshape(n, -1, c)
