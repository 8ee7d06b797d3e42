"""The WIDER FACE evaluation, as the organisers' MATLAB ``eval_tools`` compute it.

``docs/widerface-eval-protocol.md`` is the specification; the section numbers below are its.
``protocol="port"`` reproduces the popular Python port instead (its differences D1, D2, D3, D6;
for missing files and image identity it keeps the official behaviour).

Shapes: M detections of I images, B ground-truth boxes; detections of image i are the rows
``offsets[i]:offsets[i + 1]``, its boxes ``box_offsets[i]:box_offsets[i + 1]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ufssd.evaluation.errors import EvaluationError
from ufssd.evaluation.groundtruth import SETTINGS, GroundTruth, load_ground_truth
from ufssd.evaluation.reader import STATUS_OK, Predictions, read_predictions
from ufssd.evaluation.result import EvaluationResult, SettingResult

__all__ = [
    "PROTOCOLS",
    "THRESHOLDS",
    "evaluate",
    "score_predictions",
    "matlab_round",
    "match_official",
    "match_port",
    "normalise_scores",
    "voc_ap",
]

log = logging.getLogger(__name__)

PROTOCOLS = ("official", "port")
THRESH_NUM = 1000
# §5: theta_t = 1 - t/1000 for t = 1..1000, in double (0.999, 0.998, ..., 0)
THRESHOLDS = 1.0 - np.arange(1, THRESH_NUM + 1, dtype=np.float64) / THRESH_NUM
_THRESHOLDS_ASC = THRESHOLDS[::-1].copy()
_I32_MIN, _I32_MAX = float(-(2**31)), float(2**31 - 1)
_MAX_PAIRS = 1 << 22  # detection x GT pairs per candidate matrix


def matlab_round(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round``: to the nearest integer, halves away from zero (exact for every double;
    ``floor(x + 0.5)`` is not, e.g. for 0.49999999999999994)."""
    x = np.asarray(x, dtype=np.float64)
    t = np.trunc(x)
    with np.errstate(invalid="ignore"):  # inf - inf
        frac = np.subtract(x, t)
        np.abs(frac, out=frac)
        half = frac >= 0.5
    np.copysign(half, x, out=frac)
    t += frac
    return t


def _int32(x: np.ndarray) -> np.ndarray:
    """MATLAB's double -> int32 conversion (round, saturate, NaN to 0); the values stay float64."""
    r = matlab_round(x)
    np.clip(r, _I32_MIN, _I32_MAX, out=r)
    r[np.isnan(r)] = 0.0
    return r


def _sat(x: np.ndarray) -> np.ndarray:
    """Saturate an integer-valued float64 to the int32 range (MATLAB integer arithmetic)."""
    return np.clip(x, _I32_MIN, _I32_MAX)


