"""The detector: output shapes of every preset, anchor order, heads, MCDM/FFMM wiring, ONNX."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import ufssd
from ufssd.config import DetectorConfig, ModelConfig
from ufssd.model import RawOutput, UFSSD, build_model, normalize, pad_to_multiple
from ufssd.model.heads import LevelHead, flatten_cells, maxout_background
from ufssd.model.modules import mask_probability
from ufssd.presets import get_preset, list_presets

STRIDES = (4, 8, 16, 32, 64, 128)


def n_anchors(h, w):
    return sum((h // s) * (w // s) for s in STRIDES)


def _light(**model) -> DetectorConfig:
    return DetectorConfig(model=ModelConfig(backbone="light", channels=(8, 8, 16, 16, 16, 16), **model))


def test_anchor_count_640():
    assert n_anchors(640, 640) == 34_125


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_output_shapes(name):
    cfg = get_preset(name)
    light = cfg.model.backbone == "light"
    h, w = (640, 640) if light else (128, 128)
    model = build_model(name).eval()
    assert model.config is cfg
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    assert isinstance(out, RawOutput)
    a = n_anchors(h, w)
    assert out.cls_logits.shape == (1, a, 2)
    assert out.box_deltas.shape == (1, a, 4)
    assert len(out.mask_logits) == len(cfg.model.ffmm_levels)
    for level, logits in zip(cfg.model.ffmm_levels, out.mask_logits):
        assert logits.shape == (1, 2, h // STRIDES[level], w // STRIDES[level])
    if light:
        assert a == 34_125


# the rows of Tables 1 and 2: suffix -> (ffmm_levels, fem_levels, mcdm_mode, mcdm_eta, mcdm_levels)
TABLE_ROWS = {
    "": ((), (), "none", 0.10, (0,)),
    "_ffmm_x1": ((0,), (), "none", 0.10, (0,)),
    "_ffmm_x6": ((0, 1, 2, 3, 4, 5), (), "none", 0.10, (0,)),
    "_fem": ((), (0, 1, 2, 3, 4, 5), "none", 0.10, (0,)),
    "_fem_mcdm_b_eta0.10": ((), (0, 1, 2, 3, 4, 5), "drop", 0.10, (0,)),
    "_fem_mcdm_b_eta0.20": ((), (0, 1, 2, 3, 4, 5), "drop", 0.20, (0,)),
    "_fem_mcdm_b_eta0.30": ((), (0, 1, 2, 3, 4, 5), "drop", 0.30, (0,)),
}


@pytest.mark.parametrize("suffix", list(TABLE_ROWS))
def test_light_rows_derive_from_the_vgg16_rows(suffix):
    light, vgg = get_preset("ufssd_light" + suffix), get_preset("ufssd_vgg16" + suffix)
    m = light.model
    assert (m.ffmm_levels, m.fem_levels, m.mcdm_mode, m.mcdm_eta, m.mcdm_levels) == TABLE_ROWS[suffix]
    # the only differences to the VGG-16 row: the backbone and its FEM width
    assert m == dataclasses.replace(vgg.model, backbone="light", fem_channels=24)
    # everything but the model is the same in every light row (the ablation's equal budget)
    base = get_preset("ufssd_light")
    assert dataclasses.replace(light, name=base.name, model=base.model) == base


@pytest.mark.parametrize("suffix", ["_fem", "_fem_mcdm_b_eta0.10"])
def test_light_fem_width_reaches_the_heads(suffix):
    model = build_model("ufssd_light" + suffix)
    assert sorted(model.fem) == [str(l) for l in range(6)]
    assert all(fem.out_channels == 24 for fem in model.fem.values())
    params = sum(p.numel() for p in model.parameters())
    assert 150_000 < params < 170_000  # 159,662: FEM adds about a third to the 117k backbone + heads


def test_light_mcdm_row_drops_face_cells_in_training_only():
    torch.manual_seed(0)
    model = build_model("ufssd_light_fem_mcdm_b_eta0.30")
    images = torch.randn(2, 3, 256, 256)
    masks = [torch.ones(2, 64, 64)]  # level 0 only: MCDM-B
    model.eval()
    with torch.no_grad():
        a = model(images, gt_masks=masks).cls_logits
        b = model(images).cls_logits
    assert torch.equal(a, b)  # identity in eval mode
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        c = model(images, gt_masks=masks).cls_logits
        torch.manual_seed(1)
        d = model(images).cls_logits
    assert not torch.equal(c, d)  # training with G = 1 everywhere: some level-0 cells dropped


@pytest.mark.parametrize("name", ["ufssd_light_ffmm_x1", "ufssd_vgg16_ffmm_x6"])
def test_non_square_input(name):
    model = build_model(name).eval()
    h, w = 256, 128
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w))
    assert out.cls_logits.shape == (2, n_anchors(h, w), 2)
    assert out.box_deltas.shape == (2, n_anchors(h, w), 4)
    assert out.mask_logits[0].shape == (2, 2, 64, 32)


def test_build_model_accepts_config_and_lazy_top_level():
    cfg = _light()
    assert build_model(cfg).config is cfg
    assert ufssd.build_model is build_model
    with pytest.raises(KeyError, match="unknown preset"):
        build_model("no_such_preset")
    with pytest.raises(TypeError):
        build_model(3)


def test_config_validation():
    with pytest.raises(ValueError, match="gt-mask-ffmm"):
        UFSSD(_light(mcdm_mode="gt-mask-ffmm", mcdm_levels=(0,)))
    with pytest.raises(ValueError, match="ffmm_levels"):
        UFSSD(_light(ffmm_levels=(6,)))
    with pytest.raises(ValueError, match="mcdm_mode"):
        UFSSD(_light(mcdm_mode="dropout"))
    for bad in ((6,), (-1,), (0, 0)):
        with pytest.raises(ValueError, match=r"ModelConfig\.separable_head_levels .*got"):
            UFSSD(_light(separable_head_levels=bad))


def test_input_validation():
    model = build_model(_light()).eval()
    with pytest.raises(ValueError, match="multiples of 128"):
        model(torch.zeros(1, 3, 480, 640))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(1, 4, 128, 128))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(3, 128, 128))
    mcdm = build_model(_light(mcdm_mode="drop", mcdm_levels=(0,))).train()
    with pytest.raises(ValueError, match="one"):
        mcdm(torch.zeros(2, 3, 128, 128), gt_masks=[])
    with pytest.raises(ValueError, match="shape"):
        mcdm(torch.zeros(2, 3, 128, 128), gt_masks=[torch.zeros(2, 16, 16)])


def test_maxout_background():
    logits = torch.tensor([1.0, 5.0, 2.0, 3.0]).view(1, 4, 1, 1)  # 3 background, then face
    torch.testing.assert_close(maxout_background(logits, 3).flatten(), torch.tensor([5.0, 3.0]))
    head = LevelHead(8, num_background=3)
    assert head.cls.out_channels == 4
    cls, box = head(torch.randn(2, 8, 3, 5))
    assert cls.shape == (2, 15, 2) and box.shape == (2, 15, 4)


def test_heads_use_maxout_only_on_level_0():
    model = build_model(_light())
    assert [h.cls.out_channels for h in model.heads] == [4, 2, 2, 2, 2, 2]
    model = build_model(dataclasses.replace(_light(), model=dataclasses.replace(_light().model, maxout_background=1)))
    assert model.heads[0].cls.out_channels == 2


def test_separable_head_has_the_plain_heads_outputs():
    """Same output shapes and max-out as the plain head; depthwise 3x3 + BN + ReLU, then 1x1."""
    torch.manual_seed(0)
    x = torch.randn(2, 24, 6, 10)
    plain, separable = LevelHead(24, 3), LevelHead(24, 3, separable=True).eval()
    (cls_p, box_p), (cls_s, box_s) = plain(x), separable(x)
    assert cls_s.shape == cls_p.shape == (2, 60, 2) and box_s.shape == box_p.shape == (2, 60, 4)
    assert plain.depthwise is None and plain.cls.kernel_size == (3, 3)
    assert separable.cls.kernel_size == separable.box.kernel_size == (1, 1)
    assert separable.depthwise[0].groups == 24 and isinstance(separable.depthwise[1], torch.nn.BatchNorm2d)
    assert separable.cls.bias[-1] == plain.cls.bias[-1]  # the same face prior
    # hand-worked: an identity depthwise (centre tap 1, BN at its initial statistics) leaves
    # relu(x); the 1x1 class conv then reads one cell: background = max of its 3 logits
    with torch.no_grad():
        separable.depthwise[0].weight.zero_()
        separable.depthwise[0].weight[:, 0, 1, 1] = 1.0
        separable.cls.weight.zero_()
        separable.cls.bias.zero_()
        separable.cls.weight[:3, 0, 0, 0] = torch.tensor([1.0, 2.0, -1.0])  # 3 background logits
        separable.cls.weight[3, 1, 0, 0] = 1.0  # face logit = channel 1
        cell = torch.zeros(1, 24, 1, 1)
        cell[0, 0], cell[0, 1] = 0.5, -3.0  # channel 1 is cut by the ReLU
        cls, box = separable(cell)
    bn_scale = 1.0 / (1.0 + separable.depthwise[1].eps) ** 0.5
    torch.testing.assert_close(cls.flatten(), torch.tensor([1.0 * bn_scale, 0.0]))
    assert box.shape == (1, 1, 4)


def test_separable_head_levels_change_only_their_heads():
    plain, sep = build_model(_light()).eval(), build_model(_light(separable_head_levels=(0, 3))).eval()
    assert [h.depthwise is not None for h in sep.heads] == [True, False, False, True, False, False]
    assert [h.cls.out_channels for h in sep.heads] == [4, 2, 2, 2, 2, 2]  # max-out kept at level 0
    extra = set(sep.state_dict()) - set(plain.state_dict())
    assert set(plain.state_dict()) <= set(sep.state_dict())
    assert extra and all(k.startswith(("heads.0.depthwise.", "heads.3.depthwise.")) for k in extra)
    x = torch.randn(1, 3, 128, 256)
    with torch.no_grad():
        a, b = plain(x), sep(x)
    assert a.cls_logits.shape == b.cls_logits.shape and a.box_deltas.shape == b.box_deltas.shape


def test_flatten_cells_row_major():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)  # channel c at (i, j)
    flat = flatten_cells(x)
    assert flat.shape == (1, 12, 2)
    assert flat[0, :, 0].tolist() == list(range(12))  # cell index i * W + j
    assert flat[0, 5].tolist() == [5.0, 17.0]


def test_anchor_order_level_then_row_major():
    """Box deltas are made to read (level, i, j) to check the A axis order end to end."""
    model = build_model(_light()).eval()
    h, w = 256, 384
    with torch.no_grad():
        for level, head in enumerate(model.heads):
            head.box.weight.zero_()
            head.box.bias.copy_(torch.tensor([float(level), 0.0, 0.0, 0.0]))
        out = model(torch.randn(1, 3, h, w))
    expected_levels = torch.cat([torch.full(((h // s) * (w // s),), float(l)) for l, s in enumerate(STRIDES)])
    torch.testing.assert_close(out.box_deltas[0, :, 0], expected_levels)
    # row-major inside a level: reproduce level 1 from its head on the backbone map
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, h, w))
        cls, _ = model.heads[1](feats[1])
        ref = model.heads[1].cls(feats[1])[0, :, 2, 5]  # cell (i=2, j=5)
    torch.testing.assert_close(cls[0, 2 * (w // 8) + 5], ref)


def test_initial_face_probability_prior():
    torch.manual_seed(0)
    model = build_model("ufssd_light").eval()
    with torch.no_grad():
        out = model(normalize(torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8), model.config.model))
    p = out.cls_logits.softmax(-1)[0, :, 1]
    level0 = (256 // 4) ** 2
    assert 0.005 < float(p[level0:].mean()) < 0.02
    assert float(p[:level0].max()) < 0.02


def test_ffmm_in_detector_masks_nothing_at_init_and_no_gradient_to_mask_conv():
    torch.manual_seed(0)
    model = build_model("ufssd_light_ffmm_x1").train()
    images = normalize(torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8), model.config.model)
    out = model(images)
    assert bool((mask_probability(out.mask_logits[0])[:, 1] > model.config.model.mask_threshold).all())
    stand_in = out.cls_logits.logsumexp(-1).mean() + out.box_deltas.pow(2).mean()
    stand_in.backward()
    mask_conv = model.ffmm["0"].conv
    assert mask_conv.weight.grad is None or torch.count_nonzero(mask_conv.weight.grad) == 0
    assert torch.count_nonzero(model.backbone.stem[0].weight.grad) > 0
    assert torch.count_nonzero(model.heads[0].cls.weight.grad) > 0


def test_mcdm_drop_in_detector_training_only():
    cfg = _light(mcdm_mode="drop", mcdm_eta=1.0, mcdm_levels=(0,))
    model = build_model(cfg)
    images = torch.randn(2, 3, 128, 256)
    g = [torch.ones(2, 32, 64)]
    level0 = 32 * 64
    model.train()
    with torch.no_grad():
        out = model(images, gt_masks=g)
    # every level-0 cell dropped: the level-0 head sees zeros, so its output is its bias
    expected = maxout_background(model.heads[0].cls.bias.view(1, -1, 1, 1), 3).flatten()
    torch.testing.assert_close(out.cls_logits[0, :level0], expected.expand(level0, 2))
    model.eval()
    with torch.no_grad():
        out_eval = model(images, gt_masks=g)
        out_none = model(images)
    assert out_eval.cls_logits[0, :level0].std(0).sum() > 0
    torch.testing.assert_close(out_eval.cls_logits, out_none.cls_logits)


def test_mcdm_gt_mask_ffmm_replaces_the_predicted_mask_in_training():
    cfg = _light(ffmm_levels=(0,), mcdm_mode="gt-mask-ffmm", mcdm_eta=0.0, mcdm_levels=(0,))
    model = build_model(cfg).train()
    images = torch.randn(2, 3, 128, 128)  # BatchNorm in training needs > 1 value at 1x1
    with torch.no_grad():
        out = model(images, gt_masks=[torch.zeros(2, 32, 32)])  # G = 0 everywhere: all masked
    expected = maxout_background(model.heads[0].cls.bias.view(1, -1, 1, 1), 3).flatten()
    torch.testing.assert_close(out.cls_logits[0, : 32 * 32], expected.expand(32 * 32, 2))
    assert out.mask_logits[0].std() > 0  # still predicted from the features
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert out.cls_logits[0, : 32 * 32].std(0).sum() > 0  # the predicted mask (all ones at init)


def test_normalize_and_pad():
    cfg = ModelConfig()
    images = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    out = normalize(images, cfg)
    assert out.dtype == torch.float32
    for c in range(3):
        torch.testing.assert_close(out[0, c, 0, 0], torch.tensor(-cfg.mean[c] / cfg.std[c]))
        torch.testing.assert_close(out[0, c, 0, 1], torch.tensor((1 - cfg.mean[c]) / cfg.std[c]))
    torch.testing.assert_close(normalize(images.float(), cfg), out)
    with pytest.raises(ValueError):
        normalize(torch.zeros(1, 1, 4, 4), cfg)
    x = torch.ones(1, 3, 100, 130)
    padded = pad_to_multiple(x, 128)
    assert padded.shape == (1, 3, 128, 256)
    assert torch.equal(padded[..., :100, :130], x)
    assert padded[..., 100:, :].abs().sum() == 0 and padded[..., :, 130:].abs().sum() == 0
    assert pad_to_multiple(torch.ones(2, 3, 128, 256), 128).shape == (2, 3, 128, 256)


def test_fuse_batchnorm_same_outputs():
    from ufssd.model import fuse_batchnorm

    torch.manual_seed(0)
    model = build_model("ufssd_light_ffmm_x1").train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            model(torch.randn(2, 3, 128, 128))
    model.eval()
    fused = fuse_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(1, 3, 256, 128)
    with torch.no_grad():
        a, b = model(x), fused(x)
    torch.testing.assert_close(a.cls_logits, b.cls_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.mask_logits[0], b.mask_logits[0], rtol=1e-4, atol=1e-4)


def test_onnx_export_dynamic_shapes(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = build_model("ufssd_light_ffmm_x1").eval()
    path = tmp_path / "light.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 128, 256),),
        str(path),
        input_names=["images"],
        output_names=["cls_logits", "box_deltas", "mask_logits_0"],
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 128, 256), (2, 3, 384, 256)]:
        x = torch.randn(*shape)
        cls, box, mask = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            ref = model(x)
        assert cls.shape == tuple(ref.cls_logits.shape)
        torch.testing.assert_close(torch.from_numpy(cls), ref.cls_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.from_numpy(box), ref.box_deltas, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.from_numpy(mask), ref.mask_logits[0], rtol=1e-4, atol=1e-4)


def test_everything_on_trains_end_to_end():
    """FEM, FFMM and MCDM on every level of a small light network: one training step's backward."""
    levels = (0, 1, 2, 3, 4, 5)
    cfg = _light(fem_levels=levels, fem_channels=12, ffmm_levels=levels, mcdm_mode="drop", mcdm_levels=(0, 1))
    model = build_model(cfg).train()
    assert model.level_channels == (12,) * 6
    h, w = 256, 128
    g = [(torch.rand(2, h // s, w // s) < 0.3).float() for s in (4, 8)]
    out = model(torch.randn(2, 3, h, w), gt_masks=g)
    assert [tuple(m.shape[-2:]) for m in out.mask_logits] == [(h // s, w // s) for s in STRIDES]
    mask_loss = sum(torch.nn.functional.cross_entropy(m, torch.zeros_like(m[:, 0], dtype=torch.long)) for m in out.mask_logits)
    (out.cls_logits.logsumexp(-1).mean() + out.box_deltas.abs().mean() + mask_loss).backward()
    for l in levels:
        assert torch.count_nonzero(model.ffmm[str(l)].conv.weight.grad) > 0
        assert torch.count_nonzero(model.fem[str(l)].branch3[1][0].weight.grad) > 0


# ---------------------------------------------------------------------------------------------
# the default network is unchanged by the v4 fields (issue 17); the v4 candidates

SHIPPED = Path(ufssd.__file__).parent / "weights" / "default.safetensors"


def _pattern_input(h: int = 128, w: int = 256) -> torch.Tensor:
    """A fixed (1, 3, h, w) input that needs no random generator."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([torch.sin(xx / 7.0 + c) * torch.cos(yy / 5.0 - c) * 2.0 for c in range(3)])[None]


@pytest.fixture(scope="module")
def shipped_default():
    if not SHIPPED.is_file():
        pytest.skip(f"{SHIPPED} missing")
    from safetensors.torch import load_file

    model = build_model("ufssd_light_ffmm_x1").eval()
    model.load_state_dict(load_file(str(SHIPPED)), strict=True)  # same keys and shapes, nothing extra
    return model


def test_shipped_weights_load_strictly_into_the_default_preset(shipped_default):
    keys = shipped_default.backbone.state_dict().keys()
    assert not any(k.startswith(("downsamples", "smooth_up")) for k in keys)
    assert sum(p.numel() for p in shipped_default.parameters()) == 117_424


def test_default_forward_unchanged(shipped_default):
    """Sums of the shipped network's outputs on a fixed input. First recorded (with v3's weights)
    before the v4 fields (light_blocks, light_topdown, light_bottomup) were added: their defaults
    are that network. Re-recorded when v3.1 shipped, on the same network code that v3's values
    passed (a new default model changes these numbers, not the code)."""
    with torch.no_grad():
        cls, box, (mask,) = shipped_default(_pattern_input())
    assert cls.shape == (1, 2730, 2) and mask.shape == (1, 2, 32, 64)
    recorded = {
        "cls": (-7946.393501639366, 9385.878973960876),
        "box": (244.2850837688893, 6754.885876810178),
        "mask": (28.051295936107635, None),
    }
    for name, t in (("cls", cls), ("box", box), ("mask", mask)):
        total, absolute = recorded[name]
        assert float(t.double().sum()) == pytest.approx(total, rel=1e-5, abs=1e-3), name
        if absolute is not None:
            assert float(t.double().abs().sum()) == pytest.approx(absolute, rel=1e-5), name
    torch.testing.assert_close(
        cls[0, :3], torch.tensor([[0.28638613, -3.07783794], [0.57935548, -3.09833956], [0.34781373, -2.95843124]])
    )


V4 = [n for n in list_presets() if n.startswith("ufssd_light_v4_")]
V4_FIELDS = {"channels", "light_blocks", "light_topdown", "light_bottomup", "separable_head_levels"}


def test_v4_candidates_change_only_the_small_face_levels_or_the_neck():
    assert len(V4) >= 5
    base = get_preset("ufssd_light_ffmm_x1")
    for name in V4:
        cfg = get_preset(name)
        assert cfg.model.ffmm_levels == (0,)  # FFMM-x1, as the default
        changed = {f.name for f in dataclasses.fields(cfg.model) if getattr(cfg.model, f.name) != getattr(base.model, f.name)}
        assert changed and changed <= V4_FIELDS, (name, changed)
        # everything but the model is the default's (the equal budget of the comparison)
        assert dataclasses.replace(cfg, name=base.name, model=base.model) == base


def test_v4_pan_neck_trains():
    """One backward pass of the full FPN + PAN neck reaches its coarsest fusions."""
    model = build_model("ufssd_light_v4_pan").train()
    out = model(torch.randn(2, 3, 128, 128))
    (out.cls_logits.logsumexp(-1).mean() + out.box_deltas.abs().mean()).backward()
    backbone = model.backbone
    assert len(backbone.laterals) == len(backbone.downsamples) == 5
    assert torch.count_nonzero(backbone.laterals[-1][0].weight.grad) > 0  # level 5 -> 4, top-down
    assert torch.count_nonzero(backbone.downsamples[-1][1][0].weight.grad) > 0  # level 4 -> 5, bottom-up
