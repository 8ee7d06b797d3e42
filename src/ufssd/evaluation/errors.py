"""Exceptions of the WIDER FACE evaluator; each names the file (and line) that is wrong."""

from __future__ import annotations

from pathlib import Path

__all__ = ["EvaluationError", "GroundTruthError", "SubsetError", "PredictionFormatError"]


class EvaluationError(Exception):
    """Base class of the evaluator's errors."""


class GroundTruthError(EvaluationError, ValueError):
    """A ground-truth ``.mat`` file is missing or not what the organisers' files hold."""


class SubsetError(EvaluationError, ValueError):
    """A subset list names an image that is not in the ground truth, or cannot be read."""


class PredictionFormatError(EvaluationError, ValueError):
    """A prediction file breaks the official format (raised only with ``strict=True``)."""

    def __init__(self, path: str | Path, line: int, reason: str, more: int = 0) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        self.more = more
        extra = f" (and {more} more invalid prediction files)" if more else ""
        super().__init__(f"{self.path}, line {line}: {reason}{extra}")
