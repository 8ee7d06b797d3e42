"""Writing prediction files in the recommended form, and reading them back."""

from __future__ import annotations

import numpy as np
import pytest

from ufssd.evaluation import read_predictions, write_predictions


def test_write_predictions_format_and_round_trip(tmp_path):
    boxes = np.array([[10.0, 20.0, 30.5, 60.25], [0, 0, 5, 5], [1.004, 2, 3, 4]])
    scores = np.array([0.5, 0.9, 0.5])
    path = write_predictions(tmp_path / "0--E" / "img.txt", "0--E/img.jpg", boxes, scores)
    lines = path.read_text().split("\n")
    assert lines[:3] == ["img", "3", "0.00 0.00 5.00 5.00 0.900000"]
    assert lines[3] == "10.00 20.00 20.50 40.25 0.500000"  # x y w h; ties keep their order
    assert lines[4] == "1.00 2.00 2.00 2.00 0.500000" and lines[5] == ""  # one final newline
    p = read_predictions(tmp_path, ["0--E"], ["img"])
    np.testing.assert_allclose(p.boxes[:, :2], boxes[[1, 0, 2], :2], atol=0.005)
    np.testing.assert_array_equal(p.scores, [0.9, 0.5, 0.5])
    empty = write_predictions(tmp_path / "e.txt", "e", np.zeros((0, 4)), np.zeros(0))
    assert empty.read_text() == "e\n0\n"
    with pytest.raises(ValueError, match="shape"):
        write_predictions(tmp_path / "x.txt", "x", np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        write_predictions(tmp_path / "x.txt", "x", np.zeros((1, 4)), np.array([np.nan]))
    assert not list(tmp_path.glob("**/.*.tmp"))  # atomic writes leave no temporary files
