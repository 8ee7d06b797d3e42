"""Helpers for the evaluator's tests: synthetic ground-truth ``.mat`` files in the organisers'
layout, and prediction files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

SETTINGS = ("easy", "medium", "hard")


def _cell(items) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def write_gt(folder: Path, images: list[dict]) -> Path:
    """Write ``wider_{face,easy,medium,hard}_val.mat`` for ``images``.

    Each image: ``{"event": str, "stem": str, "boxes": [[x, y, w, h], ...],
    "counted": {"easy": [0-based rows], "medium": [...], "hard": [...]}}``; a setting missing
    from ``counted`` counts every box. Events keep their order of first appearance.
    """
    folder.mkdir(parents=True, exist_ok=True)
    events: list[str] = []
    for im in images:
        if im["event"] not in events:
            events.append(im["event"])
    per_event = {e: [im for im in images if im["event"] == e] for e in events}
    files = _cell([_cell([im["stem"] for im in per_event[e]]) for e in events])
    boxes = _cell(
        [
            _cell([np.asarray(im["boxes"], dtype=np.int32).reshape(-1, 4) for im in per_event[e]])
            for e in events
        ]
    )
    event_list = _cell(events)
    savemat(
        folder / "wider_face_val.mat",
        {"event_list": event_list, "file_list": files, "face_bbx_list": boxes},
    )
    for s in SETTINGS:
        gt_list = _cell(
            [
                _cell(
                    [
                        (
                            np.asarray(
                                im.get("counted", {}).get(s, range(len(im["boxes"]))),
                                dtype=np.uint16,
                            )
                            + 1
                        ).reshape(-1, 1)
                        for im in per_event[e]
                    ]
                )
                for e in events
            ]
        )
        savemat(
            folder / f"wider_{s}_val.mat",
            {
                "event_list": event_list,
                "file_list": files,
                "face_bbx_list": boxes,
                "gt_list": gt_list,
            },
        )
    return folder


def write_pred(
    folder: Path, event: str, stem: str, rows, count: int | None = None, first: str | None = None
) -> Path:
    """One prediction file: line 1 ``first`` (default the stem), line 2 ``count`` (default the
    number of rows), then the rows (strings are written as they are, sequences joined by spaces)."""
    path = folder / event / f"{stem}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [stem if first is None else first, str(len(rows) if count is None else count)]
    for r in rows:
        lines.append(r if isinstance(r, str) else " ".join(repr(float(v)) for v in r))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def gt_factory(tmp_path):
    def make(images: list[dict]) -> Path:
        return write_gt(tmp_path / "gt", images)

    return make


@pytest.fixture
def pred_dir(tmp_path) -> Path:
    d = tmp_path / "pred"
    d.mkdir()
    return d
