"""Loss invariants: Eq. 5 with hard negative mining, Eq. 4 mean vs sum, no-face batches."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from ufssd.config import LossConfig
from ufssd.geometry import BACKGROUND, IGNORE, POSITIVE
from ufssd.losses import hard_negatives, mask_loss, ufssd_loss

CFG = LossConfig()


class Out(NamedTuple):  # duck-types the model's RawOutput
    cls_logits: torch.Tensor
    box_deltas: torch.Tensor
    mask_logits: tuple = ()


def _batch(n=2, a=200, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, a, 2, generator=gen)
    deltas = torch.randn(n, a, 4, generator=gen)
    targets = torch.randn(n, a, 4, generator=gen)
    labels = torch.zeros(n, a, dtype=torch.int64)
    return logits, deltas, targets, labels


def test_no_face_batch_is_finite_with_zero_loc():
    logits, deltas, targets, labels = _batch()
    logits.requires_grad_(True)
    deltas.requires_grad_(True)
    out = ufssd_loss(Out(logits, deltas), labels, targets, [], CFG)
    assert out["loc"].item() == 0.0
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    # 16 hardest negatives per image, lambda3 / N_conf with N_conf = 32
    bg = F.cross_entropy(logits.detach().reshape(-1, 2), torch.zeros(400, dtype=torch.long), reduction="none").view(2, 200)
    expected = CFG.lambda_conf * bg.topk(16, dim=1).values.sum() / 32
    assert out["cls"].item() == pytest.approx(expected.item(), rel=1e-5)
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all() and (deltas.grad == 0).all()


def test_hard_negative_count_is_three_times_positives():
    logits, deltas, targets, labels = _batch()
    labels[0, [3, 50]] = POSITIVE
    labels[1, 7] = POSITIVE
    labels[1, 10:20] = IGNORE
    ce = F.cross_entropy(logits.reshape(-1, 2), torch.zeros(400, dtype=torch.long), reduction="none").view(2, 200)
    neg = hard_negatives(ce, labels, 3, 16)
    assert neg.sum(dim=1).tolist() == [6, 3]
    assert not (neg & (labels != BACKGROUND)).any()
    # they are the highest-loss background anchors of each image
    masked = ce.masked_fill(labels != BACKGROUND, float("-inf"))
    assert set(torch.nonzero(neg[0]).flatten().tolist()) == set(masked[0].topk(6).indices.tolist())
    # and the cls term is lambda3 / (3 + 9) * (CE of positives + CE of mined negatives)
    pos_ce = F.cross_entropy(logits[labels == POSITIVE], torch.ones(3, dtype=torch.long), reduction="sum")
    out = ufssd_loss(Out(logits, deltas), labels, targets, [], CFG)
    assert out["cls"].item() == pytest.approx((CFG.lambda_conf * (pos_ce + ce[neg].sum()) / 12).item(), rel=1e-5)
    # loc: Smooth L1 (beta 1) summed over the 3 positives / 3
    pos = labels == POSITIVE
    loc = F.smooth_l1_loss(deltas[pos], targets[pos], reduction="sum") / 3
    assert out["loc"].item() == pytest.approx(loc.item(), rel=1e-6)


def test_negatives_capped_by_available_background():
    labels = torch.full((1, 10), IGNORE)
    labels[0, :2] = POSITIVE
    labels[0, 2:4] = BACKGROUND
    assert hard_negatives(torch.rand(1, 10), labels, 3, 16).sum() == 2


def test_perfect_logits_beat_wrong_ones():
    _, deltas, targets, labels = _batch()
    labels[:, :5] = POSITIVE
    face = (labels == POSITIVE).float()
    perfect = torch.stack([(1 - face) * 10, face * 10], -1)
    wrong = torch.stack([face * 10, (1 - face) * 10], -1)
    good = ufssd_loss(Out(perfect, targets.clone()), labels, targets, [], CFG)
    bad = ufssd_loss(Out(wrong, deltas), labels, targets, [], CFG)
    assert good["loss"] < bad["loss"]
    assert good["cls"] < 1e-3 and good["loc"] == 0


def test_ignore_anchors_contribute_nothing():
    logits, deltas, targets, labels = _batch(seed=1)
    labels[0, :4] = POSITIVE
    labels[:, 100:150] = IGNORE
    base = ufssd_loss(Out(logits, deltas), labels, targets, [], CFG)
    changed_logits, changed_deltas = logits.clone(), deltas.clone()
    changed_logits[:, 100:150] = torch.tensor([-50.0, 50.0])  # would be the hardest negatives
    changed_deltas[:, 100:150] = 99.0
    other = ufssd_loss(Out(changed_logits, changed_deltas), labels, targets, [], CFG)
    for key in ("loss", "cls", "loc"):
        assert other[key].item() == base[key].item()


def test_mask_loss_mean_vs_sum_and_weights():
    gen = torch.Generator().manual_seed(2)
    levels = [torch.randn(2, 2, 8, 6, generator=gen), torch.randn(2, 2, 4, 3, generator=gen)]
    gts = [(torch.rand(2, 8, 6, generator=gen) > 0.7).float(), (torch.rand(2, 4, 3, generator=gen) > 0.5).float()]
    mean = [mask_loss([l], [g], "mean") for l, g in zip(levels, gts)]
    total = [mask_loss([l], [g], "sum") for l, g in zip(levels, gts)]
    assert total[0].item() == pytest.approx(mean[0].item() * 48, rel=1e-5)
    assert total[1].item() == pytest.approx(mean[1].item() * 12, rel=1e-5)
    assert mask_loss(levels, gts, "mean").item() == pytest.approx((mean[0] + mean[1]).item(), rel=1e-6)
    ce = F.cross_entropy(levels[0], gts[0].long())
    assert mean[0].item() == pytest.approx(ce.item(), rel=1e-6)
    # in the total loss, weighted by lambda_mask
    logits, deltas, targets, labels = _batch(a=10)
    cfg = dataclasses.replace(CFG, lambda_mask=2.0, mask_reduction="sum")
    out = ufssd_loss(Out(logits, deltas, tuple(levels)), labels, targets, gts, cfg)
    assert out["mask"].item() == pytest.approx((total[0] + total[1]).item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx((2 * out["mask"] + out["cls"] + out["loc"]).item(), rel=1e-6)
    with pytest.raises(ValueError):
        mask_loss(levels, gts[:1])
    with pytest.raises(ValueError):
        mask_loss(levels, gts, "median")


def test_shape_mismatch_raises():
    logits, deltas, targets, labels = _batch()
    with pytest.raises(ValueError):
        ufssd_loss(Out(logits[:, :10], deltas), labels, targets, [], CFG)


# ---------------------------------------------------------------------------------------------
# the box fixes (docs/boxes.md): IoU box losses in the anchor frame, quality focal loss

from torchvision.ops import distance_box_iou_loss, generalized_box_iou_loss  # noqa: E402

from ufssd.config import AnchorConfig  # noqa: E402
from ufssd.geometry import decode, encode  # noqa: E402
from ufssd.losses import anchor_frame_boxes, box_loss, quality_focal_loss  # noqa: E402

CODING = AnchorConfig()


def _face_and_anchor_boxes():
    """Two faces of 100x130 and 300x380 px, each with a square anchor of its level, and a
    prediction 20 % too small and off-centre: the case the v3 diagnosis measured."""
    faces = torch.tensor([[50.0, 40.0, 150.0, 170.0], [200.0, 100.0, 500.0, 480.0]])
    anchors = torch.tensor([[36.0, 41.0, 164.0, 169.0], [222.0, 162.0, 478.0, 418.0]])
    c = (faces[:, :2] + faces[:, 2:]) / 2 + torch.tensor([[6.0, -4.0], [-15.0, 10.0]])
    wh = (faces[:, 2:] - faces[:, :2]) * 0.8
    pred = torch.cat([c - wh / 2, c + wh / 2], dim=1)
    return faces, anchors, pred


@pytest.mark.parametrize("kind,reference", [("giou", generalized_box_iou_loss), ("diou", distance_box_iou_loss)])
def test_iou_box_loss_in_the_anchor_frame_equals_the_pixel_loss(kind, reference):
    faces, anchors, pred = _face_and_anchor_boxes()
    t_face = encode(faces, anchors, CODING.variances)
    t_pred = encode(pred, anchors, CODING.variances)
    pixels = reference(pred, faces, reduction="sum")
    assert box_loss(t_pred, t_face, kind, CODING).item() == pytest.approx(pixels.item(), rel=1e-5)
    # and it is 0 for a perfect prediction, > 0.1 for this one
    assert box_loss(t_face, t_face, kind, CODING).item() == pytest.approx(0.0, abs=1e-6)
    assert pixels.item() > 0.1


def test_anchor_frame_boxes_is_decode_scaled_by_the_anchor_side():
    faces, anchors, _ = _face_and_anchor_boxes()
    t = encode(faces, anchors, CODING.variances)
    side = (anchors[:, 2] - anchors[:, 0])[:, None]
    centre = ((anchors[:, :2] + anchors[:, 2:]) / 2).repeat(1, 2)
    expected = (decode(t, anchors, CODING.variances, CODING.max_log_size) - centre) / side
    torch.testing.assert_close(anchor_frame_boxes(t, CODING), expected)


def test_unknown_loss_kinds_are_named_when_the_config_is_made():
    """Checked once, where the LossConfig is made (a preset, --set, a checkpoint's config), not
    on every training step."""
    from ufssd.config import LossConfig, config_from_dict, config_to_dict
    from ufssd.presets import get_preset

    with pytest.raises(ValueError, match="box loss 'iou2'"):
        LossConfig(box_loss="iou2")
    with pytest.raises(ValueError, match="class loss 'focal'"):
        dataclasses.replace(CFG, cls_loss="focal")
    data = config_to_dict(get_preset("ufssd_light"))
    data["loss"]["box_loss"] = "iou2"
    with pytest.raises(ValueError, match="box loss 'iou2'"):
        config_from_dict(data)


def test_every_configurable_loss_kind_is_implemented():
    from ufssd.config import BOX_LOSS_KINDS, CLS_LOSS_KINDS
    from ufssd.losses import BOX_LOSSES

    assert set(BOX_LOSS_KINDS) == {"smooth_l1", *BOX_LOSSES}
    logits, deltas, targets, labels = _batch()
    labels[:, :10] = POSITIVE
    for box in BOX_LOSS_KINDS:
        for cls in CLS_LOSS_KINDS:
            cfg = dataclasses.replace(CFG, box_loss=box, cls_loss=cls)
            out = ufssd_loss(Out(logits, deltas), labels, targets, [], cfg)
            assert torch.isfinite(out["loss"]), (box, cls)


def test_the_unit_anchor_is_made_once_per_device_and_dtype():
    from ufssd.losses import _unit_anchor

    a = _unit_anchor(torch.device("cpu"), torch.float32)
    assert _unit_anchor(torch.device("cpu"), torch.float32) is a
    assert _unit_anchor(torch.device("cpu"), torch.float64).dtype == torch.float64
    assert a.tolist() == [-0.5, -0.5, 0.5, 0.5]


def test_quality_focal_loss_hand_computed():
    # one anchor: logits (0, log 3) -> p = 0.75, target q = 0.5, beta 2
    logits = torch.tensor([[[0.0, float(torch.log(torch.tensor(3.0)))]]])
    q = torch.tensor([[0.5]])
    used = torch.tensor([[True]])
    expected = 0.25**2 * -(0.5 * torch.log(torch.tensor(0.25)) + 0.5 * torch.log(torch.tensor(0.75)))
    assert quality_focal_loss(logits, q, used, 2.0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert quality_focal_loss(logits, q, ~used, 2.0).item() == 0.0


def test_easy_negatives_learn_only_with_qfl():
    """The level-0 score floor of v3 (docs/boxes.md): with hard-negative mining, a background
    anchor that is not among the 3 x P hardest gets no gradient at all, whatever its score; QFL
    pushes every background anchor down. 1 positive, 3 hard negatives, 96 easy ones at p = 0.16."""
    a = 100
    labels = torch.full((1, a), BACKGROUND, dtype=torch.int64)
    labels[0, 0] = POSITIVE
    logits = torch.zeros(1, a, 2)
    logits[0, :, 1] = float(torch.logit(torch.tensor(0.16)))  # easy negatives, p = 0.16
    logits[0, 1:4, 1] = 3.0  # hard negatives
    logits[0, 0, 1] = 3.0
    deltas = torch.zeros(1, a, 4)
    targets = torch.zeros(1, a, 4)
    grads = {}
    for kind in ("ce", "qfl"):
        x = logits.clone().requires_grad_(True)
        ufssd_loss(Out(x, deltas), labels, targets, [], dataclasses.replace(CFG, cls_loss=kind))["loss"].backward()
        grads[kind] = x.grad[0, 4:, 1]
    assert torch.all(grads["ce"] == 0)
    assert torch.all(grads["qfl"] > 0)  # gradient descent lowers their face logit


def test_qfl_target_is_the_predicted_box_iou():
    """The class term of a positive vanishes where its face probability equals its box's IoU:
    1 for a perfect box, the IoU (about 0.6) for the 20 %-too-small box."""
    faces, anchors, pred = _face_and_anchor_boxes()
    t_face = encode(faces[1:], anchors[1:], CODING.variances)[None]
    t_pred = encode(pred[1:], anchors[1:], CODING.variances)[None]
    iou = __import__("torchvision").ops.box_iou(pred[1:], faces[1:])[0, 0].item()
    assert 0.5 < iou < 0.7
    labels = torch.full((1, 1), POSITIVE, dtype=torch.int64)
    cfg = dataclasses.replace(CFG, cls_loss="qfl", lambda_conf=1.0)

    def cls_term(deltas, p):
        logits = torch.tensor([[[0.0, float(torch.logit(torch.tensor(p)))]]])
        return ufssd_loss(Out(logits, deltas), labels, t_face, [], cfg)["cls"].item()

    assert cls_term(t_face, 0.9999) < 1e-6
    assert cls_term(t_pred, iou) < 1e-9
    assert cls_term(t_pred, 0.99) > 0.1  # a confident score on a poor box is penalised
