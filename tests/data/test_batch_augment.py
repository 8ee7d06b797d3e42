"""The batched augmentation (torch ops, CPU tensors here): hand-worked crop+resize and flip, the
centre rule, the retry fallback, and the same distributions as the CPU path on real images."""

from __future__ import annotations

import dataclasses
import inspect

import cv2
import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from ufssd.config import TrainConfig
from ufssd.data import augment, crop_boxes, load_image, photometric_distort, read_split, sample_crop
from ufssd.data.batch_augment import (
    augment_batch,
    crop_faces,
    crop_resize,
    draw_photometric,
    flip_batch,
    hsv_to_rgb,
    pad_boxes,
    pad_images,
    photometric_distort_batch,
    rgb_to_hsv,
    sample_windows,
)

CFG = TrainConfig(resolution=96, photometric=False, min_face_px=0.0)


def _ramp_image(h: int, w: int) -> torch.Tensor:
    """(1, 3, h, w) float: pixel (y, x) = 10 y + x in every channel (bilinear is exact on it)."""
    y = torch.arange(h, dtype=torch.float32)[:, None]
    x = torch.arange(w, dtype=torch.float32)[None, :]
    return (10 * y + x).expand(3, h, w)[None].contiguous()


def test_crop_resize_hand_worked() -> None:
    image = _ramp_image(6, 8)
    # window x 2..6, y 1..5 (side 4) -> 2 x 2: samples at x = 2 + (j + 0.5) * 2 - 0.5 = 2.5, 4.5
    # and y = 1.5, 3.5, so the pixels are 10 y + x
    out = crop_resize(image, torch.tensor([[2, 1, 6, 5]]), 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([[17.5, 19.5], [37.5, 39.5]]))
    # the whole 8 x 6 image -> 4 x 4 (the fallback window, aspect changes): x at 0.5, 2.5, 4.5,
    # 6.5 (step 2), y at 0.25, 1.75, 3.25, 4.75 (step 1.5)
    out = crop_resize(image, torch.tensor([[0, 0, 8, 6]]), 4)
    xs, ys = torch.tensor([0.5, 2.5, 4.5, 6.5]), torch.tensor([0.25, 1.75, 3.25, 4.75])
    torch.testing.assert_close(out[0, 2], 10 * ys[:, None] + xs[None, :])
    # upsampling the top-left 2 x 2 to 4 x 4: samples at -0.25, 0.25, 0.75, 1.25; the one left of
    # (above) the image is clamped to pixel 0, as cv2's border replicate does
    out = crop_resize(image, torch.tensor([[0, 0, 2, 2]]), 4)
    s = torch.tensor([0.0, 0.25, 0.75, 1.25])
    torch.testing.assert_close(out[0, 1], 10 * s[:, None] + s[None, :])
    # cv2 on the crop agrees except in the last row and column: its sample 1.25 is clamped to
    # the crop's edge pixel 1, where roi_align reads the image beyond the crop (documented)
    crop = image[0, 0, :2, :2].numpy()
    expected = cv2.resize(crop, (4, 4), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out[0, 1, :3, :3].numpy(), expected[:3, :3], atol=1e-5)
    assert (out[0, 1, 0, 3].item(), expected[0, 3]) == (1.25, 1.0)


def test_padding_repeats_the_edge() -> None:
    small = _ramp_image(4, 4)[0].to(torch.uint8)  # a 4 x 4 image padded to 6 x 7 by a bigger one
    images, sizes = pad_images([torch.zeros((3, 6, 7), dtype=torch.uint8), small])
    assert sizes.tolist() == [[6, 7], [4, 4]]
    np.testing.assert_array_equal(images[1, 0, :, 4:].numpy(), [[v] * 3 for v in (3, 13, 23, 33, 33, 33)])
    # upsampling the bottom-right 2 x 2 (x, y 2..4): the last samples (3.25) stay on pixel 3 as
    # cv2 clamps at the crop's edge, instead of blending with the padding
    out = crop_resize(images, torch.tensor([[0, 0, 7, 6], [2, 2, 4, 4]]), 4)
    s = torch.tensor([1.75, 2.25, 2.75, 3.0])
    torch.testing.assert_close(out[1, 0], 10 * s[:, None] + s[None, :])


