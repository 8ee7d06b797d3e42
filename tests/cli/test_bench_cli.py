"""``ufssd bench``: a Markdown table per size / backend / batch, machine and threads, JSON."""

from __future__ import annotations

import json

import pytest

from ufssd.cli import main
from ufssd.inference.bench import parse_sizes

pytest.importorskip("onnxruntime")


def test_bench_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "--preset", "ufssd_light", "--sizes", "160x128,100x90", "--backend", "torch,onnxruntime",
            "--batch", "1,2", "--repeats", "2", "--warmup", "1", "--threads", "1", "--json", str(out)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "1 threads" in table and "| backend | size (WxH) | batch | median ms/img" in table
    rows = [ln for ln in table.splitlines() if ln.startswith("| torch") or ln.startswith("| onnxruntime")]
    assert len(rows) == 2 * 2 * 2
    doc = json.loads(out.read_text())
    assert doc["machine"]["threads"] == 1 and len(doc["rows"]) == 8
    r = doc["rows"][0]
    assert r["median_ms"] >= r["min_ms"] > 0 and r["p90_ms"] >= r["median_ms"]
    assert r["pre_ms"] + r["net_ms"] + r["post_ms"] <= r["median_ms"] * 1.5


def test_bench_argument_errors(capsys):
    assert main(["bench", "--preset", "ufssd_light", "--sizes", "640by480"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["bench", "--preset", "ufssd_light", "--backend", "tensorrt"]) == 2
    assert parse_sizes("640x480, 1024x768") == [(640, 480), (1024, 768)]
