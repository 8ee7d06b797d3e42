"""The vectorised number parser against ``float()`` and the grammar of docs/evaluation.md."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from ufssd.evaluation import parsing
from ufssd.evaluation.parsing import (
    LINE_BLANK,
    LINE_NOT_NUMERIC,
    LINE_OK,
    LINE_TOO_FEW,
    parse_lines,
)

FLOAT = re.compile(rb"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)", re.I)


def reference(line: bytes, ncols: int = 5):
    tokens = line.replace(b",", b" ").split()
    if not tokens:
        return LINE_BLANK, None
    if not all(FLOAT.fullmatch(t) for t in tokens):
        return LINE_NOT_NUMERIC, None
    if len(tokens) < ncols:
        return LINE_TOO_FEW, None
    return LINE_OK, [float(t) for t in tokens[:ncols]]


def check(lines: list[bytes]) -> None:
    values, status = parse_lines(b"\n".join(lines) + b"\n")
    assert len(status) == len(lines)
    for k, line in enumerate(lines):
        want_status, want = reference(line)
        assert status[k] == want_status, line
        if want_status == LINE_OK:
            got = values[k]
            for g, w in zip(got, want):
                # bit-identical to float(): same value, same sign of zero, NaN for NaN
                assert (np.isnan(g) and np.isnan(w)) or (
                    g == w and np.signbit(g) == np.signbit(w)
                ), (line, got, want)


def test_common_formats_are_bit_identical_to_float():
    rng = np.random.default_rng(0)
    values = rng.uniform(-5000, 5000, (400, 5))
    lines = []
    for fmt in (
        "%.1f",
        "%.2f",
        "%.3f",
        "%.6f",
        "%.0f",
        "%d",
        "%.9f",
        "%.12f",
        "%.17g",
        "%g",
        "%.4e",
    ):
        for row in values[:40]:
            lines.append(" ".join(fmt % v for v in row).encode())
    lines += [b"-0.0 -0 +0.5 .5 5.", b"007 0.000001 99999999 12345678.9 -.25"]
    check(lines)


def test_separators_extra_columns_and_special_values():
    check(
        [
            b"1,2,3,4,0.5",
            b"1\t2\t3\t4\t0.5\r",
            b"  1  2 ,3, 4 0.5  ",
            b"1 2 3 4 0.5 6 7 8",
            b"1 2 3 4 nan",
            b"1 2 3 4 -Inf",
            b"1e3 2E-2 3.5e+1 4 0.5",
        ]
    )


@pytest.mark.parametrize(
    "line, status",
    [
        (b"", LINE_BLANK),
        (b"   \t ", LINE_BLANK),
        (b"1 2 3 4", LINE_TOO_FEW),
        (b"1 2 3 4 x", LINE_NOT_NUMERIC),
        (b"1 2 3 4 0.5 junk", LINE_NOT_NUMERIC),  # str2num of the whole line fails
        (b"1 2 3 4 1.2.3", LINE_NOT_NUMERIC),
        (b"1 2 3 4 1-2", LINE_NOT_NUMERIC),
        (b"1 2 3 4 --1", LINE_NOT_NUMERIC),
        (b"1 2 3 4 1e", LINE_NOT_NUMERIC),
        (b"1 2 3 4 .", LINE_NOT_NUMERIC),
        (b"1 2 3 4 +", LINE_NOT_NUMERIC),
        (b"1 2 3 4 0x10", LINE_NOT_NUMERIC),
        (b"1;2;3;4;5", LINE_NOT_NUMERIC),
    ],
)
def test_invalid_lines(line, status):
    assert parse_lines(line + b"\n").status[0] == status


def test_random_lines_match_the_reference_across_chunk_boundaries(monkeypatch):
    rng = random.Random(1)
    alphabet = [
        "0",
        "1",
        "5",
        "9",
        ".",
        "-",
        "+",
        "e",
        "x",
        "n",
        " ",
        ",",
        "\t",
        "12.5",
        "1e3",
        "nan",
    ]
    lines = []
    for _ in range(400):
        if rng.random() < 0.6:
            fmt = rng.choice(["%.1f", "%.3f", "%.8f", "%d", "%g"])
            lines.append(
                " ".join(
                    fmt % rng.uniform(-1e4, 1e4) for _ in range(rng.choice([4, 5, 6]))
                ).encode()
            )
        else:
            lines.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))).encode())
    for chunk in (16, 256, 1 << 18):
        monkeypatch.setattr(parsing, "_CHUNK", chunk)
        check(lines)


def test_text_must_end_with_newline():
    with pytest.raises(ValueError, match="newline"):
        parse_lines(b"1 2 3 4 5")
    assert parse_lines(b"").values.shape == (0, 5)