def test_crop_resize_matches_cv2_when_downsampling() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    windows = torch.tensor([[0, 0, 90, 90], [17, 5, 81, 69], [30, 2, 110, 82]])
    out = crop_resize(torch.from_numpy(image).permute(2, 0, 1)[None].expand(3, -1, -1, -1), windows, 40)
    for n, (x0, y0, x1, y1) in enumerate(windows.tolist()):
        expected = cv2.resize(image[y0:y1, x0:x1], (40, 40), interpolation=cv2.INTER_LINEAR)
        got = out[n].round().permute(1, 2, 0).numpy()
        assert np.abs(got - expected).max() <= 1  # cv2 rounds its weights to 11 bits


def test_crop_faces_centre_rule(centre_rule_case) -> None:
    window, boxes, ignore = centre_rule_case
    b, i, p = pad_boxes([torch.from_numpy(boxes)], [torch.from_numpy(ignore)])
    out, out_ignore, kept = crop_faces(b, i, p, torch.tensor([window]))
    assert kept[0].tolist() == [False, False, True, True, True]
    assert out_ignore[0].tolist() == [True, True, False, False, True]
    expected, expected_ignore = crop_boxes(boxes, ignore, window)
    np.testing.assert_array_equal(out[0, kept[0]].numpy(), expected)
    np.testing.assert_array_equal(out_ignore[0, kept[0]].numpy(), expected_ignore)
    np.testing.assert_array_equal(out[0, ~kept[0]].numpy(), np.zeros((2, 4)))


def test_sample_windows_retries_and_fallback() -> None:
    sizes = torch.tensor([[60, 100]] * 3)
    boxes = torch.tensor(
        [
            [[100.0, 10.0, 120.0, 30.0]],  # valid face whose centre (110, 20) is outside the image
            [[10.0, 10.0, 20.0, 20.0]],  # ignored face only: the first draw is taken
            [[0.0, 0.0, 0.0, 0.0]],  # padding only (no face): the first draw is taken
        ]
    )
    ignore = torch.tensor([[False], [True], [True]])
    present = torch.tensor([[True], [True], [False]])
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        w = sample_windows(sizes, boxes, ignore, present, g, 0.3, 0.9, retries=5)
        assert w[0].tolist() == [0, 0, 100, 60]  # every retry missed: the whole image
        side = w[1:, 2] - w[1:, 0]
        assert ((side == w[1:, 3] - w[1:, 1]) & (side >= 18) & (side <= 54)).all()
        assert ((w[1:, :2] >= 0) & (w[1:, 2:3] <= 100) & (w[1:, 3:] <= 60)).all()
    with pytest.raises(ValueError, match="crop_min"):
        sample_windows(sizes, boxes, ignore, present, torch.Generator(), 0.0, 1.0)


def test_sample_windows_retry_statistics_match_the_cpu_path() -> None:
    # a face near the top-left corner of a wide image: few windows hold its centre (7, 7), so
    # the retries often all miss; the fallback rate and the kept windows follow the CPU path's
    n, height, width = 400, 100, 400
    face, ignore = np.array([[2.0, 2.0, 12.0, 12.0]], np.float32), np.array([False])
    cpu = np.array([sample_crop(height, width, face, ignore, np.random.default_rng(k)) for k in range(n)])
    sizes = torch.tensor([[height, width]] * n)
    b, i, p = pad_boxes([torch.from_numpy(face)] * n, [torch.from_numpy(ignore)] * n)
    w = sample_windows(sizes, b, i, p, torch.Generator().manual_seed(0), 0.3, 1.0, 50).numpy()
    fallback_cpu, fallback = (cpu[:, 2] == width).mean(), (w[:, 2] == width).mean()
    pooled = (fallback_cpu + fallback) / 2
    assert abs(fallback - fallback_cpu) < 3 * np.sqrt(2 * pooled * (1 - pooled) / n)  # |z| < 3
    hit = w[w[:, 2] < width]
    assert ((hit[:, :2] <= 7) & (hit[:, 2:] > 7)).all()  # every kept window holds the centre
    hit_cpu = cpu[cpu[:, 2] < width]
    assert ks_2samp(hit[:, 2] - hit[:, 0], hit_cpu[:, 2] - hit_cpu[:, 0]).pvalue > 0.01


