"""``ufssd detect`` end to end on real WIDER FACE val images (random-weight light preset), and
every kind of bad input: one line each, the others go on, exit code 1, no partial output."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from ufssd.cli import main

NAMES = ["0--Parade/0_Parade_Parade_0_102.jpg", "13--Interview/13_Interview_Interview_On_Location_13_933.jpg"]
MODEL = ["--preset", "ufssd_light", "--no-progress"]


@pytest.fixture
def images(widerface_dir, tmp_path):
    """Two real val images copied into ``tmp_path/in``."""
    root = widerface_dir / "WIDER_val" / "images"
    names = [n for n in NAMES if (root / n).is_file()]
    if len(names) < 2:
        names = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.jpg"))[:2]
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for n in names:
        dst = folder / n.split("/")[1]
        shutil.copyfile(root / n, dst)
        paths.append(dst)
    return paths


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (a decompression bomb's header)."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def bad_inputs(folder):
    """One of each kind of bad input, and the message each must produce."""
    folder.mkdir()
    good = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(good, "JPEG")
    data = good.getvalue()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "clip.mp4").write_text("not a video\n")
    (folder / "empty_dir").mkdir()
    (folder / "huge.png").write_bytes(png_claiming_size(20_000, 20_000))
    return {
        folder / "huge.png": "image too large: 400.0 megapixels",
        folder / "truncated.jpg": "corrupt or truncated",
        folder / "zero.jpg": "empty file",
        folder / "notes.txt": "not an image file",
        folder / "clip.mp4": "cannot open video",
        folder / "empty_dir": "no image or video files found",
        folder / "missing.jpg": "no such file",
    }


def test_detect_writes_json_and_annotated_images_and_reports_bad_inputs(images, tmp_path, capsys):
    bad = bad_inputs(tmp_path / "bad")
    out = tmp_path / "out"
    inputs = [str(images[0]), *map(str, bad), str(images[1])]
    before = {p: p.read_bytes() for p in images}
    code = main(["detect", *inputs, *MODEL, "--threshold", "0.0", "--out", str(out), "--json", "--save-images"])
    err = capsys.readouterr().err
    assert code == 1
    for path, message in bad.items():
        lines = [ln for ln in err.splitlines() if ln.startswith(f"ufssd detect: {path}: ")]
        assert len(lines) == 1 and message in lines[0], (path, err)
    assert "2 inputs" in err and "7 failed" in err
    # the good images, processed around the bad ones
    produced = sorted(p.name for p in out.iterdir())
    expected = sorted([f"{p.stem}.json" for p in images] + [f"{p.stem}_faces.jpg" for p in images])
    assert produced == expected  # nothing for the bad inputs, no temporary files left
    for p in images:
        doc = json.loads((out / f"{p.stem}.json").read_text())
        with Image.open(p) as im:
            assert (doc["width"], doc["height"]) == im.size
        assert doc["image"] == str(p)
        assert len(doc["detections"]) > 0
        for d in doc["detections"]:
            assert 0 <= d["x1"] <= d["x2"] <= doc["width"] and 0 <= d["y1"] <= d["y2"] <= doc["height"]
        with Image.open(out / f"{p.stem}_faces.jpg") as im:
            assert im.size == (doc["width"], doc["height"])
        assert p.read_bytes() == before[p]


def test_detect_folder_recursive_to_jsonl_and_stdout(images, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir()
    shutil.copyfile(images[0], folder / "sub" / "again.jpg")
    (folder / "readme.txt").write_text("skipped inside folders")
    jsonl = tmp_path / "all.jsonl"
    assert main(["detect", str(folder), *MODEL, "--jsonl", str(jsonl), "--batch-size", "2"]) == 0
    records = [json.loads(ln) for ln in jsonl.read_text().splitlines()]
    assert len(records) == 3
    assert {r["image"] for r in records} == {str(p) for p in [*images, folder / "sub" / "again.jpg"]}
    # no output flag: JSON lines on stdout
    capsys.readouterr()
    assert main(["detect", str(images[0]), *MODEL]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["image"] == str(images[0])


def test_detect_refuses_to_overwrite_an_input(tmp_path, capsys):
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(folder / "a.jpg")
    Image.fromarray(np.full((40, 50, 3), 9, np.uint8)).save(folder / "a_faces.jpg")  # a's annotated name
    before = (folder / "a_faces.jpg").read_bytes()
    code = main(["detect", str(folder), *MODEL, "--out", str(folder), "--save-images"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"ufssd detect: {folder / 'a.jpg'}: output {folder / 'a_faces.jpg'} is an input" in err
    assert (folder / "a_faces.jpg").read_bytes() == before
    assert (folder / "a_faces_faces.jpg").is_file()  # the other input was processed


def test_detect_video(tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (96, 64))
    for i in range(4):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out"
    code = main(["detect", str(video), *MODEL, "--out", str(out), "--json", "--save-images", "--video-stride", "2"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "clip.json").read_text())
    assert [f["frame"] for f in doc["frames"]] == [0, 2]
    assert (doc["width"], doc["height"]) == (96, 64)
    assert (out / "clip_faces.mp4").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.json", "clip_faces.mp4"]


def test_detect_without_weights_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from ufssd.inference import loading

    monkeypatch.setattr(loading, "default_weights_path", lambda: tmp_path / "default.safetensors")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "x.png")
    assert main(["detect", str(tmp_path / "x.png"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "ufssd detect: error: no embedded default model" in err and "--preset" in err


@pytest.fixture(scope="module")
def bad_weight_files(tmp_path_factory):
    """One broken weight file of every format, and an image to run on."""
    from ufssd.model import build_model, save_weights

    d = tmp_path_factory.mktemp("bad_weights")
    good = save_weights(d / "good.safetensors", build_model("ufssd_light")).read_bytes()
    (d / "corrupt.onnx").write_bytes(b"\x00not a protobuf" * 8)
    (d / "truncated.safetensors").write_bytes(good[:1000])
    (d / "corrupt.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 200)  # a zip header, then nothing
    (d / "model.bin").write_bytes(good)
    (d / "empty.onnx").write_bytes(b"")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / "x.png")
    return d


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("corrupt.onnx", "not a readable ONNX model (Protobuf parsing failed.)"),
        ("truncated.safetensors", "not a readable safetensors file ("),
        ("corrupt.pt", "not a readable training checkpoint (corrupt or truncated: "),
        ("model.bin", "unknown weight file type '.bin' (expected .safetensors, .pt/.pth"),
        ("missing.safetensors", "weight file not found"),
        ("empty.onnx", "empty file (0 bytes)"),
    ],
)
def test_detect_bad_weight_file_is_one_line(bad_weight_files, capsys, name, problem):
    """Every weight format fails the same way: one line naming the file and what is wrong (a
    corrupt .onnx file used to print onnxruntime's 25-line InvalidProtobuf traceback)."""
    path = bad_weight_files / name
    assert main(["detect", str(bad_weight_files / "x.png"), "--weights", str(path), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"ufssd detect: error: {path}: ") and captured.err.count("\n") == 1
    assert problem in captured.err
