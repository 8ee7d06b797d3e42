"""What :meth:`FaceDetector.detect` returns: arrays plus small dataclasses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Detection", "DetectionResult"]


@dataclass(frozen=True)
class Detection:
    """One face: corners ``(x1, y1)`` top-left and ``(x2, y2)`` bottom-right in original-image
    pixels (floats; width ``x2 - x1``) and the face probability ``score`` in [0, 1]."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    def to_dict(self) -> dict[str, float]:
        return {"x1": self.x1, "y1": self.y1, "x2": self.x2, "y2": self.y2, "score": self.score}


@dataclass
class DetectionResult:
    """The faces of one image.

    Attributes:
        boxes: ``(K, 4) float32`` ``x1 y1 x2 y2`` in original-image pixels, clipped to the image,
            sorted by descending score.
        scores: ``(K,) float32``.
        image_size: ``(height, width)`` of the original image.
        input_size: ``(height, width)`` the network saw before padding (differs from
            ``image_size`` when the image was downscaled).
        source: the file path when the image came from one, else ``None``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]
    input_size: tuple[int, int] | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.boxes) != len(self.scores):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def detections(self) -> list[Detection]:
        return [
            Detection(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s))
            for b, s in zip(self.boxes, self.scores)
        ]

    def __iter__(self):
        return iter(self.detections)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: ``image``, ``width``, ``height``, ``detections`` (list of dicts)."""
        h, w = self.image_size
        out: dict[str, Any] = {"image": self.source, "width": int(w), "height": int(h)}
        out.update(self.extra)
        out["detections"] = [
            {k: round(v, 3 if k != "score" else 6) for k, v in d.to_dict().items()} for d in self.detections
        ]
        return out

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)
