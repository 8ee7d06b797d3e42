"""``--save-mat``: the files the organisers' ``evaluation.m`` saves, for their ``wider_plot``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ufssd.atomic import atomic_write
from ufssd.evaluation.result import EvaluationResult

__all__ = ["save_pr_mat", "pr_mat_path"]

_NAME_RE = re.compile(r"[A-Za-z0-9_.+-]+")


def pr_mat_path(out_dir: str | Path, name: str, setting: str) -> Path:
    """``out_dir/<name>/wider_pr_info_<name>_<setting>_val.mat``: the layout of
    ``plot/baselines/Val/setting_int/<name>/`` that ``wider_plot.m`` reads."""
    return Path(out_dir) / name / f"wider_pr_info_{name}_{setting}_val.mat"


def save_pr_mat(out_dir: str | Path, name: str, result: EvaluationResult) -> list[Path]:
    """Write one MAT file per setting holding ``pr_cruve`` (1000 x 2 double, ``[precision,
    recall]``, the organisers' spelling) and ``legend_name`` (char), as ``evaluation.m`` does.

    MAT v7 format (scipy's v5 writer, compressed), written atomically. Returns the paths.
    """
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"save_pr_mat: method name {name!r} must be letters, digits and _ . + - only "
            "(it becomes part of the file name)"
        )
    from scipy.io import savemat

    paths = []
    for setting, res in result.settings.items():
        path = pr_mat_path(out_dir, name, setting)
        with atomic_write(path, "wb") as f:
            savemat(
                f,
                {"pr_cruve": np.asarray(res.pr_curve, dtype=np.float64), "legend_name": name},
                format="5",
                do_compression=True,
                oned_as="column",
            )
        paths.append(path)
    return paths
