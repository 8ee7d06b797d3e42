"""Training logs: a CSV of every logged step, TensorBoard scalars, the eval history, a progress bar.

Only rank 0 creates these (the trainer passes ``enabled=False`` elsewhere). On resume, rows
logged after the checkpoint's step (by the run that was interrupted) are dropped, so the files
read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ufssd.atomic import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["CSVLog", "TensorBoardLog", "EvalHistory", "ProgressBar", "TRAIN_LOG_FIELDS", "EVAL_FIELDS"]

TRAIN_LOG_FIELDS = (
    "step",
    "lr",
    "loss",
    "cls",
    "loc",
    "mask",
    "images_per_s",
    "data_s",
    "step_s",
    "elapsed_s",
)
EVAL_FIELDS = ("step", "easy", "medium", "hard", "mean")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _read_rows(path: Path) -> tuple[list[str] | None, list[dict[str, str]]]:
    if not path.is_file():
        return None, []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _render(fields: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(row.get(k, "")) for k in fields})
    return buf.getvalue()


class CSVLog:
    """Append-only CSV with a fixed header; reopened on resume without rows past ``start_step``."""

    def __init__(self, path: str | os.PathLike, fields: Sequence[str], start_step: int = 0, enabled: bool = True) -> None:
        self.path = Path(path)
        self.fields = tuple(fields)
        self.enabled = enabled
        self._file = None
        if not enabled:
            return
        old_fields, rows = _read_rows(self.path)
        keep = [r for r in rows if _step_of(r) <= start_step] if old_fields == list(self.fields) else []
        if old_fields is not None and old_fields != list(self.fields):
            logger.warning("%s: unexpected header, starting a new log", self.path)
        # rewrite atomically (drops rows of an interrupted run), then append
        atomic_write_text(self.path, _render(self.fields, keep))
        self._file = self.path.open("a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=list(self.fields), extrasaction="ignore", lineterminator="\n")

    def write(self, row: Mapping[str, Any]) -> None:
        if self._file is None:
            return
        self._writer.writerow({k: _format(row.get(k, "")) for k in self.fields})
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _step_of(row: Mapping[str, str]) -> int:
    try:
        return int(float(row.get("step", "0") or 0))
    except ValueError:
        return 0


class EvalHistory:
    """``eval_history.csv``: one row per periodic evaluation (step, easy, medium, hard, mean AP),
    rewritten atomically after each evaluation: the learning curve of the run."""

    def __init__(self, path: str | os.PathLike, start_step: int = 0, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        if enabled:
            fields, rows = _read_rows(self.path)
            if fields is not None:
                self.rows = [dict(r) for r in rows if _step_of(r) <= start_step]
            if self.rows or fields is not None:
                atomic_write_text(self.path, _render(EVAL_FIELDS, self.rows))

    def best(self, key: str) -> tuple[float, int]:
        """``(best value of key, its step)`` so far, ``(-inf, -1)`` when empty."""
        best, step = -math.inf, -1
        for r in self.rows:
            try:
                v = float(r[key])
            except (KeyError, ValueError, TypeError):
                continue
            if not math.isnan(v) and v > best:
                best, step = v, _step_of(r)
        return best, step

    def add(self, row: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        self.rows.append(dict(row))
        atomic_write_text(self.path, _render(EVAL_FIELDS, self.rows))


class TensorBoardLog:
    """Scalars to TensorBoard (``out/tensorboard``) when the ``tensorboard`` package is installed."""

    def __init__(self, log_dir: str | os.PathLike, start_step: int = 0, enabled: bool = True) -> None:
        self._writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except (ImportError, ModuleNotFoundError) as exc:
            logger.warning("TensorBoard logging off: %s (pip install tensorboard)", exc)
            return
        # purge_step drops events past the resumed step, as the CSV does
        self._writer = SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step > 0 else None)

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        if self._writer is None:
            return
        for key, value in values.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            self._writer.add_scalar(f"{prefix}{key}", float(value), step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ProgressBar:
    """A tqdm bar over iterations (rank 0 only): losses, lr and images/s as postfix; ETA by tqdm."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, desc="train")

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def postfix(self, values: Mapping[str, Any]) -> None:
        if self._bar is not None:
            self._bar.set_postfix(
                {k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in values.items()}, refresh=False
            )

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
