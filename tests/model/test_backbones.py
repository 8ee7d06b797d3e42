"""Backbones: six maps at strides 4..128, channels, L2Norm, BatchNorm, pretrained loading."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from ufssd.config import ModelConfig
from ufssd.model.backbones import (
    LIGHT_BLOCKS,
    LIGHT_CHANNELS,
    LightBackbone,
    VGG16Backbone,
    build_backbone,
    load_pretrained,
)
from ufssd.model.modules import L2Norm

STRIDES = (4, 8, 16, 32, 64, 128)


def _sizes(feats):
    return [tuple(f.shape[-2:]) for f in feats]


def _expected(h, w):
    return [(h // s, w // s) for s in STRIDES]


@pytest.mark.parametrize("hw", [(640, 640), (512, 640), (128, 384)])
def test_light_sizes_exact(hw):
    bb = build_backbone(ModelConfig(backbone="light")).eval()
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, *hw))
    assert _sizes(feats) == _expected(*hw)
    assert [f.shape[1] for f in feats] == list(LIGHT_CHANNELS)
    assert tuple(bb.out_channels) == LIGHT_CHANNELS


def test_light_channels_knob():
    channels = (8, 16, 16, 32, 32, 32)
    bb = build_backbone(ModelConfig(backbone="light", channels=channels)).eval()
    with torch.no_grad():
        feats = bb(torch.randn(2, 3, 256, 128))
    assert [f.shape[1] for f in feats] == list(channels)
    assert [f.shape[0] for f in feats] == [2] * 6
    assert _sizes(feats) == _expected(256, 128)


def test_vgg16_layout_and_sizes():
    bb = VGG16Backbone().eval()
    assert bb.out_channels == (256, 512, 512, 1024, 512, 256)
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 256, 128))
    assert _sizes(feats) == _expected(256, 128)
    assert [f.shape[1] for f in feats] == list(bb.out_channels)
    # L2Norm on conv3_3, conv4_3, conv5_3 with S3FD's initial scales; fc6 dilated 6
    assert [n.weight.detach()[0].item() for n in bb.l2norms] == [10.0, 8.0, 5.0]
    assert bb.fc6[0].dilation == (6, 6) and bb.fc6[0].out_channels == 1024
    assert bb.fc7[0].kernel_size == (1, 1) and bb.fc7[0].out_channels == 1024
    # torchvision vgg16_bn indices: conv1_1 at 0, its BN at 1
    assert isinstance(bb.features[0], nn.Conv2d) and isinstance(bb.features[1], nn.BatchNorm2d)
    assert sum(isinstance(m, nn.MaxPool2d) for m in bb.features) == 5


def test_vgg16_levels_0_to_2_are_l2_normalised():
    bb = VGG16Backbone().eval()
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 128, 128))
    for level, scale in zip(range(3), (10.0, 8.0, 5.0)):
        norms = feats[level].pow(2).sum(1).sqrt()
        torch.testing.assert_close(norms, torch.full_like(norms, scale), rtol=1e-4, atol=1e-3)


def test_vgg16_without_batchnorm():
    bb = build_backbone(ModelConfig(backbone="vgg16", batch_norm=False))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in bb.modules())
    with_bn = build_backbone(ModelConfig(backbone="vgg16"))
    n_conv = sum(isinstance(m, nn.Conv2d) for m in with_bn.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == n_conv  # one after each conv


@pytest.fixture(scope="module")
def resnet152():
    return build_backbone(ModelConfig(backbone="resnet152")).eval()


def test_resnet152_sizes_and_channels(resnet152):
    bb = resnet152
    assert bb.out_channels == (256,) * 6
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 128, 128))
    assert _sizes(feats) == _expected(128, 128)
    assert [f.shape[1] for f in feats] == [256] * 6
    assert len(bb.layer3) == 36  # ResNet-152: 3, 8, 36, 3 bottlenecks


def test_build_backbone_errors():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone(ModelConfig(backbone="alexnet"))
    with pytest.raises(ValueError, match="6 values"):
        build_backbone(ModelConfig(backbone="light", channels=(8, 16)))
    with pytest.raises(ValueError, match="vgg16"):
        build_backbone(ModelConfig(backbone="vgg16", channels=(8,) * 6))


def test_l2norm():
    norm = L2Norm(4, scale=3.0)
    x = torch.tensor([3.0, 0.0, 4.0, 0.0]).view(1, 4, 1, 1)
    torch.testing.assert_close(norm(x).flatten(), torch.tensor([1.8, 0.0, 2.4, 0.0]))


def test_load_pretrained_vgg16_by_torchvision_names(tmp_path, caplog):
    source = VGG16Backbone()
    # an ImageNet-style file: torchvision names for features.*, plus a classifier we do not use
    state = {k: v for k, v in source.state_dict().items() if k.startswith("features.")}
    state["classifier.0.weight"] = torch.zeros(4096, 25088 // 64)
    path = tmp_path / "vgg16_bn.pth"
    torch.save(state, path)
    target = VGG16Backbone()
    with caplog.at_level(logging.INFO, logger="ufssd.model.backbones"):
        matched, total = load_pretrained(target, path)
    assert matched == len(state) - 1 and total == len(target.state_dict())
    assert "loaded" in caplog.text
    torch.testing.assert_close(target.features[0].weight, source.features[0].weight)
    assert not torch.equal(target.fc6[0].weight, source.fc6[0].weight)  # not in the file


def test_load_pretrained_resnet_nonstrict(tmp_path, resnet152):
    bb = resnet152
    conv1 = torch.randn_like(bb.conv1.weight)
    path = tmp_path / "r152.pth"
    torch.save({"state_dict": {"conv1.weight": conv1, "fc.weight": torch.zeros(1000, 2048)}}, path)
    matched, _ = load_pretrained(bb, path)
    assert matched == 1
    torch.testing.assert_close(bb.conv1.weight, conv1)


def test_load_pretrained_light_is_strict(tmp_path):
    source = LightBackbone()
    path = tmp_path / "light.pt"
    torch.save(source.state_dict(), path)
    target = LightBackbone()
    load_pretrained(target, path)
    torch.testing.assert_close(target.stem[0].weight, source.stem[0].weight)
    torch.save({"stem.0.weight": source.stem[0].weight}, path)
    with pytest.raises(ValueError, match="do not match"):
        load_pretrained(LightBackbone(), path)


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_pretrained(LightBackbone(), tmp_path / "missing.pth")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="cannot read"):
        load_pretrained(VGG16Backbone(), bad)
    other = tmp_path / "other.pth"
    torch.save({"something.else": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="no key matches"):
        load_pretrained(VGG16Backbone(), other)
    plain = tmp_path / "vgg16.pth"  # torchvision vgg16 (no BN) into a BN model: indices differ
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.2.weight": torch.zeros(64, 64, 3, 3)}, plain)
    with pytest.raises(ValueError, match="BatchNorm"):
        load_pretrained(VGG16Backbone(batch_norm=True), plain)


# ---------------------------------------------------------------------------------------------
# the light backbone's v4 fields (issue 17): depth per level, top-down levels, PAN bottom-up


def _light_cfg(**kw) -> ModelConfig:
    return ModelConfig(backbone="light", channels=(8, 8, 16, 16, 16, 16), **kw)


def test_light_default_neck_is_the_v3_network():
    bb = build_backbone(ModelConfig(backbone="light"))
    assert [len(stage) - 1 for stage in bb.stages] == list(LIGHT_BLOCKS) == [1, 1, 2, 1, 0, 0]
    assert bb.topdown == (0, 1) and len(bb.laterals) == len(bb.smooth) == 2 and not bb.bottomup
    assert not any(k.startswith(("downsamples", "smooth_up")) for k in bb.state_dict())
    # laterals[i] / smooth[i] serve level topdown[i]: 48 -> 24 into level 0, 64 -> 48 into level 1
    assert [m[0].in_channels for m in bb.laterals] == [48, 64]
    assert [m[0].out_channels for m in bb.smooth] == [24, 48]


def test_light_blocks_knob():
    blocks = (3, 0, 1, 0, 2, 0)
    bb = build_backbone(_light_cfg(light_blocks=blocks)).eval()
    assert [len(stage) - 1 for stage in bb.stages] == list(blocks)
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 256, 128))
    assert _sizes(feats) == _expected(256, 128)


@pytest.mark.parametrize("bottomup", [False, True])
@pytest.mark.parametrize("hw", [(256, 384), (200, 130)])  # exact, and not multiples of 128 (ceil)
def test_light_fpn_and_pan_sizes(hw, bottomup):
    bb = build_backbone(_light_cfg(light_topdown=(0, 1, 2, 3, 4), light_bottomup=bottomup)).eval()
    assert len(bb.laterals) == 5 and (len(bb.downsamples) == 5 if bottomup else not hasattr(bb, "downsamples"))
    with torch.no_grad():
        feats = bb(torch.randn(2, 3, *hw))
    assert _sizes(feats) == [(-(-hw[0] // s), -(-hw[1] // s)) for s in STRIDES]
    assert [f.shape[1] for f in feats] == [8, 8, 16, 16, 16, 16]


def _raw_stages(bb, x):
    feats = []
    x = bb.stem(x.contiguous(memory_format=torch.channels_last))  # as the backbone: same rounding
    for stage in bb.stages:
        x = stage(x)
        feats.append(x)
    return feats


def test_light_neck_paths_touch_only_their_levels():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 256, 256)
    fpn = build_backbone(_light_cfg(light_topdown=(1, 3))).eval()
    pan = build_backbone(_light_cfg(light_topdown=(1, 3), light_bottomup=True)).eval()
    pan.load_state_dict(fpn.state_dict(), strict=False)  # the same stages and top-down path
    with torch.no_grad():
        raw, top, both = _raw_stages(fpn, x), fpn(x), pan(x)
    # top-down: only levels 1 and 3 are fused (from levels 2 and 4)
    for l in range(6):
        assert torch.equal(top[l], raw[l]) == (l not in (1, 3)), l
    # bottom-up over the same edges: levels 2 (from 1) and 4 (from 3) change, nothing else
    for l in range(6):
        assert torch.equal(both[l], top[l]) == (l not in (2, 4)), l
    # level 4 = smooth_up(top-down level 4 + downsample(fused level 3)), by hand
    with torch.no_grad():
        expected = pan.smooth_up[1](top[4] + pan.downsamples[1](top[3]))
    torch.testing.assert_close(both[4], expected)


def test_light_fields_validation():
    for bad in [(1, 1), (1, 1, 1, 1, 1, -1), (1.0, 1, 1, 1, 1, 1)]:
        with pytest.raises(ValueError, match="light_blocks"):
            build_backbone(_light_cfg(light_blocks=bad))
    for bad in [(5,), (1, 0), (0, 0), (-1,)]:
        with pytest.raises(ValueError, match="light_topdown"):
            build_backbone(_light_cfg(light_topdown=bad))
    with pytest.raises(ValueError, match="light_bottomup"):
        build_backbone(_light_cfg(light_topdown=(), light_bottomup=True))
    with pytest.raises(ValueError, match="light_bottomup"):
        build_backbone(_light_cfg(light_bottomup=1))
    for field, value in [("light_blocks", (1,) * 6), ("light_topdown", (0,)), ("light_bottomup", True)]:
        with pytest.raises(ValueError, match=f"{field} is a light-backbone field"):
            build_backbone(ModelConfig(backbone="resnet152", **{field: value}))
    # no top-down at all is a valid (ablation) network
    bb = build_backbone(_light_cfg(light_topdown=()))
    assert len(bb.laterals) == 0
