"""Backbones: six feature maps at strides 4, 8, 16, 32, 64, 128.

Every backbone is an ``nn.Module`` with ``out_channels: tuple[int, ...]`` (six values) whose
``forward(images (N, 3, H, W)) -> list[Tensor]`` returns the six maps, level 0 (stride 4) first;
for H and W multiples of 128 level l is exactly ``(H / s_l, W / s_l)`` (ceil otherwise).

- ``vgg16``: the S3FD layout (conv3_3, conv4_3, conv5_3 with L2Norm, fc7, conv6_2, conv7_2).
- ``resnet152``: torchvision's ResNet-152 C2..C5, two extra stride-2 stages, 1x1 laterals to 256.
- ``light``: our CPU backbone (depthwise-separable stages, a top-down fusion into stride 4 and 8;
  ``light_*`` fields of the config: depth per level, a full FPN top-down path, a PAN bottom-up path).

All start from scratch; :func:`load_pretrained` loads ImageNet weights from a local file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ufssd.config import ModelConfig
from ufssd.model.modules import L2Norm, conv_bn_relu

logger = logging.getLogger(__name__)

BACKBONES = ("vgg16", "resnet152", "light")
NUM_LEVELS = 6


def init_conv_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convs with zero bias, BatchNorm at (1, 0): from scratch."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# VGG-16 (S3FD)

# torchvision's VGG-16 "D" configuration; "M" = 2x2/2 max-pool
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_VGG16_TAPS = (7, 10, 13)  # 1-based conv numbers of conv3_3, conv4_3, conv5_3



def extra_layer(in_channels: int, mid_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    """SSD's extra level: a 1x1 reduction, then a 3x3 convolution at stride 2."""
    return nn.Sequential(
        conv_bn_relu(in_channels, mid_channels, 1, batch_norm=batch_norm),
        conv_bn_relu(mid_channels, out_channels, 3, stride=2, batch_norm=batch_norm),
    )

