"""What an evaluation returns: per-setting AP and PR curve, and the reading counts."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ufssd.atomic import atomic_write_text
from ufssd.evaluation.reader import PredictionIssue

__all__ = ["SettingResult", "EvaluationResult", "save_json"]


@dataclass(frozen=True)
class SettingResult:
    """One setting (easy / medium / hard).

    precision, recall: (1000,) float64 at the thresholds 0.999, 0.998, …, 0 (precision is NaN
    where nothing passes); true_positives, proposals: (1000,) int64, the summed counts behind
    them; faces: the recall denominator (the setting's counted faces of all evaluated images).
    """

    name: str
    ap: float
    precision: np.ndarray
    recall: np.ndarray
    true_positives: np.ndarray
    proposals: np.ndarray
    faces: int

    @property
    def pr_curve(self) -> np.ndarray:
        """(1000, 2) ``[precision, recall]``: the ``pr_cruve`` that ``evaluation.m`` saves."""
        return np.column_stack([self.precision, self.recall])

    def to_dict(self) -> dict:
        return {
            "ap": _json_float(self.ap),
            "precision": [_json_float(x) for x in self.precision.tolist()],
            "recall": [_json_float(x) for x in self.recall.tolist()],
            "faces": self.faces,
        }


@dataclass(frozen=True)
class EvaluationResult:
    """APs and curves of one prediction folder.

    settings: ``{"easy": SettingResult, "medium": …, "hard": …}``; images: evaluated images;
    detections: boxes read; missing / invalid: the prediction files that gave their image no
    detections; protocol: ``"official"`` or ``"port"``.
    """

    settings: dict[str, SettingResult]
    protocol: str
    images: int
    detections: int
    missing: tuple[PredictionIssue, ...] = field(default=())
    invalid: tuple[PredictionIssue, ...] = field(default=())

    def __getitem__(self, setting: str) -> SettingResult:
        return self.settings[setting]

    @property
    def aps(self) -> dict[str, float]:
        return {name: s.ap for name, s in self.settings.items()}

    def summary_lines(self) -> list[str]:
        """One line per setting: AP to 4 decimals and the counts."""
        return [
            f"{name:<6s} AP {_fmt(s.ap)}  ({self.images} images, {s.faces} faces, "
            f"{len(self.missing)} missing, {len(self.invalid)} invalid prediction files)"
            for name, s in self.settings.items()
        ]

    def to_dict(self) -> dict:
        """JSON-ready: the settings, ``images``, ``missing``, ``invalid`` (counts) and details;
        NaN becomes None."""
        out: dict = {name: s.to_dict() for name, s in self.settings.items()}
        out.update(
            images=self.images,
            missing=len(self.missing),
            invalid=len(self.invalid),
            detections=self.detections,
            protocol=self.protocol,
            missing_files=[m.path for m in self.missing],
            invalid_files=[
                {"path": m.path, "line": m.line, "reason": m.reason} for m in self.invalid
            ],
        )
        return out


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _fmt(ap: float) -> str:
    return "nan   " if math.isnan(ap) else f"{ap:.4f}"


def save_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as JSON, atomically (NaN is not allowed: use ``to_dict``, which makes
    it None)."""
    path = Path(path)
    # one top-level key per line, curves on one line each
    text = json.dumps(payload, allow_nan=False)  # validates: raises on NaN
    text = "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in payload.items())
    text += "\n}\n"
    atomic_write_text(path, text)
    return path
