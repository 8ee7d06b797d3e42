"""Helpers for the inference tests: a light model whose head "sees" a red box, and a random model
whose scores are spread out (so that near-ties do not make comparisons flaky)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ufssd.geometry.anchors import anchors_for_input
from ufssd.geometry.boxes import encode
from ufssd.model import RawOutput, build_model

RED_RGB = (255, 0, 0)


def draw_box(height: int, width: int, box: tuple[int, int, int, int], colour=RED_RGB, channels: int = 3) -> np.ndarray:
    """A black ``(height, width, channels)`` uint8 image with the pixels ``[y1:y2, x1:x2]`` filled."""
    image = np.zeros((height, width, channels), dtype=np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2, : len(colour)] = colour
    if channels == 4:
        image[..., 3] = 255
    return image


def install_red_box_head(model: nn.Module) -> nn.Module:
    """Replace ``model.forward`` by a fixed 'network' that finds the red pixels of each input
    (after undoing the normalisation), and predicts exactly their bounding box (pixel edges, in
    network-input pixels) on one anchor with a face score of sigmoid(20); every other anchor is
    background. So what the detector returns checks its resize, padding and mapping back."""
    cfg = model.config
    mean = torch.tensor(cfg.model.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.model.std).view(1, 3, 1, 1)

    def forward(images: torch.Tensor, gt_masks=None) -> RawOutput:
        n, _, hp, wp = images.shape
        rgb = (images * std + mean) * 255.0
        red = (rgb[:, 0] > 200) & (rgb[:, 1] < 60) & (rgb[:, 2] < 60)
        anchors = anchors_for_input(hp, wp, cfg.anchors)
        cls = torch.zeros((n, len(anchors), 2))
        cls[..., 0] = 10.0
        cls[..., 1] = -10.0
        deltas = torch.zeros((n, len(anchors), 4))
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2
        sides = anchors[:, 2] - anchors[:, 0]
        for i in range(n):
            ys, xs = torch.nonzero(red[i], as_tuple=True)
            if len(ys) == 0:
                continue
            box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            size = torch.sqrt((box[2] - box[0]) * (box[3] - box[1]))
            cost = (centres - (box[:2] + box[2:]) / 2).abs().sum(1) / sides + (sides / size).log().abs()
            j = int(torch.argmin(cost))
            cls[i, j] = torch.tensor([-10.0, 10.0])
            deltas[i, j] = encode(box, anchors[j], cfg.anchors.variances)
        masks = tuple(
            torch.zeros((n, 2, hp // cfg.anchors.strides[l], wp // cfg.anchors.strides[l]))
            for l in cfg.model.ffmm_levels
        )
        return RawOutput(cls, deltas, masks)

    model.forward = forward
    return model


def spread_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise every conv with He-normal weights and small random biases: activations keep
    their scale, so face scores spread over (0, 1) instead of all sitting near the 0.01 prior.
    The output convs (heads, FFMM) get a quarter of that, so logits stay within about +-15."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                gain = 0.25 if name.startswith(("heads", "ffmm")) else 1.0
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * gain * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(name="draw_box")
def draw_box_fixture():
    return draw_box


@pytest.fixture
def red_box_detector():
    from ufssd.inference import FaceDetector

    def make(**kwargs):
        model = install_red_box_head(build_model("ufssd_light").eval())
        return FaceDetector.from_model(model, **kwargs)

    return make


@pytest.fixture(scope="session")
def spread_model():
    torch.manual_seed(0)
    return spread_init(build_model("ufssd_light_ffmm_x1"), seed=0)
