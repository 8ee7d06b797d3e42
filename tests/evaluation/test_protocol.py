"""Matching, normalisation, PR samples and AP (§3–§6), and the port's differences (D1–D6)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from ufssd.evaluation import evaluate, voc_ap
from ufssd.evaluation.protocol import (
    THRESHOLDS,
    match_official,
    match_port,
    matlab_round,
    normalise_scores,
)

from .conftest import write_pred
from .reference import boxoverlap_official, evaluate_reference, first_max, port_overlap


def test_matlab_round_is_half_away_from_zero_and_exact():
    x = np.array(
        [
            0.5,
            1.5,
            2.5,
            -0.5,
            -1.5,
            0.49999999999999994,
            -0.49999999999999994,
            2.4999999999999996,
            1e16 + 2,
            np.inf,
        ]
    )
    np.testing.assert_array_equal(matlab_round(x), [1, 2, 3, -1, -2, 0, -0.0, 2, 1e16 + 2, np.inf])


def test_thresholds_are_matlabs():
    assert THRESHOLDS.size == 1000 and THRESHOLDS[0] == 1 - 1 / 1000 and THRESHOLDS[-1] == 0.0
    assert all(THRESHOLDS[t - 1] == 1 - t / 1000 for t in range(1, 1001))


def test_quantised_iou_of_exactly_one_half_matches():
    gt = np.array([[0, 0, 9, 9]])  # corners 0..9: area 100 with the +1 convention
    exactly_half = [[0, 0, 9, 4]]  # inter 50, union 100
    below = [[0, 0, 6, 6]]  # inter 49, union 100: 0.49 rounds to 0
    assert match_official(np.array(exactly_half, float), gt).tolist() == [0]
    assert match_official(np.array(below, float), gt).tolist() == [-1]
    assert match_port(np.array(exactly_half, float), gt).tolist() == [0]


def test_corner_rounding_decides_the_match():
    gt = np.array([[0, 0, 9, 9]])
    pred = np.array([[0.4, 0.0, 9.0, 4.0]])  # corners 0.4..9.4 round to 0..9: inter 50, union 100
    assert match_official(pred, gt).tolist() == [0]
    assert match_port(pred, gt).tolist() == [-1]  # float IoU 48 / 102 < 0.5 (D1)


def test_the_first_passing_gt_is_taken_not_the_best():
    gt = np.array([[0, 0, 10, 10], [1, 0, 10, 10]])
    pred = np.array([[1.0, 0.0, 10.0, 10.0]])  # IoU 110/132 with the first, 1 with the second
    assert match_official(pred, gt).tolist() == [0]
    assert match_port(pred, gt).tolist() == [1]


def test_first_passing_gt_ignored_although_a_later_one_would_match(gt_factory, pred_dir):
    gt = gt_factory(
        [
            {
                "event": "0--E",
                "stem": "a",
                "boxes": [[0, 0, 10, 10], [1, 0, 10, 10]],
                "counted": {s: [1] for s in ("easy", "medium", "hard")},
            }
        ]
    )
    write_pred(pred_dir, "0--E", "a", [[1, 0, 10, 10, 0.9], [50, 50, 5, 5, 0.1]])
    res = evaluate(pred_dir, gt)
    # the detection goes to the ignored face: neither true nor false positive; the FP remains
    assert res["easy"].true_positives.max() == 0 and res["easy"].proposals[-1] == 1
    assert res["easy"].ap == 0.0
    port = evaluate(pred_dir, gt, protocol="port")
    assert port["easy"].true_positives[-1] == 1 and port["easy"].ap == 1.0


def test_a_detection_of_an_ignored_face_is_neither_tp_nor_fp(gt_factory, pred_dir):
    gt = gt_factory(
        [
            {
                "event": "0--E",
                "stem": "a",
                "boxes": [[0, 0, 20, 20], [100, 100, 20, 20]],
                "counted": {s: [0] for s in ("easy", "medium", "hard")},
            }
        ]
    )
    write_pred(pred_dir, "0--E", "a", [[100, 100, 20, 20, 0.9], [0, 0, 20, 20, 0.5]])
    res = evaluate(pred_dir, gt)["hard"]
    assert res.proposals[-1] == 1 and res.true_positives[-1] == 1
    assert np.nanmin(res.precision) == 1.0 and res.ap == 1.0


def _images(n_images=4, faces=3):
    images = []
    for k in range(n_images):
        boxes = [[30 * j + 2, 10 + k, 20, 20] for j in range(faces)]
        images.append(
            {
                "event": f"{k % 2}--E",
                "stem": f"im{k}",
                "boxes": boxes,
                "counted": {"easy": [0], "medium": [0, 1], "hard": list(range(faces))},
            }
        )
    return images


def test_perfect_predictions_give_ap_one(gt_factory, pred_dir):
    images = _images()
    gt = gt_factory(images)
    score = iter(np.linspace(1, 0.2, 100))
    for im in images:
        write_pred(pred_dir, im["event"], im["stem"], [[*b, next(score)] for b in im["boxes"]])
    for protocol in ("official", "port"):
        res = evaluate(pred_dir, gt, protocol=protocol)
        assert res.aps == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
        assert res["hard"].recall[-1] == 1.0


def test_missing_file_counts_as_no_predictions(gt_factory, pred_dir, tmp_path):
    images = _images()
    gt = gt_factory(images)
    for im in images[1:]:
        write_pred(
            pred_dir,
            im["event"],
            im["stem"],
            [[*b, 0.9 - 0.1 * j] for j, b in enumerate(im["boxes"])],
        )
    res = evaluate(pred_dir, gt)
    assert len(res.missing) == 1 and res.missing[0].path.endswith("im0.txt")
    assert res["hard"].faces == 12 and res["hard"].recall[-1] == 9 / 12  # its faces are misses
    write_pred(pred_dir, images[0]["event"], images[0]["stem"], [])
    empty = evaluate(pred_dir, gt)
    for s in ("easy", "medium", "hard"):
        np.testing.assert_array_equal(res[s].pr_curve, empty[s].pr_curve)


def test_short_file_drops_the_image_like_the_official_tool(gt_factory, pred_dir):
    images = _images(2)
    gt = gt_factory(images)
    write_pred(pred_dir, "1--E", "im1", [[*images[1]["boxes"][0], 0.8], [500, 500, 9, 9, 0.1]])
    write_pred(pred_dir, "0--E", "im0", [[*b, 0.9] for b in images[0]["boxes"][:2]], count=3)
    res = evaluate(pred_dir, gt)
    assert res["hard"].true_positives[-1] == 1 and res["hard"].proposals[-1] == 2
    assert len(res.invalid) == 1
    assert res.invalid[0].line == 5
    port = evaluate(pred_dir, gt, protocol="port")  # D3: the port reads both lines
    assert port["hard"].true_positives[-1] == 3


def test_shuffling_lines_changes_nothing_in_official_mode(gt_factory, tmp_path):
    rng = np.random.default_rng(3)
    images, gt_rows = [], []
    for k in range(6):
        boxes = rng.integers(0, 200, (8, 2)).tolist()
        boxes = [[x, y, int(rng.integers(4, 40)), int(rng.integers(4, 40))] for x, y in boxes]
        images.append(
            {
                "event": "0--E",
                "stem": f"im{k}",
                "boxes": boxes,
                "counted": {"easy": [0, 1], "medium": [0, 1, 2, 3], "hard": list(range(8))},
            }
        )
    gt = gt_factory(images)
    results = []
    for trial in range(2):
        folder = tmp_path / f"pred{trial}"
        for im in images:
            g = np.array(im["boxes"], float)
            rows = np.concatenate(
                [g + rng.normal(0, 2, g.shape) * (trial == 0), rng.uniform(0, 200, (6, 4))]
            )
            if trial == 0:
                scores = np.round(rng.uniform(0, 1, len(rows)), 2)  # ties included
                gt_rows.append((rows, scores))
            rows, scores = gt_rows[int(im["stem"][2:])]
            order = np.arange(len(rows)) if trial == 0 else rng.permutation(len(rows))
            write_pred(
                folder, "0--E", im["stem"], [[*r, s] for r, s in zip(rows[order], scores[order])]
            )
        results.append(evaluate(folder, gt))
    for s in ("easy", "medium", "hard"):
        np.testing.assert_array_equal(results[0][s].pr_curve, results[1][s].pr_curve)


def test_all_equal_scores_give_ap_zero(gt_factory, pred_dir):
    images = _images(2)
    gt = gt_factory(images)
    for im in images:
        write_pred(pred_dir, im["event"], im["stem"], [[*b, 0.7] for b in im["boxes"]])
    res = evaluate(pred_dir, gt)
    assert res.aps == {"easy": 0.0, "medium": 0.0, "hard": 0.0}
    assert np.isnan(res["easy"].precision).all()


def test_normalisation_is_float32_with_matlab_bounds():
    s = np.array([0.1, 0.7, 0.3, np.nan])
    norm = normalise_scores(s)
    smin, smax = np.float32(0.1), np.float32(0.7)
    expected = ((s.astype(np.float32) - smin) / (smax - smin)).astype(np.float64)
    np.testing.assert_array_equal(norm, expected)
    assert norm.dtype == np.float64 and norm[1] == 1.0 and norm[0] == 0.0
    assert norm[2] != (0.3 - 0.1) / (0.7 - 0.1)  # float32, not float64
    # D6: the port starts its bounds at max 0 and min 1, in float64
    np.testing.assert_array_equal(normalise_scores(s, "port"), (s - 0.1) / (0.7 - 0.1))
    high = np.array([2.0, 3.0, 2.5])
    np.testing.assert_array_equal(normalise_scores(high), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(normalise_scores(high, "port"), [0.5, 1.0, 0.75])  # min(1, .)
    neg = np.array([-3.0, -1.0])  # official: smax starts at realmin, so the top is not 1
    np.testing.assert_array_equal(normalise_scores(neg), [0.0, np.float32(2) / np.float32(3)])


def test_voc_ap_ignores_nan_precision_like_matlab_max():
    rec = np.array([0.0, 0.5, 0.5, 1.0])
    prec = np.array([np.nan, 1.0, 0.5, 2 / 3])
    assert voc_ap(rec, prec) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3, abs=1e-15)


def _random_case(rng: random.Random, n_images=5, nan=False):
    gts, preds, counted = [], [], {"easy": [], "medium": [], "hard": []}
    for _ in range(n_images):
        g = []
        for _ in range(rng.randint(1, 7)):
            x, y = rng.randint(0, 60), rng.randint(0, 60)
            g.append([x, y, rng.randint(-1, 25), rng.randint(-1, 25)])
        gts.append(g)
        hard = sorted(rng.sample(range(len(g)), rng.randint(0, len(g))))
        medium = [k for k in hard if rng.random() < 0.6]
        counted["hard"].append(hard)
        counted["medium"].append(medium)
        counted["easy"].append([k for k in medium if rng.random() < 0.6])
        p = []
        for _ in range(rng.randint(0, 12)):
            if g and rng.random() < 0.7:
                b = rng.choice(g)
                row = [
                    b[0] + rng.choice([0, 0.5, -0.5, rng.uniform(-3, 3)]),
                    b[1] + rng.uniform(-2, 2),
                    b[2] + rng.choice([0, 0.5, rng.uniform(-3, 3)]),
                    b[3] + rng.uniform(-3, 3),
                ]
            else:
                row = [
                    rng.uniform(0, 80),
                    rng.uniform(0, 80),
                    rng.uniform(1, 30),
                    rng.uniform(1, 30),
                ]
            score = rng.choice([round(rng.random(), 2), rng.random(), 0.5])
            if nan and rng.random() < 0.1:
                score = float("nan")  # sorts first, passes no threshold
            p.append(row + [score])
        preds.append(p if p or rng.random() < 0.5 else None)
    return gts, preds, counted


@pytest.mark.parametrize("protocol", ["official", "port"])
def test_random_cases_match_a_loop_by_loop_transcription(gt_factory, tmp_path, protocol):
    rng = random.Random(7 if protocol == "official" else 8)
    for case in range(12):
        gts, preds, counted = _random_case(rng, nan=protocol == "official" and case % 2 == 1)
        images = [
            {
                "event": "0--E",
                "stem": f"c{case}i{k}",
                "boxes": g,
                "counted": {s: counted[s][k] for s in counted},
            }
            for k, g in enumerate(gts)
        ]
        gt = gt_factory(images)
        folder = tmp_path / f"{protocol}{case}"
        folder.mkdir()
        for im, p in zip(images, preds):
            if p is not None:
                write_pred(folder, "0--E", im["stem"], p)
        got = evaluate(folder, gt, protocol=protocol)
        want = evaluate_reference(preds, gts, counted, protocol)
        for s in ("easy", "medium", "hard"):
            np.testing.assert_array_equal(got[s].pr_curve, want[s][1], err_msg=f"case {case} {s}")
            # identical curves; the AP sums may differ in the last bit (summation order)
            assert got[s].ap == pytest.approx(want[s][0], abs=1e-15) or (
                math.isnan(got[s].ap) and math.isnan(want[s][0])
            )


def test_matching_matches_boxoverlap_on_random_boxes():
    rng = np.random.default_rng(11)
    for _ in range(200):
        gt = np.column_stack([rng.integers(0, 50, (6, 2)), rng.integers(-1, 30, (6, 2))])
        pred = np.column_stack(
            [
                rng.integers(0, 50, (10, 2)) + rng.choice([0, 0.5, -0.5, 0.25], (10, 2)),
                rng.integers(0, 30, (10, 2)) + rng.choice([0, 0.5, 0.49999999999999994], (10, 2)),
            ]
        )
        corners = [[g[0], g[1], g[0] + g[2], g[1] + g[3]] for g in gt.tolist()]
        want_official, want_port = [], []
        for p in pred.tolist():
            pc = [p[0], p[1], p[0] + p[2], p[1] + p[3]]
            for fn, want in ((boxoverlap_official, want_official), (port_overlap, want_port)):
                best, idx = first_max(fn(corners, pc))
                want.append(idx if best >= 0.5 else -1)
        assert match_official(pred, gt).tolist() == want_official
        assert match_port(pred, gt).tolist() == want_port


def test_absurd_coordinates_follow_int32_saturation():
    gt = np.array([[0, 0, 10, 10], [5, 5, 3, 3]])
    pred = np.array(
        [
            [0, 0, 1e12, 1e12],
            [-1e12, -1e12, 2e12, 2e12],
            [5, 5, 3, 3],
            [np.nan, 0, 3, 3],
            [5.0, 5.0, np.inf, 3.0],
        ]
    )
    corners = [[g[0], g[1], g[0] + g[2], g[1] + g[3]] for g in gt.tolist()]
    want = []
    for p in pred.tolist():
        best, idx = first_max(boxoverlap_official(corners, [p[0], p[1], p[0] + p[2], p[1] + p[3]]))
        want.append(idx if best >= 0.5 else -1)
    assert match_official(pred, gt).tolist() == want