def test_flip_batch_hand_worked() -> None:
    images = torch.arange(2 * 1 * 2 * 4, dtype=torch.float32).view(2, 1, 2, 4)
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 2.0], [0, 0, 0, 0]], [[1.0, 0.0, 2.0, 1.0], [0, 0, 0, 0]]])
    present = torch.tensor([[True, False], [True, False]])
    out, out_boxes = flip_batch(images, boxes, present, torch.tensor([True, False]))
    torch.testing.assert_close(out[0, 0], torch.tensor([[3.0, 2, 1, 0], [7, 6, 5, 4]]))
    torch.testing.assert_close(out[1], images[1])
    torch.testing.assert_close(out_boxes[0], torch.tensor([[3.0, 0, 4, 2], [0, 0, 0, 0]]))  # x -> 4 - x
    torch.testing.assert_close(out_boxes[1], boxes[1])


def _white_box(h: int, w: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    image = torch.zeros((3, h, w), dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255
    return image


def _white_extent(image: torch.Tensor) -> np.ndarray:
    ys, xs = np.nonzero(image[0].numpy() > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("flip_p", [0.0, 0.5, 1.0])
def test_boxes_follow_pixels(flip_p: float) -> None:
    box = (70, 30, 130, 110)
    n = 12
    images, sizes = pad_images([_white_box(160, 240, box)] * n)
    b, i, p = pad_boxes([torch.tensor([box], dtype=torch.float32)] * n, [torch.tensor([False])] * n)
    cfg = dataclasses.replace(CFG, flip_p=flip_p)
    out = augment_batch(images, sizes, b, i, p, torch.Generator().manual_seed(1), cfg)
    assert out.images.shape == (n, 3, 96, 96) and out.images.dtype == torch.uint8
    assert out.present.all() and not out.ignore.any()  # the only face: its centre is always kept
    if flip_p in (0.0, 1.0):
        assert out.flipped.tolist() == [flip_p == 1.0] * n
    else:  # 12 draws at p = 0.5 with this seed: both sides occur (all-equal has p = 2 / 4096)
        assert 0 < int(out.flipped.sum()) < n
    for k in range(n):
        np.testing.assert_allclose(_white_extent(out.images[k]), out.boxes[k, 0].numpy(), atol=1.5)


def test_same_seed_same_batch_and_small_faces_ignored() -> None:
    images, sizes = pad_images([_white_box(160, 240, (70, 30, 130, 110)), _white_box(90, 70, (5, 5, 9, 9))])
    faces = [torch.tensor([[70.0, 30, 130, 110]]), torch.tensor([[5.0, 5, 9, 9]])]
    b, i, p = pad_boxes(faces, [torch.tensor([False])] * 2)
    cfg = TrainConfig(resolution=32, min_face_px=4.0, crop_min=1.0)  # face 2 becomes ~1.8 px
    runs = [augment_batch(images, sizes, b, i, p, torch.Generator().manual_seed(s), cfg) for s in (7, 7, 8)]
    for x, y in zip(runs[0], runs[1]):
        torch.testing.assert_close(x, y)
    assert not torch.equal(runs[0].images, runs[2].images)
    assert runs[0].ignore[:, 0].tolist() == [False, True]


def test_photometric_defaults_are_the_cpu_paths() -> None:
    cpu = inspect.signature(photometric_distort).parameters
    for name, param in inspect.signature(draw_photometric).parameters.items():
        if name in cpu:
            assert param.default == cpu[name].default, name


def test_hsv_matches_cv2_and_round_trips() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (1, 500, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    h, s, v = rgb_to_hsv(x)
    ref = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL).astype(np.float64)
    dh = np.abs(h[0].numpy() * 256 - ref[..., 0])
    assert np.minimum(dh, 256 - dh).max() <= 1.0
    assert np.abs(s[0].numpy() * 255 - ref[..., 1]).max() <= 1.0
    assert np.abs(v[0].numpy() * 255 - ref[..., 2]).max() <= 1e-3
    torch.testing.assert_close(hsv_to_rgb(h, s, v), x, atol=1e-5, rtol=0)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)  # hue + 1/3 turn: red -> green
    h, s, v = rgb_to_hsv(red)
    torch.testing.assert_close(hsv_to_rgb(h + 1 / 3, s, v).flatten(), torch.tensor([0.0, 1.0, 0.0]))


# ---------------------------------------------------------------------------------------------
# the same distributions as the CPU path, on real images

NAMES = (  # 1, 4, 15 and 57 faces: the 10th, 50th, 80th and 95th percentiles of the subset
    "13--Interview/13_Interview_Interview_On_Location_13_944",
    "13--Interview/13_Interview_Interview_On_Location_13_970",
    "1--Handshaking/1_Handshaking_Handshaking_1_171",
    "2--Demonstration/2_Demonstration_Political_Rally_2_477",
)
DRAWS = 240
P_MIN = 0.01  # each KS test fails by chance with p < 0.01; the seeds are fixed, so the test is too


@pytest.fixture(scope="module")
def real_samples(widerface_dir):
    samples = {s.name: s for s in read_split(widerface_dir, "train", subset=NAMES)}
    return [samples[name] for name in NAMES]


def _cpu_draws(image, sample, cfg):
    """Faces kept per draw and the mean size (sqrt of the area, after the resize) of each draw's
    kept faces (one number per draw: the faces of a draw share its scale, so they are not
    independent samples)."""
    counts, sizes = [], []
    for k in range(DRAWS):
        _, boxes, _ = augment(image, sample.boxes, sample.ignore, np.random.default_rng(k), cfg)
        counts.append(len(boxes))
        if len(boxes):
            sizes.append(np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)).mean())
    return np.array(counts), np.array(sizes)


