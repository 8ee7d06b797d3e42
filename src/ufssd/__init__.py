"""ufssd: feature-map-masking single-stage face detection (UF-SSD with FFMM, FEM and MCDM).

Torch-dependent names are imported lazily (PEP 562), so ``import ufssd.evaluation`` never
imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "list_presets": ("ufssd.presets", "list_presets"),
    "get_preset": ("ufssd.presets", "get_preset"),
    "DetectorConfig": ("ufssd.config", "DetectorConfig"),
    "build_model": ("ufssd.model", "build_model"),
    "FaceDetector": ("ufssd.inference", "FaceDetector"),
    "Detection": ("ufssd.inference", "Detection"),
    "anonymize": ("ufssd.inference.anonymize", "anonymize"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'ufssd' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
