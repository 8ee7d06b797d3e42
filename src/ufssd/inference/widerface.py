"""WIDER FACE prediction files from a :class:`FaceDetector` (used by ``ufssd predict-widerface``
and by the trainer's periodic evaluation).

One file per image, ``out_dir/<event>/<stem>.txt`` in the evaluator's format (see
``widerface-eval-protocol.md``, "Writing prediction files"), written by
:func:`ufssd.evaluation.write_predictions`, which writes a temporary file and then replaces the
target, so an interrupted run leaves no partial file. Images are read without their EXIF orientation (the
annotations refer to the stored pixels).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ufssd.inference.face_detector import FaceDetector
from ufssd.inference.io import load_image
from ufssd.inference.tta import TTAConfig

__all__ = ["predict_widerface", "PredictionSummary", "list_images"]

log = logging.getLogger(__name__)


@dataclass
class PredictionSummary:
    """What :func:`predict_widerface` did; ``input_policy`` names the settings actually used."""

    images: int
    detections: int
    out_dir: Path
    input_policy: str


def list_images(image_root: str | os.PathLike) -> list[str]:
    """Every ``<event>/<name>.jpg`` under ``image_root`` (sorted)."""
    root = Path(image_root)
    return sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.jpg"))


def predict_widerface(
    detector: FaceDetector,
    image_root: str | os.PathLike,
    names: Sequence[str],
    out_dir: str | os.PathLike,
    tta: TTAConfig | str | None = None,
    progress: bool = True,
    score_threshold: float | None = None,
) -> PredictionSummary:
    """Detect faces in ``image_root/<name>`` for every name and write the prediction files.

    Args:
        detector: a :class:`~ufssd.inference.FaceDetector` (its NMS IoU and top-k apply; the
            defaults are the protocol's 0.3 and 750).
        image_root: the ``WIDER_val/images`` folder (event sub-folders).
        names: ``"<event>/<name>.jpg"`` each.
        out_dir: the prediction folder; ``<event>/<stem>.txt`` files are (over)written in it.
        tta: test-time augmentation (``None``: single scale).
        score_threshold: ``None``: the detector's ``InferenceConfig.eval_score_threshold`` (0.01,
            the protocol's low threshold).
    Raises:
        ufssd.inference.io.InputError if an image cannot be read (every image needs a file).
    """
    from ufssd.evaluation import write_predictions

    image_root, out_dir = Path(image_root), Path(out_dir)
    tta_cfg = TTAConfig.parse(tta)
    cfg = detector.resolve(score_threshold, evaluation=True)
    total = 0
    iterator = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="predict-widerface", unit="img", dynamic_ncols=True)
    for name in iterator:
        rel = PurePosixPath(name)
        if len(rel.parts) != 2:
            raise ValueError(f"image name must be '<event>/<name>.jpg', got {name!r}")
        image = load_image(image_root / rel, exif=False)
        result = detector.detect(image, score_threshold=cfg.score_threshold, tta=tta_cfg)
        target = out_dir / rel.parent / f"{rel.stem}.txt"
        write_predictions(target, rel.stem, result.boxes, result.scores)  # atomic (temp + replace)
        total += len(result)
    log.info("wrote %d prediction files (%d detections) to %s", len(names), total, out_dir)
    return PredictionSummary(len(names), total, out_dir, detector.describe_input_policy(cfg, tta=tta_cfg))
