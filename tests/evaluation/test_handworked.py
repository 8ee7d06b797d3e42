"""Three images, seven detections: PR points and APs worked out by hand.

Faces (x y w h), and the settings they count in:
  image A: a1 = [10 10 20 20] (easy, medium, hard), a2 = [50 10 20 20] (hard only)
  image B: b1 = [10 10 30 30] (easy, medium, hard)
  image C: c1 = [10 10 20 20] (medium, hard)
Detections (score):
  A: d1 on a1 (1.0), d3 far from any face (0.95), d2 on a2 (0.6)
  B: d4 on b1 (0.9), d5 on b1 again (0.5, a duplicate)
  C: d6 on c1 (0.75), d7 far from any face (0.0)
Scores already span [0, 1], so s' = float32(s); each detection passes thresholds t >= t0:
  d1 1.0 -> t0 1; d3 float32(0.95) = 0.94999999 -> t0 51; d4 float32(0.9) -> 101;
  d6 0.75 -> 250 (theta_250 = 0.75 exactly); d2 float32(0.6) = 0.60000002 -> 400;
  d5 0.5 -> 500; d7 0 -> 1000.

easy (faces a1, b1: 2). Detections of ignored faces (d6 on c1, d2 on a2) are no proposals.
  t 1..50    : d1            -> TP 1, proposals 1, P 1,    R 1/2
  t 51..100  : + d3 (FP)     -> TP 1, proposals 2, P 1/2,  R 1/2
  t 101..499 : + d4 (TP)     -> TP 2, proposals 3, P 2/3,  R 1
  t 500..999 : + d5 (dup)    -> TP 2, proposals 4, P 1/2,  R 1
  t 1000     : + d7 (FP)     -> TP 2, proposals 5, P 2/5,  R 1
  AP = 1/2 * 1 + 1/2 * max(2/3, 1/2, 2/5) = 5/6
medium (a1, b1, c1: 3); d6 is now a TP:
  t 1..50: 1/1, R 1/3; 51..100: 1/2; 101..249: 2/3, R 2/3; 250..499: 3/4, R 1;
  500..999: 3/5; 1000: 3/6.   AP = 1/3 * 1 + 1/3 * 3/4 + 1/3 * 3/4 = 5/6
hard (all 4): d2 is a TP too:
  t 1..50: 1/1, R 1/4; 51..100: 1/2; 101..249: 2/3, R 2/4; 250..399: 3/4, R 3/4;
  400..499: 4/5, R 1; 500..999: 4/6; 1000: 4/7.
  AP = 1/4 * 1 + 3 * (1/4 * 4/5) = 0.85
"""

from __future__ import annotations

import numpy as np
import pytest

from ufssd.evaluation import evaluate

from .conftest import write_pred

IMAGES = [
    {
        "event": "0--A",
        "stem": "A",
        "boxes": [[10, 10, 20, 20], [50, 10, 20, 20]],
        "counted": {"easy": [0], "medium": [0], "hard": [0, 1]},
    },
    {
        "event": "1--B",
        "stem": "B",
        "boxes": [[10, 10, 30, 30]],
        "counted": {"easy": [0], "medium": [0], "hard": [0]},
    },
    {
        "event": "1--B",
        "stem": "C",
        "boxes": [[10, 10, 20, 20]],
        "counted": {"easy": [], "medium": [0], "hard": [0]},
    },
]
DETECTIONS = {
    ("0--A", "A"): [[10, 10, 20, 20, 1.0], [300, 300, 20, 20, 0.95], [50, 10, 20, 20, 0.6]],
    ("1--B", "B"): [[10, 10, 30, 30, 0.9], [11, 10, 30, 30, 0.5]],
    ("1--B", "C"): [[10, 10, 20, 20, 0.75], [300, 300, 20, 20, 0.0]],
}
# (first t of the segment, true positives, proposals) per setting; t is 1-based
EXPECTED = {
    "easy": ([1, 51, 101, 500, 1000], [1, 1, 2, 2, 2], [1, 2, 3, 4, 5], 2, 5 / 6),
    "medium": ([1, 51, 101, 250, 500, 1000], [1, 1, 2, 3, 3, 3], [1, 2, 3, 4, 5, 6], 3, 5 / 6),
    "hard": (
        [1, 51, 101, 250, 400, 500, 1000],
        [1, 1, 2, 3, 4, 4, 4],
        [1, 2, 3, 4, 5, 6, 7],
        4,
        0.85,
    ),
}


def expand(starts, values):
    out = np.zeros(1000, dtype=np.int64)
    for k, (t, v) in enumerate(zip(starts, values)):
        end = starts[k + 1] - 1 if k + 1 < len(starts) else 1000
        out[t - 1 : end] = v
    return out


@pytest.mark.parametrize("shuffle", [False, True])
def test_hand_worked_pr_points_and_aps(gt_factory, pred_dir, shuffle):
    gt = gt_factory(IMAGES)
    for (event, stem), rows in DETECTIONS.items():
        write_pred(pred_dir, event, stem, rows[::-1] if shuffle else rows)
    res = evaluate(pred_dir, gt)
    for setting, (starts, tps, props, faces, ap) in EXPECTED.items():
        r = res[setting]
        assert r.faces == faces
        np.testing.assert_array_equal(r.true_positives, expand(starts, tps))
        np.testing.assert_array_equal(r.proposals, expand(starts, props))
        np.testing.assert_allclose(
            r.precision, expand(starts, tps) / expand(starts, props), rtol=0, atol=0
        )
        np.testing.assert_allclose(r.recall, expand(starts, tps) / faces, rtol=0, atol=0)
        assert r.ap == pytest.approx(ap, abs=1e-15)
    assert res.images == 3 and res.detections == 7 and not res.missing and not res.invalid
