"""FFMM (Eqs. 1-2), FEM (Fig. 3), MCDM (Sec. 3.3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ufssd.model.modules import FEM, FFMM, MCDM, binary_mask, mask_probability


def test_mask_probability_is_softmax_over_two_channels():
    logits = torch.tensor([0.0, 0.0, 0.0, 2.0]).view(1, 2, 1, 2)  # bg (0, 0), face (0, 2)
    m = mask_probability(logits)
    torch.testing.assert_close(m.sum(1), torch.ones(1, 1, 2))
    torch.testing.assert_close(m[0, 1, 0], torch.tensor([0.5, torch.sigmoid(torch.tensor(2.0)).item()]))


def test_binary_mask_strictly_greater():
    p = torch.tensor([0.005, 0.01, 0.0100001, 0.9]).view(1, 1, 1, 4)
    assert binary_mask(p, 0.01).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


def _ffmm_with_masked_cells(channels=8):
    """An FFMM whose mask conv says: face where input channel 0 > 0, background elsewhere."""
    ffmm = FFMM(channels, threshold=0.01)
    with torch.no_grad():
        ffmm.conv.weight.zero_()
        ffmm.conv.weight[1, 0, 1, 1] = 20.0  # face logit = 20 * x[0] at the centre tap
        ffmm.conv.bias.copy_(torch.tensor([0.0, -5.0]))
    return ffmm


def test_ffmm_mask_is_binary_and_masks_whole_cells():
    torch.manual_seed(0)
    ffmm = _ffmm_with_masked_cells()
    x = torch.randn(2, 8, 6, 7)
    out, logits = ffmm(x)
    assert logits.shape == (2, 2, 6, 7)
    face = mask_probability(logits)[:, 1]
    b = (face > 0.01).float()
    assert 0 < b.sum() < b.numel()  # some cells kept, some masked
    torch.testing.assert_close(out, x * b.unsqueeze(1))
    kept = out.abs().sum(1) > 0
    assert torch.equal(kept, b.bool() & (x.abs().sum(1) > 0))


def test_ffmm_detection_loss_sends_no_gradient_into_mask_branch():
    torch.manual_seed(0)
    ffmm = _ffmm_with_masked_cells()
    x = torch.randn(1, 8, 6, 7, requires_grad=True)
    head = nn.Conv2d(8, 6, 3, padding=1)
    out, logits = ffmm(x)
    y = head(out)
    det_loss = y[:, :2].logsumexp(1).mean() + y[:, 2:].pow(2).mean()  # stand-in cls + box loss
    det_loss.backward()
    assert ffmm.conv.weight.grad is None or torch.count_nonzero(ffmm.conv.weight.grad) == 0
    assert ffmm.conv.bias.grad is None or torch.count_nonzero(ffmm.conv.bias.grad) == 0
    b = (mask_probability(logits.detach())[:, 1] > 0.01).unsqueeze(1).expand_as(x)
    assert torch.count_nonzero(x.grad[b]) > 0  # features of kept cells learn from detection
    assert torch.count_nonzero(x.grad[~b]) == 0  # masked cells get nothing
    # the mask loss does reach the mask conv
    ffmm.zero_grad()
    _, logits = ffmm(x)
    nn.functional.cross_entropy(logits, torch.zeros(1, 6, 7, dtype=torch.long)).backward()
    assert torch.count_nonzero(ffmm.conv.weight.grad) > 0


def test_ffmm_masks_nothing_at_initialisation():
    torch.manual_seed(0)
    ffmm = FFMM(64)
    x = torch.relu(torch.randn(2, 64, 20, 20))  # post-BN/ReLU scale
    out, logits = ffmm(x)
    assert torch.equal(out, x)
    assert bool((mask_probability(logits)[:, 1] > 0.3).all())


def test_ffmm_mask_override():
    ffmm = FFMM(4)
    x = torch.ones(1, 4, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    out, logits = ffmm(x, mask=mask)
    torch.testing.assert_close(out, x * mask)
    assert logits.shape == (1, 2, 2, 2)


@pytest.mark.parametrize("channels", [64, 65, 256])
def test_fem_shapes_and_split(channels):
    fem = FEM(24, 48, channels=channels)
    out = fem(torch.randn(2, 24, 16, 12), torch.randn(2, 48, 8, 6))
    assert out.shape == (2, channels, 16, 12)
    widths = [fem.branch1[0].out_channels, fem.branch2[0].out_channels, fem.branch3[-1][0].out_channels]
    assert sum(widths) == channels and max(widths) - min(widths) <= 2
    assert [fem.branch1[0].dilation, fem.branch2[0].dilation, fem.branch3[0][0].dilation] == [(1, 1), (2, 2), (3, 3)]
    assert len(fem.branch3) == 2  # the third branch is two convs deep
    # 1x1 + BN + ReLU on both inputs
    assert fem.fine[0].kernel_size == (1, 1) and isinstance(fem.fine[1], nn.BatchNorm2d)


def test_fem_coarsest_fuses_with_itself_and_odd_sizes():
    fem = FEM(32, 32, channels=30, upsample="nearest")
    x = torch.randn(1, 32, 5, 3)
    assert fem(x, x).shape == (1, 30, 5, 3)
    fem = FEM(8, 8, channels=12)
    assert fem(torch.randn(1, 8, 5, 7), torch.randn(1, 8, 3, 4)).shape == (1, 12, 5, 7)  # exact size


def test_fem_product_of_the_two_levels():
    """A zero coarser map zeroes the product, so every branch sees only its biases."""
    fem = FEM(4, 4, channels=6, batch_norm=False).eval()
    with torch.no_grad():
        fem.coarse[0].weight.zero_()
        fem.coarse[1].bias.fill_(-1.0)  # BN shift: coarse = relu(-1) = 0
        out_a = fem(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4))
        out_b = fem(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4))
    torch.testing.assert_close(out_a, out_b)


def test_fem_errors():
    with pytest.raises(ValueError, match="three dilations"):
        FEM(8, 8, channels=12, dilations=(1, 2))
    with pytest.raises(ValueError, match="fem_upsample"):
        FEM(8, 8, channels=12, upsample="bicubic")


def _face_mask(seed=0, n=4, h=64, w=64, fraction=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, h, w, generator=g) < fraction).float()


def test_mcdm_drop_statistics():
    torch.manual_seed(1234)
    eta = 0.2
    mcdm = MCDM("drop", eta).train()
    g = _face_mask()
    x = torch.rand(4, 8, 64, 64) + 0.5  # all positive
    out = mcdm(x, g)
    zeroed = (out == 0).all(dim=1)  # whole feature vectors
    partly = ((out == 0).any(dim=1)) & ~zeroed
    assert not partly.any()
    background = g == 0
    assert not zeroed[background].any()  # no background cell is touched
    torch.testing.assert_close(out[background.unsqueeze(1).expand_as(x)], x[background.unsqueeze(1).expand_as(x)])
    n_face = int(g.sum())
    rate = zeroed[g == 1].float().mean().item()
    sigma = (eta * (1 - eta) / n_face) ** 0.5
    assert abs(rate - eta) < 5 * sigma, (rate, n_face)
    kept_face = (g == 1) & ~zeroed
    assert torch.equal(out.permute(0, 2, 3, 1)[kept_face], x.permute(0, 2, 3, 1)[kept_face])  # no rescaling


def test_mcdm_gt_mask_statistics():
    torch.manual_seed(5)
    mcdm = MCDM("gt-mask", 0.3).train()
    g = _face_mask(seed=3)
    x = torch.rand(4, 3, 64, 64) + 0.5
    out = mcdm(x, g)
    zeroed = (out == 0).all(dim=1)
    assert zeroed[g == 0].all()  # the literal reading zeroes background
    rate = zeroed[g == 1].float().mean().item()
    assert abs(rate - 0.3) < 0.03


def test_mcdm_identity_in_eval_or_without_masks():
    x = torch.randn(2, 4, 8, 8)
    g = torch.ones(2, 8, 8)
    mcdm = MCDM("drop", 1.0)
    assert mcdm.train()(x, None) is x
    assert mcdm.eval()(x, g) is x
    assert torch.equal(MCDM("gt-mask", 0.5).eval()(x, g), x)
    assert torch.count_nonzero(mcdm.train()(x, g)) == 0  # eta = 1 drops every face cell


def test_mcdm_errors():
    with pytest.raises(ValueError, match="mode"):
        MCDM("none")
    with pytest.raises(ValueError, match="mode"):
        MCDM("dropout")
    with pytest.raises(ValueError, match="eta"):
        MCDM("drop", 1.5)
