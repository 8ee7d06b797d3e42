"""Finding faces: :class:`FaceDetector` (load, resize/pad, network, decode, NMS, TTA, ONNX).

``ufssd.FaceDetector`` and ``ufssd.Detection`` are these names (imported lazily by ``ufssd``).
"""

from ufssd.images import (
    MAX_INPUT_PIXELS,
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    InputError,
    MissingInputError,
    NotAnImageError,
)
from ufssd.inference.face_detector import DefaultWeightsMissingError, FaceDetector, default_weights_path
from ufssd.inference.io import NoImagesFoundError, UnreadableVideoError, load_image
from ufssd.inference.postprocess import postprocess
from ufssd.inference.results import Detection, DetectionResult
from ufssd.inference.tta import TTAConfig
from ufssd.inference.widerface import predict_widerface

__all__ = [
    "FaceDetector",
    "Detection",
    "DetectionResult",
    "TTAConfig",
    "postprocess",
    "predict_widerface",
    "load_image",
    "default_weights_path",
    "DefaultWeightsMissingError",
    "MAX_INPUT_PIXELS",
    "InputError",
    "MissingInputError",
    "EmptyImageError",
    "NotAnImageError",
    "CorruptImageError",
    "ImageTooLargeError",
    "UnreadableVideoError",
    "NoImagesFoundError",
]
