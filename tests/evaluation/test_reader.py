"""Reading prediction files (§2 of the protocol); the writer is tested in test_writer.py."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ufssd.evaluation import PredictionFormatError, read_predictions
from ufssd.evaluation.reader import STATUS_EMPTY, STATUS_INVALID, STATUS_MISSING, STATUS_OK

from .conftest import write_pred

EV, ST = ["0--E"], ["img"]


def read_one(pred_dir, text: str, protocol="official", strict=False):
    path = pred_dir / EV[0] / f"{ST[0]}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return read_predictions(pred_dir, EV, ST, protocol=protocol, strict=strict)


def test_reads_exactly_n_lines_and_ignores_line_one(pred_dir):
    p = read_one(pred_dir, "anything at all\n2\n1 2 3 4 0.9\n5 6 7 8 0.8\n9 9 9 9 0.7\n")
    assert p.status.tolist() == [STATUS_OK]
    np.testing.assert_array_equal(p.boxes, [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(p.scores, [0.9, 0.8])


def test_no_final_newline_crlf_commas_tabs_and_extra_columns(pred_dir):
    p = read_one(pred_dir, "img.jpg\r\n3\r\n1,2,3,4,0.9\r\n5\t6\t7\t8\t0.8 7 7\r\n1 1 1 1 0.1")
    assert p.status.tolist() == [STATUS_OK]
    np.testing.assert_array_equal(p.scores, [0.9, 0.8, 0.1])
    np.testing.assert_array_equal(p.boxes[1], [5, 6, 7, 8])


@pytest.mark.parametrize("count", ["0", "0.0", "  0 "])
def test_zero_boxes_is_an_empty_valid_file(pred_dir, count):
    p = read_one(pred_dir, f"img\n{count}\n")
    assert p.status.tolist() == [STATUS_EMPTY] and p.scores.size == 0 and not p.invalid


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("img\n3\n1 2 3 4 0.9\n1 2 3 4 0.8\n", 5, "count says 3"),  # short file
        ("img\n2\n1 2 3 4 0.9\n\n1 2 3 4 0.8\n", 4, "blank"),
        ("img\n2\n1 2 3 4 0.9\n1 2 3 4\n", 4, "fewer than 5"),
        ("img\n2\n1 2 3 4 0.9\n1 2 3 4 high\n", 4, "not a list of numbers"),
        ("img\n-1\n", 2, "not a non-negative integer"),
        ("img\n2.5\n1 2 3 4 5\n1 2 3 4 5\n1 2 3 4 5\n", 2, "not a non-negative integer"),
        ("img\nmany\n", 2, "not a non-negative integer"),
        ("img", 2, "no line 2"),
    ],
)
def test_invalid_file_drops_the_image_and_names_file_and_line(pred_dir, caplog, text, line, reason):
    with caplog.at_level(logging.WARNING, logger="ufssd.evaluation"):
        p = read_one(pred_dir, text)
    assert p.status.tolist() == [STATUS_INVALID]
    assert p.scores.size == 0  # the valid lines of the file are dropped too
    (issue,) = p.invalid
    assert issue.line == line and reason in issue.reason and issue.path.endswith("img.txt")
    assert f"line {line}" in caplog.text and "img.txt" in caplog.text
    with pytest.raises(PredictionFormatError) as exc:
        read_one(pred_dir, text, strict=True)
    assert exc.value.line == line and exc.value.path.endswith("img.txt")
    assert f"img.txt, line {line}" in str(exc.value)


def test_missing_file_is_a_warning_and_no_detections(pred_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="ufssd.evaluation"):
        p = read_predictions(pred_dir, EV, ST)
    assert p.status.tolist() == [STATUS_MISSING] and p.scores.size == 0
    assert "img.txt" in caplog.text and len(p.missing) == 1
    # strict concerns the format only: a missing file stays a warning
    assert read_predictions(pred_dir, EV, ST, strict=True).status.tolist() == [STATUS_MISSING]


def test_port_reads_every_non_blank_line_after_line_two(pred_dir, caplog):
    text = "other_name.jpg\n1\n1 2 3 4 0.9\n\n5 6 7 8 0.8\n"
    assert read_one(pred_dir, text).scores.tolist() == [0.9]
    with caplog.at_level(logging.WARNING, logger="ufssd.evaluation"):
        port = read_one(pred_dir, text, protocol="port")
    assert port.scores.tolist() == [0.9, 0.8]  # D3: the count line is ignored
    assert "other_name.jpg" in caplog.text  # D4: the port would key the image by line 1
    assert read_one(pred_dir, "img\n5\n", protocol="port").status.tolist() == [STATUS_EMPTY]


def test_many_files_are_split_back_per_image(pred_dir):
    events = ["0--E"] * 3 + ["1--F"] * 2
    stems = [f"s{k}" for k in range(5)]
    rows = {0: [[1, 1, 1, 1, 0.5]] * 3, 1: [], 2: [[2, 2, 2, 2, 0.7]], 4: [[3, 3, 3, 3, 0.1]] * 2}
    for k, (e, s) in enumerate(zip(events, stems)):
        if k != 3:
            write_pred(pred_dir, e, s, rows[k])
    p = read_predictions(pred_dir, events, stems)
    assert p.offsets.tolist() == [0, 3, 3, 4, 4, 6]
    assert p.status.tolist() == [STATUS_OK, STATUS_EMPTY, STATUS_OK, STATUS_MISSING, STATUS_OK]
    np.testing.assert_array_equal(p.scores, [0.5] * 3 + [0.7, 0.1, 0.1])
