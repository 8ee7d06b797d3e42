"""The paper's building blocks: L2Norm, FFMM (Eqs. 1-2), FEM (Fig. 3) and MCDM (Sec. 3.3).

Every module takes and returns ``(N, C, H, W)`` feature maps and holds no loss: the mask loss of
Eq. 4 lives in :mod:`ufssd.losses`, the ground-truth masks of Eq. 3 in :mod:`ufssd.geometry`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MCDM_MODES = ("none", "drop", "gt-mask", "gt-mask-ffmm")


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    batch_norm: bool = True,
    relu: bool = True,
) -> nn.Sequential:
    """``conv (same padding) [-> BatchNorm] [-> ReLU]``; the conv has a bias only without BN."""
    padding = dilation * (kernel_size - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=not batch_norm,
        )
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learnable per-channel scale (ParseNet, SSD, S3FD).

    ``y[n, c, i, j] = weight[c] * x[n, c, i, j] / (||x[n, :, i, j]||_2 + eps)``; ``weight`` starts
    at ``scale`` (S3FD: 10, 8, 5 on conv3_3, conv4_3, conv5_3).
    """

    def __init__(self, channels: int, scale: float, eps: float = 1e-10) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) -> (N, C, H, W)."""
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


def mask_probability(logits: Tensor) -> Tensor:
    """Eq. 1: the probability mask ``M = softmax(A)`` over the two channels.

    logits: (N, 2, H, W) face/non-face logits A (channel 0 background, 1 face)
    -> (N, 2, H, W) probabilities, summing to 1 over dim 1.
    """
    return torch.softmax(logits, dim=1)


def binary_mask(face_probability: Tensor, threshold: float) -> Tensor:
    """Eq. 2: ``B(u, v) = 1`` if ``M_face(u, v) > Th_Mask`` else 0.

    face_probability: (N, 1, H, W) M_face -> (N, 1, H, W) {0, 1} in the same dtype. The result
    carries no gradient (a step function; the caller passes a detached M).
    """
    return (face_probability > threshold).to(face_probability.dtype)


class FFMM(nn.Module):
    """Facial feature masking module (Sec. 3.2, Fig. 1b).

    A 3x3 conv predicts face/non-face logits A per cell; ``M = softmax(A)`` (Eq. 1);
    ``B = M_face > Th_Mask`` (Eq. 2) from a *detached* M; the features are multiplied by B,
    broadcast over channels (the stacked mask S). The binarisation is outside the backward
    graph, so the mask conv is trained only by the mask loss on the returned logits, while the
    features still get gradient from the detection loss through the product (where B = 1).

    Initialisation: the mask conv's weights are N(0, 0.01^2) and its bias is 0, so at the start
    ``M_face`` is about 0.5 everywhere (|A_face - A_bg| stays far below log(99) = 4.6 for
    features of unit scale): B = 1 everywhere and nothing is masked until the mask loss has
    taught the branch where the background is.
    """

    def __init__(self, channels: int, threshold: float = 1e-2) -> None:
        super().__init__()
        self.threshold = float(threshold)
        self.conv = nn.Conv2d(channels, 2, kernel_size=3, padding=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (N, C, H, W) -> (masked features (N, C, H, W), mask logits A (N, 2, H, W)).

        ``mask`` (N, 1, H, W), when given, replaces the predicted B in the product (MCDM's
        ``gt-mask-ffmm`` mode in training); the logits are still those predicted from ``x``.
        """
        logits = self.conv(x)
        if mask is None:
            probability = mask_probability(logits.detach())
            mask = binary_mask(probability[:, 1:2], self.threshold)
        return x * mask, logits


