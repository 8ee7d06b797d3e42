"""Where a detector loses its AP: recall ceiling by face height, localisation, false positives.

The three tables of the shared ``diagnosis-v3.md`` (made there by ``tools/diagnose_dev.py``), for
any prediction folder (every box the detector wrote, score >= 0.01):

1. recall ceiling by face height: the share of faces that some box overlaps with IoU >= 0.5,
   whatever its score (no threshold can do better);
2. localisation: for faces at least 32 px high, the distribution of each face's best IoU;
3. false positives per image: boxes whose IoU with every face is < 0.3, at scores 0.3 .. 0.9.

Faces are the annotated boxes that are not ``invalid`` and have a positive size (``Sample.ignore``
is False). Not one-to-one matching: a size and quality profile, not an AP. NumPy only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ufssd.evaluation.reader import read_predictions

__all__ = ["HEIGHT_BINS", "IOU_BINS", "FP_SCORES", "Diagnosis", "diagnose", "pairwise_iou_xyxy"]

HEIGHT_BINS = (0.0, 10.0, 16.0, 24.0, 32.0, 48.0, 64.0, 128.0, float("inf"))
IOU_BINS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0001)
FP_SCORES = (0.3, 0.5, 0.7, 0.9)
LOCALISATION_MIN_HEIGHT = 32.0


def _bin_names(edges: Sequence[float], fmt: str) -> list[str]:
    names = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if lo == edges[0]:
            names.append(f"<{hi:{fmt}}")
        elif hi == edges[-1]:
            names.append(f">={lo:{fmt}}")
        else:
            names.append(f"{lo:{fmt}}-{hi:{fmt}}")
    return names


@dataclass(frozen=True)
class Diagnosis:
    """The three tables; shares are in [0, 1] (NaN for an empty bin)."""

    images: int
    faces_by_height: tuple[int, ...]  # per HEIGHT_BINS bin
    recall_ceiling: tuple[float, ...]  # per HEIGHT_BINS bin
    large_faces: int  # faces >= 32 px
    best_iou_shares: tuple[float, ...]  # per IOU_BINS bin, faces >= 32 px
    fp_per_image: tuple[float, ...]  # per FP_SCORES

    @property
    def share_below_05(self) -> float:
        """Faces >= 32 px whose best box has IoU < 0.5 (the first three IoU bins)."""
        return float(sum(self.best_iou_shares[:3]))

    @property
    def share_at_08(self) -> float:
        """Faces >= 32 px whose best box has IoU >= 0.8 (the last IoU bin)."""
        return float(self.best_iou_shares[-1])

    def to_dict(self) -> dict:
        return {**asdict(self), "share_below_0.5": self.share_below_05, "share_at_0.8": self.share_at_08}

    def markdown(self, name: str = "ours") -> str:
        """The three tables, one row each for ``name``."""
        heights = _bin_names(HEIGHT_BINS, "g")
        ious = _bin_names(IOU_BINS[:-1] + (1.0,), ".1f")
        ious[-1] = ">=.8"

        def table(title: str, head: list[str], row: Sequence[float], fmt: str) -> str:
            lines = [title, "", "| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
            lines.append(f"| {name} | " + " | ".join(format(v, fmt) for v in row) + " |")
            return "\n".join(lines)

        return "\n\n".join(
            [
                table("Recall ceiling by face height (px): some box with IoU >= 0.5, any score", heights,
                      self.recall_ceiling, ".3f"),
                table(f"Best-box IoU of the {self.large_faces} faces >= 32 px", ious, self.best_iou_shares, ".3f"),
                table("False positives per image (IoU < 0.3 with every face), at score >=",
                      [f"{s:g}" for s in FP_SCORES], self.fp_per_image, ".2f"),
            ]
        )


def pairwise_iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``(G, 4)`` against ``(D, 4)`` x1 y1 x2 y2 boxes -> ``(G, D)`` (NumPy; 0 where the
    union is empty; a box of negative width or height has area 0)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _shares(values: np.ndarray, edges: Sequence[float]) -> tuple[float, ...]:
    counts = np.histogram(values, bins=np.asarray(edges, dtype=np.float64))[0]
    total = counts.sum()
    return tuple(float(c / total) if total else float("nan") for c in counts)


def diagnose(pred_dir: str | os.PathLike, samples: Sequence) -> Diagnosis:
    """The three tables for the prediction folder ``pred_dir`` (``<event>/<stem>.txt``) against
    ``samples`` (``ufssd.widerface_files.Sample``: ``name`` "<event>/<stem>", ``boxes`` xyxy,
    ``ignore``). A missing prediction file counts as an image with no boxes."""
    events = [s.name.split("/")[0] for s in samples]
    stems = [s.name.split("/")[-1] for s in samples]
    preds = read_predictions(pred_dir, events, stems)
    heights, best, fps = [], [], np.zeros(len(FP_SCORES))
    for i, s in enumerate(samples):
        lo, hi = preds.offsets[i], preds.offsets[i + 1]
        xywh, scores = preds.boxes[lo:hi], preds.scores[lo:hi]
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        faces = np.asarray(s.boxes, dtype=np.float64)[~np.asarray(s.ignore, dtype=bool)]
        iou = pairwise_iou_xyxy(faces, boxes)  # (G, D)
        heights.append(faces[:, 3] - faces[:, 1])
        best.append(iou.max(axis=1) if iou.shape[1] else np.zeros(len(faces)))
        background = iou.max(axis=0) < 0.3 if iou.shape[0] else np.ones(len(boxes), dtype=bool)
        fps += [(background & (scores >= t)).sum() for t in FP_SCORES]
    height, best_iou = np.concatenate(heights), np.concatenate(best)
    bins = np.digitize(height, HEIGHT_BINS[1:-1], right=False)
    faces_by_height = tuple(int((bins == b).sum()) for b in range(len(HEIGHT_BINS) - 1))
    recall = tuple(
        float((best_iou[bins == b] >= 0.5).mean()) if faces_by_height[b] else float("nan")
        for b in range(len(HEIGHT_BINS) - 1)
    )
    large = height >= LOCALISATION_MIN_HEIGHT
    return Diagnosis(
        images=len(samples),
        faces_by_height=faces_by_height,
        recall_ceiling=recall,
        large_faces=int(large.sum()),
        best_iou_shares=_shares(best_iou[large], IOU_BINS),
        fp_per_image=tuple(float(v / max(len(samples), 1)) for v in fps),
    )