class _OfficialBoxes:
    """Per-box quantities of §4, computed once for all detections and all GT boxes.

    Detections: rounded corners r* (int32 values) and the double area; GT: corners and area in
    saturating int32 arithmetic. ``safe`` marks values far from the int32 limits, for which
    the plain float64 arithmetic below equals MATLAB's saturating one.
    """

    def __init__(self, pred: np.ndarray, gt: np.ndarray) -> None:
        px1, py1 = pred[:, 0], pred[:, 1]
        px2, py2 = px1 + pred[:, 2], py1 + pred[:, 3]
        self.rx1, self.ry1, self.rx2, self.ry2 = _int32(px1), _int32(py1), _int32(px2), _int32(py2)
        self.parea = (px2 - px1 + 1) * (py2 - py1 + 1)
        g = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        self.gx1, self.gy1 = g[:, 0], g[:, 1]
        self.gx2, self.gy2 = _sat(self.gx1 + g[:, 2]), _sat(self.gy1 + g[:, 3])
        self.garea = _sat(_sat(_sat(self.gx2 - self.gx1) + 1) * _sat(_sat(self.gy2 - self.gy1) + 1))
        big = 2.0**30
        self.psafe = (
            (np.abs(self.parea) < big) & (np.abs(self.rx1) < big) & (np.abs(self.ry1) < big)
        )
        self.psafe &= (np.abs(self.rx2) < big) & (np.abs(self.ry2) < big)
        self.gsafe = (np.abs(g) < 2.0**14).all(axis=1)  # corners, sizes, area well inside int32

    def match(self, p0: int, p1: int, g0: int, g1: int, out: np.ndarray) -> None:
        """Write into ``out[p0:p1]`` the matched box (global index) of detections p0..p1
        against boxes g0..g1; rows without a match are left as they are (-1)."""
        n_gt = g1 - g0
        gx1, gx2, gy1, gy2 = self.gx1[g0:g1], self.gx2[g0:g1], self.gy1[g0:g1], self.gy2[g0:g1]
        # a superset of the pairs with iw > 0 and ih > 0; exact test below
        cand = self.rx1[p0:p1, None] <= gx2
        cand &= self.rx2[p0:p1, None] >= gx1
        cand &= self.ry1[p0:p1, None] <= gy2
        cand &= self.ry2[p0:p1, None] >= gy1
        flat = np.flatnonzero(cand)
        if flat.size == 0:
            return
        pi, gi = np.divmod(flat, n_gt)
        pi += p0
        gi += g0
        iw = np.minimum(self.gx2[gi], self.rx2[pi]) - np.maximum(self.gx1[gi], self.rx1[pi]) + 1
        ih = np.minimum(self.gy2[gi], self.ry2[pi]) - np.maximum(self.gy1[gi], self.ry1[pi]) + 1
        keep = (iw > 0) & (ih > 0)
        if not keep.all():
            pi, gi, iw, ih = pi[keep], gi[keep], iw[keep], ih[keep]
        inter = iw * ih
        safe = self.psafe[p0:p1].all() and self.gsafe[g0:g1].all()
        if safe:  # no saturation anywhere: exact integers in float64
            # areas are > 0 here (iw, ih > 0), so floor(x + 0.5) is MATLAB's round of x >= 1
            union = np.floor(self.garea[gi] + self.parea[pi] + 0.5) - inter
            twice = 2 * inter
            passing = (union > 0) & (twice >= union)  # round(inter / union) >= 1
            safe = not ((union <= 0) | (twice >= 3 * union)).any()  # no overlap other than 0, 1
        if safe:
            overlap = None
        else:
            inter = _sat(_sat(_sat(iw) * _sat(ih)))
            union = _sat(_int32(self.garea[gi] + self.parea[pi]) - inter)
            with np.errstate(divide="ignore", invalid="ignore"):
                overlap = _int32(inter / union)
            overlap[union == 0] = _I32_MAX  # int32 x / 0 with x > 0 (inter > 0 here)
            passing = overlap >= 0.5
            overlap = overlap[passing]
        pi, gi = pi[passing], gi[passing]
        if pi.size == 0:
            return
        if overlap is not None and (overlap != 1).any():  # an overlap above 1 wins over earlier 1s
            order = np.lexsort((gi, -overlap, pi))
            pi, gi = pi[order], gi[order]
        _first_per_row(pi, gi, out)


def _first_per_row(pi: np.ndarray, gi: np.ndarray, out: np.ndarray) -> None:
    """out[p] = the first g paired with p (pairs grouped by p)."""
    first = np.ones(pi.size, dtype=bool)
    first[1:] = pi[1:] != pi[:-1]
    out[pi[first]] = gi[first]


