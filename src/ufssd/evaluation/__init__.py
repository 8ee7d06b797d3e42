"""WIDER FACE evaluation, bit-exact with the organisers' MATLAB tool (NumPy + SciPy only).

``evaluate(pred_dir, gt_dir, subset=None, protocol="official")`` returns an
:class:`EvaluationResult` (AP and precision/recall curve per setting); ``write_predictions``
writes one image's file in the recommended form. ``docs/evaluation.md`` describes the protocol
choices; ``docs/widerface-eval-protocol.md`` (in the shared docs) is the specification.
This package never imports torch; matplotlib is imported only by ``plot_pr_curves``.
"""

from __future__ import annotations

from ufssd.evaluation.errors import (
    EvaluationError,
    GroundTruthError,
    PredictionFormatError,
    SubsetError,
)
from ufssd.evaluation.groundtruth import SETTINGS, GroundTruth, load_ground_truth, read_subset
from ufssd.evaluation.matfile import save_pr_mat
from ufssd.evaluation.plot import plot_pr_curves
from ufssd.evaluation.protocol import PROTOCOLS, THRESHOLDS, evaluate, score_predictions, voc_ap
from ufssd.evaluation.reader import PredictionIssue, Predictions, read_predictions
from ufssd.evaluation.result import EvaluationResult, SettingResult, save_json
from ufssd.evaluation.writer import write_predictions

__all__ = [
    "evaluate",
    "write_predictions",
    "EvaluationResult",
    "SettingResult",
    "score_predictions",
    "read_predictions",
    "load_ground_truth",
    "read_subset",
    "plot_pr_curves",
    "save_pr_mat",
    "save_json",
    "voc_ap",
    "GroundTruth",
    "Predictions",
    "PredictionIssue",
    "SETTINGS",
    "PROTOCOLS",
    "THRESHOLDS",
    "EvaluationError",
    "GroundTruthError",
    "PredictionFormatError",
    "SubsetError",
]
