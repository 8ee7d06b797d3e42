"""Backbones: six maps at strides 4..128, channels, L2Norm, BatchNorm, pretrained loading."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from ufssd.config import ModelConfig
from ufssd.model.backbones import (
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
