"""Writing prediction files in the recommended form (``docs/widerface-eval-protocol.md`` §2).

The form :mod:`ufssd.evaluation.reader` reads under both protocols: line 1 the image's stem, line 2
the box count, then one ``x y w h score`` line per box. Written atomically (:mod:`ufssd.atomic`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ufssd.atomic import atomic_write_text

__all__ = ["write_predictions"]


def write_predictions(
    path: str | Path, name: str, boxes_xyxy: np.ndarray, scores: np.ndarray
) -> Path:
    """Write one image's prediction file, atomically, in the recommended form.

    path: the file, e.g. ``PRED/<event>/<stem>.txt`` (folders are created). name: the image
    (``<stem>``, ``<stem>.jpg`` or ``<event>/<stem>.jpg``); line 1 is ``<stem>``.
    boxes_xyxy: (K, 4) float ``x1 y1 x2 y2`` in original-image pixels; scores: (K,).
    Line 2 is K; then one ``x y w h score`` line per box (``%.2f`` coordinates, ``%.6f`` score),
    sorted by descending score (stable), single spaces, ``\\n`` endings, no blank lines.
    """
    path = Path(path)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"write_predictions({path}): boxes have shape {boxes.shape}, not (K, 4)")
    if scores.shape != (len(boxes),):
        raise ValueError(
            f"write_predictions({path}): scores have shape {scores.shape}, not ({len(boxes)},)"
        )
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError(f"write_predictions({path}): boxes or scores are not all finite")
    stem = name.replace("\\", "/").rsplit("/", 1)[-1]
    if stem.lower().endswith(".jpg"):
        stem = stem[:-4]
    if not stem or any(c in stem for c in "\r\n"):
        raise ValueError(f"write_predictions({path}): image name {name!r} is not usable")
    order = np.argsort(-scores, kind="stable")
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])[order]
    lines = [stem, str(len(boxes))]
    lines += [
        f"{x:.2f} {y:.2f} {w:.2f} {h:.2f} {s:.6f}"
        for (x, y, w, h), s in zip(xywh.tolist(), scores[order].tolist())
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
