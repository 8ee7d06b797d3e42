"""Inference-only speed-up: fold BatchNorm into the preceding convolution."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every ``Conv2d -> BatchNorm2d`` pair folded.

    Folds the pairs that sit next to each other inside an ``nn.Sequential`` (every conv block of
    ours and torchvision's ResNet downsample paths; the BatchNorms inside torchvision's
    Bottleneck blocks stay). The outputs equal the eval-mode outputs up to float rounding. The
    copy has a different state dict, so it is for inference only: it is marked
    ``batchnorm_fused = True`` and :func:`ufssd.model.save_weights` refuses it. ONNX export folds
    BatchNorm by itself and does not need this.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module[i] = fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
    fused.batchnorm_fused = True
    return fused
