"""``--plot``: precision-recall curves per setting, several methods on the same axes, like the
organisers' ``wider_plot.m`` (legend sorted by AP, AP in the legend). Imports matplotlib lazily."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from ufssd.atomic import atomic_path
from ufssd.evaluation.result import EvaluationResult

__all__ = ["plot_pr_curves"]


def plot_pr_curves(results: Mapping[str, EvaluationResult], out_path: str | Path) -> Path:
    """One panel per setting (easy, medium, hard); ``results`` maps a method name to its result.

    Each legend entry reads ``name (AP 0.9377)``; entries are sorted by AP, descending, per
    panel. The figure is written atomically to ``out_path`` (format from its suffix).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("plot_pr_curves: no results to plot")
    out_path = Path(out_path)
    settings = list(next(iter(results.values())).settings)
    fig, axes = plt.subplots(1, len(settings), figsize=(5.2 * len(settings), 4.6), squeeze=False)
    if len(results) <= 10:
        colours = {name: plt.get_cmap("tab10")(k) for k, name in enumerate(results)}
    else:  # wider_plot's hsv colour map
        cmap = plt.get_cmap("hsv", len(results) + 1)
        colours = {name: cmap(k) for k, name in enumerate(results)}
    for ax, setting in zip(axes[0], settings):
        ranked = sorted(
            results.items(),
            key=lambda kv: -kv[1][setting].ap if not math.isnan(kv[1][setting].ap) else math.inf,
        )
        for name, res in ranked:
            s = res[setting]
            ap = "nan" if math.isnan(s.ap) else f"{s.ap:.4f}"
            ax.plot(s.recall, s.precision, lw=2, color=colours[name], label=f"{name} (AP {ap})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("Recall")
        ax.set_ylabel("Precision")
        ax.set_title(f"WIDER FACE val: {setting}")
        ax.grid(True, alpha=0.4)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(out_path, suffix=out_path.suffix or ".png") as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return out_path
