"""Plain-Python transcriptions of the organisers' MATLAB code and of the Python port, loop by
loop, used as oracles for the vectorised evaluator on random data.

``official``: ``norm_score.m``, ``evaluation.m`` (``image_evaluation``, ``image_pr_info``,
``dataset_pr_info``) and ``boxoverlap.m`` with MATLAB's int32 rules (round half away from zero,
saturation, x / 0). ``port``: ``evaluation.py`` of wondervictor/WiderFace-Evaluation with its
``bbox_overlaps``.
"""

from __future__ import annotations

import math

import numpy as np

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def mround(x: float) -> int:
    t = math.trunc(x)
    return t + (int(math.copysign(1, x)) if abs(x - t) >= 0.5 else 0)


def i32(x: float) -> int:
    """double -> int32 as MATLAB converts it."""
    if math.isnan(x):
        return 0
    if math.isinf(x):
        return I32_MAX if x > 0 else I32_MIN
    return max(I32_MIN, min(I32_MAX, mround(x)))


def sat(v: int) -> int:
    return max(I32_MIN, min(I32_MAX, v))


def idiv(a: int, b: int) -> int:
    """int32 ./ int32 in MATLAB."""
    if b == 0:
        return I32_MAX if a > 0 else (I32_MIN if a < 0 else 0)
    return sat(i32(a / b))


def boxoverlap_official(gt_corners: list[list[int]], p: list[float]) -> list[int]:
    """boxoverlap(a = int32 GT corners, b = double prediction corners)."""
    out = []
    for gx1, gy1, gx2, gy2 in gt_corners:
        x1 = max(gx1, i32(p[0]))  # max(int32, double) -> int32
        y1 = max(gy1, i32(p[1]))
        x2 = min(gx2, i32(p[2]))
        y2 = min(gy2, i32(p[3]))
        w = sat(sat(x2 - x1) + 1)
        h = sat(sat(y2 - y1) + 1)
        inter = sat(w * h)
        aarea = sat(sat(sat(gx2 - gx1) + 1) * sat(sat(gy2 - gy1) + 1))
        barea = (p[2] - p[0] + 1) * (p[3] - p[1] + 1)
        union = sat(i32(aarea + barea) - inter)
        o = idiv(inter, union)
        if w <= 0 or h <= 0:
            o = 0
        out.append(o)
    return out


def first_max(values) -> tuple[float, int]:
    best, idx = values[0], 0
    for k, v in enumerate(values):
        if v > best:
            best, idx = v, k
    return best, idx


def image_evaluation(pred, gt, keep, overlap_fn):
    """pred: sorted rows [x y w h s]; gt: rows [x y w h]; keep: 0-based counted rows."""
    ignore = [0] * len(gt)
    for k in keep:
        ignore[k] = 1
    recall_list = [0] * len(gt)
    proposal = [1] * len(pred)
    pred_recall = [0] * len(pred)
    gt_c = [[g[0], g[1], g[0] + g[2], g[1] + g[3]] for g in gt]
    for h, p in enumerate(pred):
        pc = [p[0], p[1], p[0] + p[2], p[1] + p[3]]
        best, idx = first_max(overlap_fn(gt_c, pc))
        if best >= 0.5:
            if ignore[idx] == 0:
                recall_list[idx] = -1
                proposal[h] = -1
            elif recall_list[idx] == 0:
                recall_list[idx] = 1
        pred_recall[h] = sum(1 for r in recall_list if r == 1)
    return pred_recall, proposal


def image_pr_info(pred, proposal, pred_recall, thresh_num=1000):
    info = np.zeros((thresh_num, 2))
    for t in range(1, thresh_num + 1):
        thresh = 1 - t / thresh_num
        r = [h for h, p in enumerate(pred) if p[4] >= thresh]
        if r:
            r_index = r[-1]
            info[t - 1, 0] = sum(1 for x in proposal[: r_index + 1] if x == 1)
            info[t - 1, 1] = pred_recall[r_index]
    return info


def voc_ap_matlab(rec, prec) -> float:
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        a, b = mpre[i], mpre[i + 1]
        mpre[i] = b if math.isnan(a) else (a if math.isnan(b) else max(a, b))
    ap = 0.0
    for i in range(1, len(mrec)):
        if mrec[i] != mrec[i - 1]:
            ap += (mrec[i] - mrec[i - 1]) * mpre[i]
    return ap


def _norm_official(preds: list[list[list[float]]]) -> list:
    smax = np.float32(np.finfo(np.float32).tiny)
    smin = np.float32(np.finfo(np.float32).max)
    for p in preds:
        if p:
            s = [r[4] for r in p if not math.isnan(r[4])]
            if s:
                smax = np.float32(max(float(smax), max(s)))
                smin = np.float32(min(float(smin), min(s)))
    out = []
    for p in preds:
        q = []
        for r in p:
            with np.errstate(all="ignore"):
                s = (np.float32(r[4]) - smin) / (smax - smin)
            q.append([*r[:4], float(s)])
        out.append(q)
    return out


def _norm_port(preds):
    smax, smin = 0, 1
    for p in preds:
        if p:
            smax = max(max(r[4] for r in p), smax)
            smin = min(min(r[4] for r in p), smin)
    diff = smax - smin
    return [[[*r[:4], (r[4] - smin) / diff if diff else float("nan")] for r in p] for p in preds]


def port_overlap(gt_c, pc):
    out = []
    box_area = None
    for gx1, gy1, gx2, gy2 in gt_c:
        box_area = (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
        iw = min(pc[2], gx2) - max(pc[0], gx1) + 1
        o = 0.0
        if iw > 0:
            ih = min(pc[3], gy2) - max(pc[1], gy1) + 1
            if ih > 0:
                ua = float((pc[2] - pc[0] + 1) * (pc[3] - pc[1] + 1) + box_area - iw * ih)
                o = iw * ih / ua
        out.append(o)
    return out


def evaluate_reference(preds, gts, counted, protocol="official"):
    """preds: per image, rows [x y w h s] in file order (None: no file); gts: per image rows;
    counted: {setting: per image 0-based rows}. Returns {setting: (ap, pr_curve (1000, 2))}."""
    preds = [list(p) if p else [] for p in preds]
    if protocol == "official":
        # stable descending sort, NaN first
        preds = [
            [
                p[i]
                for i in sorted(
                    range(len(p)),
                    key=lambda i: (
                        0 if math.isnan(p[i][4]) else 1,
                        -p[i][4] if not math.isnan(p[i][4]) else 0,
                    ),
                )
            ]
            for p in preds
        ]
        preds = _norm_official(preds)
        overlap = boxoverlap_official
    else:
        preds = _norm_port(preds)
        overlap = port_overlap
    out = {}
    for setting, keep_lists in counted.items():
        curve = np.zeros((1000, 2))
        faces = 0
        for p, g, keep in zip(preds, gts, keep_lists):
            faces += len(keep)
            if not g or not p:
                continue
            rec, prop = image_evaluation(p, g, keep, overlap)
            curve += image_pr_info(p, prop, rec)
        with np.errstate(all="ignore"):
            pr = np.column_stack([curve[:, 1] / curve[:, 0], curve[:, 1] / faces])
        out[setting] = (voc_ap_matlab(list(pr[:, 1]), list(pr[:, 0])), pr)
    return out