def _batch_draws(image, sample, cfg):
    """As :func:`_cpu_draws`, all draws in one batch drawing from one resident image."""
    src, sizes = pad_images([torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))])
    b, i, p = pad_boxes([torch.from_numpy(sample.boxes)] * DRAWS, [torch.from_numpy(sample.ignore)] * DRAWS)
    index = torch.zeros(DRAWS, dtype=torch.int64)
    out = augment_batch(src, sizes[index], b, i, p, torch.Generator().manual_seed(0), cfg, index=index)
    _check_centre_rule(out, b, cfg.resolution)
    area = (out.boxes[..., 2:] - out.boxes[..., :2]).prod(dim=-1).sqrt()
    counts = out.present.sum(dim=1)
    mean_size = (area * out.present).sum(dim=1) / counts.clamp(min=1)
    return counts.numpy(), mean_size[counts > 0].numpy()


def _check_centre_rule(out, source_boxes, size):
    centre = (source_boxes[..., :2] + source_boxes[..., 2:]) / 2  # (N, G, 2)
    w = out.windows[:, None].float()
    inside = ((centre >= w[..., :2]) & (centre < w[..., 2:])).all(dim=-1)
    assert torch.equal(inside, out.present)  # kept exactly the faces whose centre was in the crop
    kept = out.boxes[out.present]
    assert ((kept >= 0) & (kept <= size)).all()
    assert ((kept[:, 2:] >= kept[:, :2]).all())


def test_same_distributions_as_the_cpu_path(real_samples) -> None:
    cfg = TrainConfig(resolution=160, photometric=False)  # sizes scale with S; counts do not
    for sample in real_samples:
        image = load_image(sample.image_path)
        cpu_counts, cpu_sizes = _cpu_draws(image, sample, cfg)
        counts, sizes = _batch_draws(image, sample, cfg)
        assert ks_2samp(cpu_counts, counts).pvalue > P_MIN, sample.name
        assert ks_2samp(cpu_sizes, sizes).pvalue > P_MIN, sample.name
        assert abs(counts.mean() - cpu_counts.mean()) <= 0.1 * cpu_counts.mean() + 0.05, sample.name


def test_photometric_same_distribution_as_the_cpu_path(real_samples) -> None:
    image = load_image(real_samples[2].image_path)[100:164, 300:364]  # a 64 x 64 patch, faces and clothes
    n = 1000  # cheap at 64 x 64; 240 draws of a single reference sample gave unstable p-values
    cpu = np.stack([photometric_distort(image, np.random.default_rng(k)) for k in range(n)])
    src = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float().expand(n, -1, -1, -1)
    draws = draw_photometric(n, torch.Generator().manual_seed(0))
    out = photometric_distort_batch(src, draws).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    # per image and channel: brightness / lighting and contrast (both uint8, so that the statistics
    # of equal images are equal: many draws leave the contrast alone, a tie KS must see as one)
    for stat in (np.mean, np.std):
        a, b = stat(cpu, axis=(1, 2)), stat(out, axis=(1, 2))
        for c in range(3):
            assert ks_2samp(a[:, c], b[:, c]).pvalue > P_MIN, (stat.__name__, c)
    sat_cpu = cv2.cvtColor(cpu.reshape(-1, 64, 3), cv2.COLOR_RGB2HSV_FULL)[..., 1].reshape(n, -1)
    sat = cv2.cvtColor(out.reshape(-1, 64, 3), cv2.COLOR_RGB2HSV_FULL)[..., 1].reshape(n, -1)
    assert ks_2samp(sat_cpu.mean(axis=1), sat.mean(axis=1)).pvalue > P_MIN


