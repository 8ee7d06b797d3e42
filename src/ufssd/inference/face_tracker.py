"""Keeping faces hidden in video when the detector misses them for a few frames (``--persist N``).

A face found in frame ``t`` stays hidden, at its last box, for up to ``N`` frames after the
detector loses it (:data:`DEFAULT_PERSIST` = 1 for ``ufssd blur``). Faces are followed from
frame to frame by the IoU of their boxes: each frame's detections are matched greedily (highest
IoU first, IoU >= ``iou_threshold``) to the faces being followed; a matched face takes the new
box, an unmatched detection starts a new face, and a face unmatched for more than ``N`` frames
is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision

__all__ = ["FaceTracker", "HiddenFaces", "DEFAULT_PERSIST", "check_persist"]

# ``ufssd blur --persist`` by default (docs/anonymize.md, scripts/blur_persistence.py: the smallest N
# with the best share of faces hidden in every frame of the measured clips)
DEFAULT_PERSIST = 1


def check_persist(persist: int) -> int:
    """``persist`` if it is a valid number of frames (>= 0), else ``ValueError`` naming it: the
    one check of ``--persist``, made before any file is processed (``ufssd blur``)."""
    if persist < 0:
        raise ValueError(f"persist must be >= 0 frames, got {persist}")
    return persist


@dataclass
class HiddenFaces:
    """The faces to hide in one frame.

    boxes: ``(M, 4)`` float32 x1 y1 x2 y2; scores: ``(M,)`` float32 (a held face keeps the score
    of its last detection); held: ``(M,)`` int64, 0 for a face detected in this frame, ``k`` for
    one last detected ``k`` frames ago.
    """

    boxes: np.ndarray
    scores: np.ndarray
    held: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, 4)`` x ``(M, 4)`` x1 y1 x2 y2 -> ``(N, M)`` IoU (torchvision.ops.box_iou)."""
    return torchvision.ops.box_iou(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)).numpy()


class FaceTracker:
    """Feed one frame's detections at a time with :meth:`update`; it returns what to hide."""

    def __init__(self, persist: int, iou_threshold: float = 0.3) -> None:
        check_persist(persist)
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
        self.persist = persist
        self.iou_threshold = iou_threshold
        self._boxes = np.zeros((0, 4), np.float32)
        self._scores = np.zeros((0,), np.float32)
        self._missed = np.zeros((0,), np.int64)

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> HiddenFaces:
        """This frame's detections (``(K, 4)``, ``(K,)``) -> the detections plus the faces held
        from earlier frames (detections first, in their order)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        matched = np.zeros(len(self._boxes), bool)
        if len(boxes) and len(self._boxes):
            iou = box_iou(self._boxes, boxes)
            taken = np.zeros(len(boxes), bool)
            for flat in np.argsort(-iou, axis=None, kind="stable"):
                t, d = divmod(int(flat), len(boxes))
                if iou[t, d] < self.iou_threshold:
                    break
                if not matched[t] and not taken[d]:
                    matched[t] = taken[d] = True
        missed = self._missed[~matched] + 1
        keep = missed <= self.persist
        held_boxes, held_scores, held = self._boxes[~matched][keep], self._scores[~matched][keep], missed[keep]
        self._boxes = np.concatenate([boxes, held_boxes])
        self._scores = np.concatenate([scores, held_scores])
        self._missed = np.concatenate([np.zeros(len(boxes), np.int64), held])
        return HiddenFaces(self._boxes.copy(), self._scores.copy(), self._missed.copy())