class VGG16Backbone(nn.Module):
    """S3FD's VGG-16: conv3_3 (4), conv4_3 (8), conv5_3 (16), fc7 (32), conv6_2 (64), conv7_2 (128).

    ``features`` has torchvision's ``vgg16`` / ``vgg16_bn`` layout and indices (conv1_1 ...
    pool5), so ImageNet weights load by name. fc6 = 3x3 conv 1024 dilation 6 on pool5, fc7 =
    1x1 conv 1024; conv6 = 1x1 256 then 3x3/2 512; conv7 = 1x1 128 then 3x3/2 256. L2Norm on
    conv3_3, conv4_3, conv5_3 with initial scales ``l2norm_scales``. Pools use ceil_mode.
    """

    def __init__(self, batch_norm: bool = True, l2norm_scales: tuple[float, ...] = (10.0, 8.0, 5.0)) -> None:
        super().__init__()
        if len(l2norm_scales) != 3:
            raise ValueError(f"vgg16 needs 3 l2norm_scales (conv3_3, conv4_3, conv5_3), got {l2norm_scales!r}")
        layers: list[nn.Module] = []
        taps: list[int] = []
        in_ch, n_conv = 3, 0
        for v in _VGG16_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                continue
            layers.append(nn.Conv2d(in_ch, v, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_ch, n_conv = v, n_conv + 1
            if n_conv in _VGG16_TAPS:
                taps.append(len(layers) - 1)  # after the ReLU
        self.features = nn.Sequential(*layers)  # ends with pool5
        self._taps = tuple(taps)
        self.l2norms = nn.ModuleList(L2Norm(c, s) for c, s in zip((256, 512, 512), l2norm_scales))
        self.fc6 = conv_bn_relu(512, 1024, 3, dilation=6, batch_norm=batch_norm)
        self.fc7 = conv_bn_relu(1024, 1024, 1, batch_norm=batch_norm)
        self.conv6 = extra_layer(1024, 256, 512, batch_norm)
        self.conv7 = extra_layer(512, 128, 256, batch_norm)
        self.out_channels = (256, 512, 512, 1024, 512, 256)
        init_conv_weights(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: (N, 3, H, W) -> six maps (N, C_l, H / s_l, W / s_l)."""
        outs: list[Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                outs.append(self.l2norms[len(outs)](x))
        x = self.fc7(self.fc6(x))
        outs.append(x)
        x = self.conv6(x)
        outs.append(x)
        outs.append(self.conv7(x))
        return outs


# ---------------------------------------------------------------------------------------------
# ResNet-152


class ResNet152Backbone(nn.Module):
    """torchvision ResNet-152 C2..C5 (strides 4..32), two extra stride-2 stages, 1x1 laterals.

    The stem and ``layer1..4`` keep torchvision's attribute names, so ImageNet weights load by
    name. C6 = 1x1 512 + 3x3/2 512 on C5, C7 = 1x1 256 + 3x3/2 256 on C6; every level then goes
    through a 1x1 lateral conv to ``channels[l]`` (256 each by default). torchvision's blocks
    always have BatchNorm; ``batch_norm`` applies to the two extra stages.
    """

    def __init__(self, batch_norm: bool = True, channels: tuple[int, ...] = ()) -> None:
        super().__init__()
        from torchvision.models import resnet152

        channels = tuple(channels) or (256,) * NUM_LEVELS
        net = resnet152(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.extra1 = extra_layer(2048, 512, 512, batch_norm)
        self.extra2 = extra_layer(512, 256, 256, batch_norm)
        init_conv_weights(self.extra1)
        init_conv_weights(self.extra2)
        self.laterals = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 1) for c_in, c_out in zip((256, 512, 1024, 2048, 512, 256), channels)
        )
        for m in self.laterals:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        self.out_channels = channels

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: (N, 3, H, W) -> six maps (N, C_l, H / s_l, W / s_l)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        c6 = self.extra1(c5)
        c7 = self.extra2(c6)
        return [lat(c) for lat, c in zip(self.laterals, (c2, c3, c4, c5, c6, c7))]


# ---------------------------------------------------------------------------------------------
# light (ours)

LIGHT_CHANNELS = (24, 48, 64, 128, 128, 128)
LIGHT_STEM = 16
LIGHT_BLOCKS = (1, 1, 2, 1, 0, 0)  # extra stride-1 blocks after each stride-2 block


class SeparableBlock(nn.Module):
    """Depthwise 3x3 (stride s) + BN + ReLU, pointwise 1x1 + BN + ReLU; residual when shapes agree."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, batch_norm: bool = True) -> None:
        super().__init__()
        self.dw = conv_bn_relu(in_channels, in_channels, 3, stride=stride, groups=in_channels, batch_norm=batch_norm)
        self.pw = conv_bn_relu(in_channels, out_channels, 1, batch_norm=batch_norm, relu=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s))."""
        y = self.pw(self.dw(x))
        if self.residual:
            y = y + x
        return F.relu(y, inplace=True)


class LightBackbone(nn.Module):
    """Our CPU backbone: a stride-2 3x3 stem and six depthwise-separable stages, and a light neck.

    stem 3x3/2 (16) -> [stride-2 block + ``blocks[l]`` stride-1 blocks] per level with
    ``channels[l]`` outputs (defaults ``LIGHT_CHANNELS`` = 24, 48, 64, 128, 128, 128 and
    ``LIGHT_BLOCKS`` = 1, 1, 2, 1, 0, 0). Each level l in ``topdown`` (default 0 and 1) gets context
    from the next coarser level, coarse to fine (1x1 lateral + BN, nearest upsample to the exact
    size, add, then a depthwise 3x3 + BN + ReLU), which lets the stride-4 level see beyond its
    small receptive field. With ``bottomup`` a PAN path follows over the same edges, fine to
    coarse: level l + 1 += a stride-2 depthwise-separable downsample of level l (dw 3x3/2 + BN +
    ReLU, 1x1 + BN), then a depthwise 3x3 + BN + ReLU (YuNet's and SCRFD's PAFPN, made light).
    The input is turned channels-last first: on CPU, oneDNN's depthwise and 3-channel convs are
    several times faster in that layout (the outputs keep it; shapes are unchanged). See
    docs/model.md for the measured speed.
    """

    def __init__(
        self,
        batch_norm: bool = True,
        channels: tuple[int, ...] = (),
        blocks: tuple[int, ...] = (),
        topdown: tuple[int, ...] = (0, 1),
        bottomup: bool = False,
    ) -> None:
        super().__init__()
        channels = tuple(channels) or LIGHT_CHANNELS
        blocks = tuple(blocks) or LIGHT_BLOCKS
        self.topdown = tuple(topdown)
        self.stem = conv_bn_relu(3, LIGHT_STEM, 3, stride=2, batch_norm=batch_norm)
        stages = []
        in_ch = LIGHT_STEM
        for c, n in zip(channels, blocks):
            layers = [SeparableBlock(in_ch, c, stride=2, batch_norm=batch_norm)]
            layers += [SeparableBlock(c, c, batch_norm=batch_norm) for _ in range(n)]
            stages.append(nn.Sequential(*layers))
            in_ch = c
        self.stages = nn.ModuleList(stages)
        # top-down fusion (coarse -> fine); entry i serves level topdown[i]
        self.laterals = nn.ModuleList(
            conv_bn_relu(channels[l + 1], channels[l], 1, batch_norm=batch_norm, relu=False) for l in self.topdown
        )
        self.smooth = nn.ModuleList(_depthwise_smooth(channels[l], batch_norm) for l in self.topdown)
        # bottom-up (fine -> coarse); entry i serves level topdown[i] + 1 (absent by default)
        if bottomup:
            self.downsamples = nn.ModuleList(
                nn.Sequential(
                    conv_bn_relu(channels[l], channels[l], 3, stride=2, groups=channels[l], batch_norm=batch_norm),
                    conv_bn_relu(channels[l], channels[l + 1], 1, batch_norm=batch_norm, relu=False),
                )
                for l in self.topdown
            )
            self.smooth_up = nn.ModuleList(_depthwise_smooth(channels[l + 1], batch_norm) for l in self.topdown)
        self.bottomup = bottomup
        self.out_channels = channels
        init_conv_weights(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: (N, 3, H, W) -> six maps (N, C_l, H / s_l, W / s_l), channels-last memory."""
        if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            # a memory layout only: torch.export would turn its stride checks into size guards
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        feats: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        for i in reversed(range(len(self.topdown))):
            l = self.topdown[i]
            up = F.interpolate(self.laterals[i](feats[l + 1]), size=feats[l].shape[-2:], mode="nearest")
            feats[l] = self.smooth[i](feats[l] + up)
        if self.bottomup:
            for i, l in enumerate(self.topdown):
                feats[l + 1] = self.smooth_up[i](feats[l + 1] + self.downsamples[i](feats[l]))
        return feats


def _depthwise_smooth(channels: int, batch_norm: bool) -> nn.Sequential:
    """The neck's smoothing after an add: depthwise 3x3 + BN + ReLU."""
    return conv_bn_relu(channels, channels, 3, groups=channels, batch_norm=batch_norm)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_light_config(cfg: ModelConfig) -> None:
    """Raise ValueError, naming the field, for ``light_*`` fields the light backbone cannot build
    (or for a non-default one on another backbone, which would silently ignore it)."""
    defaults = ModelConfig()
    if cfg.backbone != "light":
        for name in ("light_blocks", "light_topdown", "light_bottomup"):
            if getattr(cfg, name) != getattr(defaults, name):
                raise ValueError(f"ModelConfig.{name} is a light-backbone field; backbone is {cfg.backbone!r}")
        return
    blocks = cfg.light_blocks
    if blocks and (len(blocks) != NUM_LEVELS or not all(_is_int(n) and n >= 0 for n in blocks)):
        raise ValueError(
            f"ModelConfig.light_blocks needs {NUM_LEVELS} integers >= 0 (stride-1 blocks per level) "
            f"or () for the default, got {blocks!r}"
        )
    top = cfg.light_topdown
    in_range = all(_is_int(l) and 0 <= l < NUM_LEVELS - 1 for l in top)
    if not in_range or list(top) != sorted(set(top)):
        raise ValueError(
            f"ModelConfig.light_topdown must be increasing distinct levels in 0..{NUM_LEVELS - 2} "
            f"(each receives from level + 1), got {top!r}"
        )
    if not isinstance(cfg.light_bottomup, bool):
        raise ValueError(f"ModelConfig.light_bottomup must be True or False, got {cfg.light_bottomup!r}")
    if cfg.light_bottomup and not top:
        raise ValueError("ModelConfig.light_bottomup needs light_topdown levels (it runs over the same edges)")


# ---------------------------------------------------------------------------------------------


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The backbone named by ``cfg.backbone``, from scratch (see :func:`load_pretrained`)."""
    validate_light_config(cfg)
    if cfg.channels and len(cfg.channels) != NUM_LEVELS:
        raise ValueError(f"ModelConfig.channels needs {NUM_LEVELS} values (one per level), got {cfg.channels!r}")
    if cfg.backbone == "vgg16":
        if cfg.channels:
            raise ValueError("ModelConfig.channels is not supported by the vgg16 backbone (fixed S3FD widths)")
        return VGG16Backbone(cfg.batch_norm, cfg.l2norm_scales)
    if cfg.backbone == "resnet152":
        return ResNet152Backbone(cfg.batch_norm, cfg.channels)
    if cfg.backbone == "light":
        return LightBackbone(cfg.batch_norm, cfg.channels, cfg.light_blocks, cfg.light_topdown, cfg.light_bottomup)
    raise ValueError(f"unknown backbone {cfg.backbone!r}; known: {', '.join(BACKBONES)}")


def _read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict from a local .safetensors or torch file (optionally under "state_dict"/"model")."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretrained backbone weights not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader error means an unreadable file
        raise ValueError(f"cannot read pretrained backbone weights {p}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{p} does not hold a state dict of tensors")
    return state


def load_pretrained(backbone: nn.Module, path: str | os.PathLike, strict: bool | None = None) -> tuple[int, int]:
    """Load ImageNet weights from a local file into ``backbone``; returns (matched, total) keys.

    ``vgg16`` / ``resnet152`` load non-strictly (torchvision key names: ``features.N.*``,
    ``layer1.*`` ...; keys of other names or shapes are skipped), with a logged summary;
    ``light`` loads strictly unless ``strict=False``. Raises FileNotFoundError for a missing file,
    ValueError for an unreadable file or (strict) a mismatch.
    """
    if strict is None:
        strict = isinstance(backbone, LightBackbone)
    state = _read_state_dict(path)
    own = backbone.state_dict()
    if isinstance(backbone, VGG16Backbone) and any(k.startswith("features.") for k in state):
        file_bn, own_bn = "features.1.running_mean" in state, "features.1.running_mean" in own
        if file_bn != own_bn:
            raise ValueError(
                f"pretrained weights {path} are VGG-16{' with' if file_bn else ' without'} BatchNorm "
                f"but the model has batch_norm={own_bn}: the layer indices differ"
            )
    if strict:
        try:
            backbone.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"pretrained weights {path} do not match the backbone: {exc}") from exc
        return len(own), len(own)
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    wrong_shape = [k for k in state if k in own and own[k].shape != state[k].shape]
    backbone.load_state_dict(matched, strict=False)
    logger.info(
        "pretrained %s: loaded %d of the backbone's %d tensors (%d file keys unused, %d with a wrong shape)",
        path,
        len(matched),
        len(own),
        len(state) - len(matched),
        len(wrong_shape),
    )
    if not matched:
        raise ValueError(f"pretrained weights {path}: no key matches the backbone (expected torchvision names)")
    return len(matched), len(own)