# ---------------------------------------------------------------------------------------------
# what the trainer relies on: no device reads, and padded rows that change no target


def test_no_device_reads() -> None:
    # meta tensors have no values: any .item(), .tolist(), bool(), nonzero() or boolean-mask
    # indexing on them raises, so a run on them proves the batch is never read on the host
    # (the generator stays on the CPU here; on CUDA it lives on the device)
    with pytest.raises(RuntimeError):
        torch.empty(1, device="meta").item()
    meta = {"device": "meta"}
    out = augment_batch(
        torch.empty((4, 3, 100, 150), dtype=torch.uint8, **meta),
        torch.empty((4, 2), dtype=torch.int64, **meta),
        torch.empty((4, 5, 4), **meta),
        torch.empty((4, 5), dtype=torch.bool, **meta),
        torch.empty((4, 5), dtype=torch.bool, **meta),
        torch.Generator().manual_seed(0),
        TrainConfig(resolution=64),
        index=torch.empty(4, dtype=torch.int64, **meta),
    )
    assert out.images.shape == (4, 3, 64, 64) and out.images.device.type == "meta"


def test_padded_rows_give_the_same_targets() -> None:
    from ufssd.geometry import anchors_for_input, build_targets, feature_sizes, gt_masks
    from ufssd.presets import get_preset

    cfg = get_preset("ufssd_vgg16_fem_mcdm_b_eta0.10")
    faces = [torch.tensor([[30.0, 20, 90, 100], [100, 40, 112, 52], [5, 5, 7, 7]]), torch.tensor([[10.0, 10, 60, 60]])]
    flags = [torch.tensor([False, False, True]), torch.tensor([False])]
    images, sizes = pad_images([_white_box(128, 128, (0, 0, 1, 1))] * 2)
    b, i, p = pad_boxes(faces, flags)
    out = augment_batch(images, sizes, b, i, p, torch.Generator().manual_seed(2), TrainConfig(resolution=128))
    assert not out.present.all()  # some rows are padding or dropped
    kept_boxes = [out.boxes[n][out.present[n]] for n in range(2)]
    kept_ignore = [out.ignore[n][out.present[n]] for n in range(2)]
    anchors = anchors_for_input(128, 128, cfg.anchors)
    labels, deltas = build_targets(anchors, list(out.boxes), list(out.ignore), cfg.match, cfg.anchors.variances)
    labels_ref, deltas_ref = build_targets(anchors, kept_boxes, kept_ignore, cfg.match, cfg.anchors.variances)
    assert torch.equal(labels, labels_ref) and torch.equal(deltas, deltas_ref)
    assert (labels == 1).any()
    sizes_l, sides = feature_sizes(128, 128, cfg.anchors.strides), cfg.anchors.sides
    for n in range(2):
        masks = gt_masks(out.boxes[n], (128, 128), sizes_l, sides, (0, 1, 2), cfg.gt_mask, gt_ignore=out.ignore[n])
        ref = gt_masks(kept_boxes[n], (128, 128), sizes_l, sides, (0, 1, 2), cfg.gt_mask, gt_ignore=kept_ignore[n])
        assert all(torch.equal(m, r) for m, r in zip(masks, ref)) and any(m.any() for m in masks)


def test_photometric_step_compiles_as_one_graph() -> None:
    # no graph break: on CUDA the trainer can pass torch.compile(photometric_distort_batch)
    images = torch.rand((2, 3, 8, 8)) * 255
    draws = draw_photometric(2, torch.Generator().manual_seed(0))
    compiled = torch.compile(photometric_distort_batch, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(images, draws), photometric_distort_batch(images, draws))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: checks that no step waits for the device")
def test_no_host_device_sync_on_cuda() -> None:
    device = torch.device("cuda")
    images, sizes = pad_images([_white_box(160, 240, (70, 30, 130, 110)).to(device)] * 4)
    b, i, p = pad_boxes([torch.tensor([[70.0, 30, 130, 110]])] * 4, [torch.tensor([False])] * 4, device)
    gen = torch.Generator(device=device).manual_seed(0)
    augment_batch(images, sizes, b, i, p, gen, TrainConfig(resolution=64))  # first call: constants cached
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment_batch(images, sizes, b, i, p, gen, TrainConfig(resolution=64))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.images.device.type == "cuda" and out.present.all()
