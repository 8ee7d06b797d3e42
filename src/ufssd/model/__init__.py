"""The network: backbones, FEM / FFMM / MCDM, heads, the `UFSSD` module, input helpers, weight files."""

from ufssd.model.fuse import fuse_batchnorm
from ufssd.model.modules import FEM, FFMM, MCDM, L2Norm
from ufssd.model.network import RawOutput, UFSSD, build_model, validate_model_config
from ufssd.model.serialization import WeightFileError, load_weights, save_weights
from ufssd.model.transform import normalize, pad_to_multiple

__all__ = [
    "FEM",
    "FFMM",
    "L2Norm",
    "MCDM",
    "RawOutput",
    "UFSSD",
    "WeightFileError",
    "build_model",
    "fuse_batchnorm",
    "load_weights",
    "normalize",
    "pad_to_multiple",
    "save_weights",
    "validate_model_config",
]
