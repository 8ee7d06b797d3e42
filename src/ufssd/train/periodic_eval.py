"""The trainer's periodic evaluation (rank 0): detect the dev images with the model being trained,
write WIDER prediction files and score them with the official protocol.

Guarded: training works without the inference / evaluation packages (logged), an evaluation
that fails is logged and skipped (it must not kill a long run), and no generator the training
uses is disturbed.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ufssd.train.checkpoint import preserved_rng
from ufssd.train.run_config import EvalSpec
from ufssd.widerface_files import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

__all__ = ["evaluate_model"]

def evaluate_model(model: nn.Module, spec: EvalSpec, out_dir: Path, step: int) -> dict[str, float] | None:
    """Detect + evaluate; returns the ``{"easy", "medium", "hard", "mean"}`` APs, or None when the
    evaluation could not run. The prediction files go to ``out_dir/eval_tmp/`` and are removed."""
    try:
        from ufssd.evaluation import evaluate
        from ufssd.inference import FaceDetector, predict_widerface
    except ImportError as exc:
        logger.warning("step %d: evaluation skipped (%s)", step, exc)
        return None
    pred_dir = out_dir / "eval_tmp" / f"step_{step:08d}"
    files = [n if n.lower().endswith(IMAGE_EXTENSIONS) else f"{n}.jpg" for n in spec.names]
    was_training = model.training
    model.eval()
    try:
        with preserved_rng(), torch.no_grad():
            detector = FaceDetector.from_model(model, **spec.detector_kwargs)
            predict_widerface(
                detector, spec.image_root, files, pred_dir, score_threshold=spec.score_threshold, progress=False
            )
        result = evaluate(pred_dir, spec.gt_dir, subset=files)
    except Exception:  # an evaluation failure must not kill a long run
        logger.exception("step %d: evaluation failed", step)
        return None
    finally:
        model.train(was_training)
        shutil.rmtree(pred_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            pred_dir.parent.rmdir()  # eval_tmp/, when empty
    aps = _aps_of(result)
    if aps is None:
        logger.warning("step %d: cannot read APs from the evaluation result %r", step, type(result).__name__)
    return aps


def _aps_of(result: Any) -> dict[str, float] | None:
    """easy/medium/hard APs (and their mean) of an ``EvaluationResult``."""
    try:
        aps = {key: float(result.aps[key]) for key in ("easy", "medium", "hard")}
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    aps["mean"] = (aps["easy"] + aps["medium"] + aps["hard"]) / 3.0
    return aps
