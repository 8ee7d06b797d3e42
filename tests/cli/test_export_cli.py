"""``ufssd export``: ONNX file with the parity report; the file then drives ``ufssd detect``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ufssd.cli import main

pytest.importorskip("onnxruntime")


def test_export_then_detect_with_the_onnx_file(tmp_path, capsys):
    out = tmp_path / "light.onnx"
    assert main(["export", "--preset", "ufssd_light_ffmm_x1", "--format", "onnx", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "parity vs PyTorch" in err and "-> OK" in err and f"wrote {out}" in err
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == ["light.onnx"]

    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)).save(image)
    jsonl = tmp_path / "d.jsonl"
    args = ["detect", str(image), "--weights", str(out), "--threshold", "0", "--jsonl", str(jsonl), "--no-progress"]
    assert main(args) == 0
    (record,) = [json.loads(ln) for ln in jsonl.read_text().splitlines()]
    assert record["width"] == 150 and len(record["detections"]) > 0


def test_export_errors(tmp_path, capsys, monkeypatch):
    from ufssd.inference import loading

    monkeypatch.setattr(loading, "default_weights_path", lambda: tmp_path / "default.safetensors")
    assert main(["export", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "no embedded default model" in capsys.readouterr().err
    assert main(["export", "--weights", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "weight file not found" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