class FEM(nn.Module):
    """Feature enhancement module (Fig. 3; PyramidBox / DSFD style) for one level l.

    Level l and its coarser neighbour l+1 each go through 1x1 conv + BN + ReLU to C channels;
    the coarser map is upsampled to level l's exact size and the two are multiplied element-wise;
    three dilated 3x3 branches (C//3, C//3 and C - 2*(C//3) channels, so they sum to C; the
    third branch two convs deep) are concatenated to the enhanced map ef_l with C channels. The coarsest
    level fuses with itself (``coarse_channels`` = its own channels, same input twice).
    """

    def __init__(
        self,
        fine_channels: int,
        coarse_channels: int,
        channels: int = 256,
        dilations: tuple[int, ...] = (1, 2, 3),
        upsample: str = "bilinear",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if len(dilations) != 3:
            raise ValueError(f"FEM needs three dilations (one per branch), got {dilations!r}")
        if channels < 3:
            raise ValueError(f"FEM needs at least 3 channels, got {channels}")
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"fem_upsample must be 'bilinear' or 'nearest', got {upsample!r}")
        self.upsample = upsample
        self.fine = conv_bn_relu(fine_channels, channels, 1)  # Fig. 3: always BN + ReLU
        self.coarse = conv_bn_relu(coarse_channels, channels, 1)
        third = channels // 3
        split = (third, third, channels - 2 * third)  # sums to C; the deep branch takes the rest
        d1, d2, d3 = dilations
        self.branch1 = conv_bn_relu(channels, split[0], 3, dilation=d1, batch_norm=batch_norm)
        self.branch2 = conv_bn_relu(channels, split[1], 3, dilation=d2, batch_norm=batch_norm)
        self.branch3 = nn.Sequential(
            conv_bn_relu(channels, split[2], 3, dilation=d3, batch_norm=batch_norm),
            conv_bn_relu(split[2], split[2], 3, dilation=d3, batch_norm=batch_norm),
        )
        self.out_channels = channels

    def forward(self, fine: Tensor, coarse: Tensor) -> Tensor:
        """fine: (N, C_l, H, W), coarse: (N, C_l+1, H', W') -> ef_l: (N, C, H, W)."""
        f = self.fine(fine)
        c = self.coarse(coarse)
        if self.upsample == "bilinear":
            c = F.interpolate(c, size=f.shape[-2:], mode="bilinear", align_corners=False)
        else:
            c = F.interpolate(c, size=f.shape[-2:], mode="nearest")
        fused = f * c
        return torch.cat([self.branch1(fused), self.branch2(fused), self.branch3(fused)], dim=1)


class MCDM(nn.Module):
    """Mask constrained dropout module (Sec. 3.3): a dropout of the face cells, training only.

    Modes (paper notes section 5):
    - ``"drop"``: the feature vectors of cells where G = 1 are zeroed with probability eta;
      every other cell is untouched; no rescaling.
    - ``"gt-mask"``: the features are multiplied by G with its ones dropped with probability eta
      (background cells are zeroed too: the literal reading).
    - ``"gt-mask-ffmm"``: as ``"gt-mask"`` in training; at test time the FFMM mask of the level
      does the masking (the detector passes this module's multiplier to FFMM in training).

    In eval mode, or when no ground-truth mask is given, the module is the identity.
    """

    def __init__(self, mode: str = "drop", eta: float = 0.1) -> None:
        super().__init__()
        if mode not in MCDM_MODES or mode == "none":
            raise ValueError(f"MCDM mode must be one of {MCDM_MODES[1:]}, got {mode!r}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"MCDM eta must be in [0, 1], got {eta}")
        self.mode = mode
        self.eta = float(eta)

    def multiplier(self, gt_mask: Tensor) -> Tensor:
        """gt_mask: (N, H, W) {0, 1} G -> (N, 1, H, W) {0, 1} per-cell multiplier for training.

        Draws from the global torch RNG (seed it for reproducible runs).
        """
        g = gt_mask.unsqueeze(1).to(torch.float32)
        dropped = (torch.rand_like(g) < self.eta).to(g.dtype) * g
        if self.mode == "drop":
            return 1.0 - dropped
        return g - dropped  # "gt-mask", "gt-mask-ffmm": G with its ones dropped

    def forward(self, x: Tensor, gt_mask: Tensor | None = None) -> Tensor:
        """x: (N, C, H, W), gt_mask: (N, H, W) or None -> (N, C, H, W)."""
        if not self.training or gt_mask is None:
            return x
        return x * self.multiplier(gt_mask).to(x.dtype)