class _PortBoxes:
    """Per-box quantities of the port's ``box_overlaps`` (D1), computed once."""

    def __init__(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self.px1, self.py1 = pred[:, 0], pred[:, 1]
        self.px2, self.py2 = self.px1 + pred[:, 2], self.py1 + pred[:, 3]
        self.parea = (self.px2 - self.px1 + 1) * (self.py2 - self.py1 + 1)
        g = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        self.gx1, self.gy1 = g[:, 0], g[:, 1]
        self.gx2, self.gy2 = self.gx1 + g[:, 2], self.gy1 + g[:, 3]
        self.garea = (self.gx2 - self.gx1 + 1) * (self.gy2 - self.gy1 + 1)

    def match(self, p0: int, p1: int, g0: int, g1: int, out: np.ndarray) -> None:
        """As :meth:`_OfficialBoxes.match`, with the port's float IoU and arg-max."""
        n_gt = g1 - g0
        # a superset of the pairs with iw > 0 and ih > 0 (exact bounds: the GT is integer)
        cand = self.px2[p0:p1, None] > self.gx1[g0:g1] - 1
        cand &= self.px1[p0:p1, None] < self.gx2[g0:g1] + 1
        cand &= self.py2[p0:p1, None] > self.gy1[g0:g1] - 1
        cand &= self.py1[p0:p1, None] < self.gy2[g0:g1] + 1
        flat = np.flatnonzero(cand)
        if flat.size == 0:
            return
        pi, gi = np.divmod(flat, n_gt)
        pi += p0
        gi += g0
        iw = np.minimum(self.px2[pi], self.gx2[gi]) - np.maximum(self.px1[pi], self.gx1[gi]) + 1
        ih = np.minimum(self.py2[pi], self.gy2[gi]) - np.maximum(self.py1[pi], self.gy1[gi]) + 1
        keep = (iw > 0) & (ih > 0)
        pi, gi, iw, ih = pi[keep], gi[keep], iw[keep], ih[keep]
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = iw * ih / (self.parea[pi] + self.garea[gi] - iw * ih)
        passing = iou >= 0.5
        if not passing.any():
            return
        pi, gi, iou = pi[passing], gi[passing], iou[passing]
        # the arg-max per row: sort by (row, -iou); the sort is stable, so ties keep GT order
        order = np.lexsort((-iou, pi))
        _first_per_row(pi[order], gi[order], out)


def match_official(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """§4: the GT each detection is matched to, or -1, as ``boxoverlap.m`` on an int32 GT gives it.

    pred: (P, 4) float64 ``x y w h``; gt: (G, 4) integer ``x y w h``. Returns (P,) int64.
    Corners are ``x2 = x + w``; predicted corners enter the intersection rounded, the union is
    ``round(area_gt + area_pred) - inter`` and the overlap ``round(inter / union)`` (int32
    arithmetic, saturating). The match is the first GT (annotation order) of the largest
    overlap, provided that overlap is >= 0.5: in practice the first GT with quantised IoU >= 0.5.
    """
    return _match_one(_OfficialBoxes, pred, gt)


def match_port(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """D1: the Python port's choice: the arg-max (first on ties) of the float IoU, if >= 0.5.

    Same shapes as :func:`match_official`; the arithmetic of the port's ``box_overlaps.pyx``.
    """
    return _match_one(_PortBoxes, pred, gt)


def _match_one(kind: type, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt).reshape(-1, 4)
    out = np.full(len(pred), -1, dtype=np.int64)
    if len(pred) and len(gt):
        kind(pred, gt).match(0, len(pred), 0, len(gt), out)
    return out


def normalise_scores(scores: np.ndarray, protocol: str = "official") -> np.ndarray:
    """§3 (official): min-max over all read scores with MATLAB's single-precision bounds
    (``realmin``/``realmax('single')`` starts, float32 arithmetic); D6 (port): float64 with the
    bounds started at max 0 and min 1. NaN scores stay NaN. Returns float64."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores.copy()
    with np.errstate(all="ignore"):
        hi, lo = np.fmax.reduce(scores), np.fmin.reduce(scores)
        if protocol == "port":
            smax, smin = np.fmax(hi, 0.0), np.fmin(lo, 1.0)
            return (scores - smin) / (smax - smin)
        f32 = np.finfo(np.float32)
        smax = np.float32(np.fmax(hi, np.float64(f32.tiny)))
        smin = np.float32(np.fmin(lo, np.float64(f32.max)))
        norm = (scores.astype(np.float32) - smin) / (smax - smin)
    return norm.astype(np.float64)


def _first_threshold(norm: np.ndarray) -> np.ndarray:
    """(M,) int16: 0-based index of the first threshold theta_t <= s' (the detection passes that
    one and every later one); THRESH_NUM when it passes none (s' < 0 or NaN)."""
    # the count of thresholds <= s' is floor(1000 s') + 1 up to rounding; corrected exactly
    est = np.multiply(norm, THRESH_NUM)
    np.floor(est, out=est)
    np.clip(est, -1, THRESH_NUM - 1, out=est)
    est[np.isnan(est)] = -1
    count = est.astype(np.int16)
    count += 1
    padded = np.concatenate(([-np.inf], _THRESHOLDS_ASC, [np.nan]))  # padded[c] = asc[c - 1]
    for _ in range(2):
        count += padded[count + 1] <= norm  # the next threshold is <= s' too
        count -= padded[count] > norm  # the last counted one is above s'
    first = np.subtract(THRESH_NUM, count, dtype=np.int16)
    first[np.isnan(norm)] = THRESH_NUM
    return first


def _evaluation_order(
    scores: np.ndarray, offsets: np.ndarray, image_of: np.ndarray, protocol: str
) -> np.ndarray | None:
    """Row order in which each image's detections are visited (None: file order): official =
    stable sort by score, descending, NaN first (``sort(..., 'descend')``); port = file order
    (D2)."""
    if protocol == "port" or scores.size < 2:
        return None
    unsorted = ~(scores[:-1] >= scores[1:]) & (image_of[:-1] == image_of[1:])
    images = np.unique(image_of[1:][unsorted])
    if images.size == 0:
        return None
    order = np.arange(scores.size)
    for i in images.tolist():
        a, b = offsets[i], offsets[i + 1]
        s = scores[a:b]
        nan = np.isnan(s)
        if nan.any():
            local = np.lexsort((-np.where(nan, 0.0, s), ~nan))
        else:
            local = np.argsort(-s, kind="stable")
        order[a:b] = a + local
    return order


def _counted_from(first_t: np.ndarray, image_of: np.ndarray) -> np.ndarray:
    """(M,) int16: the first threshold index from which each row counts in §5's samples.

    For threshold t an image contributes its rows 1..r_t, r_t = the last row that passes
    (first_t[h] <= t). Row h is among them exactly when some row at or after it passes, i.e.
    from t = min(first_t[h:]) on (THRESH_NUM: never). The suffix minimum of all images is one
    reversed running minimum, with keys offset so that later images are larger.
    """
    shift = image_of * np.int64(THRESH_NUM + 1)
    key = shift + first_t
    np.minimum.accumulate(key[::-1], out=key[::-1])
    key -= shift
    return key.astype(np.int16)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """§6, ``VOCap.m``: all-points interpolation with MATLAB's NaN-ignoring running max."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def score_predictions(
    preds: Predictions, gt: GroundTruth, protocol: str = "official"
) -> EvaluationResult:
    """§3–§6 on predictions already read for the images of ``gt``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    offsets = preds.offsets
    n_images = offsets.size - 1
    dtype = np.int32 if n_images < 2**31 else np.int64
    image_of = np.repeat(np.arange(n_images, dtype=dtype), np.diff(offsets))  # row -> image
    order = _evaluation_order(preds.scores, offsets, image_of, protocol)
    boxes = preds.boxes if order is None else preds.boxes[order]
    scores = preds.scores if order is None else preds.scores[order]

    # §4: the matched GT of every detection (global box index), independent of the setting
    prepared = (_OfficialBoxes if protocol == "official" else _PortBoxes)(boxes, gt.boxes)
    match = np.full(scores.size, -1, dtype=np.int32 if gt.boxes.shape[0] < 2**31 else np.int64)
    active = (np.diff(offsets) > 0) & (np.diff(gt.box_offsets) > 0)  # §5: others are skipped
    p_off, g_off = offsets.tolist(), gt.box_offsets.tolist()
    for i in np.flatnonzero(active).tolist():
        p0, p1, g0, g1 = p_off[i], p_off[i + 1], g_off[i], g_off[i + 1]
        step = max(1, _MAX_PAIRS // (g1 - g0))  # rows are independent: bound the (P, G) matrix
        for q0 in range(p0, p1, step):
            prepared.match(q0, min(q0 + step, p1), g0, g1, match)
    matched = match >= 0
    # a GT is recalled by the first detection matched to it; later ones are duplicates
    first_hit = np.zeros(scores.size, dtype=bool)
    _, first_rows = np.unique(match[matched], return_index=True)
    first_hit[np.flatnonzero(matched)[first_rows]] = True

    # §3, §5: the threshold from which each row counts (rows of skipped images: never)
    start = _counted_from(_first_threshold(normalise_scores(scores, protocol)), image_of)
    skipped = ~active & (np.diff(offsets) > 0)
    for i in np.flatnonzero(skipped).tolist():
        start[p_off[i] : p_off[i + 1]] = THRESH_NUM

    settings = {}
    bins = THRESH_NUM + 1
    for name in SETTINGS:
        counted = np.zeros(scores.size, dtype=bool)
        if gt.boxes.shape[0]:
            counted = gt.counted[name][match]  # (index -1 for unmatched rows: masked next)
            counted &= matched
        # row kind: 0 matched to an ignored face (flag -1), 1 proposal, 2 proposal and recall
        kind = np.logical_or(~matched, counted).astype(np.int16)
        kind += first_hit & counted
        hist = np.bincount(kind * np.int16(bins) + start, minlength=3 * bins).reshape(3, bins)
        proposals = np.cumsum(hist[1, :THRESH_NUM] + hist[2, :THRESH_NUM])
        true_pos = np.cumsum(hist[2, :THRESH_NUM])
        faces = gt.n_faces[name]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = true_pos / proposals.astype(np.float64)
            recall = true_pos / np.float64(faces)
        settings[name] = SettingResult(
            name=name,
            ap=voc_ap(recall, precision),
            precision=precision,
            recall=recall,
            true_positives=true_pos,
            proposals=proposals,
            faces=faces,
        )
    return EvaluationResult(
        settings=settings,
        protocol=protocol,
        images=gt.n_images,
        detections=int(scores.size),
        missing=tuple(preds.missing),
        invalid=tuple(preds.invalid),
    )


def evaluate(
    pred_dir: str | Path,
    gt_dir: str | Path,
    subset: str | Path | Iterable[str] | None = None,
    protocol: str = "official",
    strict: bool = False,
) -> EvaluationResult:
    """Evaluate ``pred_dir/<event>/<stem>.txt`` against the ``.mat`` files in ``gt_dir``.

    subset: a list file of ``<event>/<name>.jpg`` lines (or an iterable of such names); only
    those images are read and only their faces count. protocol: ``"official"`` (the organisers'
    tool, bit-exact) or ``"port"`` (the popular Python port). strict: raise
    :class:`~ufssd.evaluation.errors.PredictionFormatError` on an invalid prediction file
    instead of warning. Returns an :class:`EvaluationResult` (APs, PR curves, counts).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    if not Path(pred_dir).is_dir():
        raise EvaluationError(f"{pred_dir}: prediction folder not found")
    gt = load_ground_truth(gt_dir, subset)
    preds = read_predictions(pred_dir, gt.events, gt.stems, protocol=protocol, strict=strict)
    n_ok = int((preds.status == STATUS_OK).sum())
    log.debug("read %d detections from %d of %d files", preds.scores.size, n_ok, gt.n_images)
    return score_predictions(preds, gt, protocol)
