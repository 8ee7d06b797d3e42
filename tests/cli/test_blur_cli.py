"""``ufssd blur`` end to end (random-weight light preset, small inputs): images keep their names,
formats and modes; one line per bad input, the others done, exit code 1; --json logs; inputs are
never overwritten; a video keeps its audio; SIGTERM mid-video leaves no partial file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ufssd.cli import main

MODEL = ["--preset", "ufssd_light", "--no-progress", "--threshold", "0.0"]
REPO = Path(__file__).resolve().parents[2]


def good_images(folder: Path) -> dict[str, Image.Image]:
    """Small images of several formats and modes (random pixels, so a blur shows)."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    images = {
        "a.jpg": rgb,
        "sub/b.png": rgb.convert("RGBA"),
        "sub/c.png": rgb.convert("L"),
        "d.gif": rgb.convert("P"),
    }
    for name, im in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        im.save(folder / name)
    return images


def bad_inputs(folder: Path) -> dict[Path, str]:
    folder.mkdir()
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "clip.mp4").write_text("not a video\n")
    (folder / "empty_dir").mkdir()
    return {
        folder / "zero.jpg": "empty file",
        folder / "notes.txt": "not an image file",
        folder / "clip.mp4": "cannot open video",
        folder / "empty_dir": "no image or video files found",
        folder / "missing.jpg": "no such file",
    }


def test_blur_images_and_folders_with_bad_inputs(tmp_path, capsys):
    images = good_images(tmp_path / "in")
    bad = bad_inputs(tmp_path / "bad")
    out = tmp_path / "out"
    before = {p: p.read_bytes() for p in (tmp_path / "in").rglob("*.*")}
    code = main(["blur", str(tmp_path / "in"), *map(str, bad), "--out", str(out), "--json", *MODEL])
    err = capsys.readouterr().err
    assert code == 1
    for path, message in bad.items():
        lines = [line for line in err.splitlines() if line.startswith(f"ufssd blur: {path}:")]
        assert len(lines) == 1 and message in lines[0], (path, err)
    assert "4 inputs" in err and f"{len(bad)} failed" in err
    for name, original in images.items():
        written = Image.open(out / name)
        assert written.format == {".jpg": "JPEG", ".png": "PNG", ".gif": "GIF"}[Path(name).suffix]
        assert written.mode == original.mode and written.size == original.size, name
        log = json.loads((out / f"{name}.json").read_text())
        assert log["image"] == str(tmp_path / "in" / name) and log["output"] == str(out / name)
        assert log["settings"]["method"] == "blur" and log["settings"]["score_threshold"] == 0.0
        assert all(set(face) == {"x1", "y1", "x2", "y2", "score", "region"} for face in log["faces"])
    assert before == {p: p.read_bytes() for p in (tmp_path / "in").rglob("*.*")}  # inputs untouched
    assert not [p for p in out.rglob(".*")]  # no temporary file left


def test_blur_refuses_to_overwrite_inputs_one_line_each(tmp_path, capsys):
    good_images(tmp_path / "in")
    before = {p: p.read_bytes() for p in (tmp_path / "in").rglob("*.*")}
    code = main(["blur", str(tmp_path / "in"), "--out", str(tmp_path / "in"), *MODEL])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("is an input; choose another --out") == len(before)
    assert before == {p: p.read_bytes() for p in (tmp_path / "in").rglob("*.*")}


def test_blur_usage_errors_and_choices(tmp_path, capsys):
    from ufssd.cli import blur
    from ufssd.inference import anonymize, face_tracker

    assert blur.METHODS == anonymize.METHODS and blur.SHAPES == anonymize.SHAPES
    assert blur.PERSIST == face_tracker.DEFAULT_PERSIST
    assert main(["blur", str(tmp_path), "--out", str(tmp_path / "o"), "--expand", "-1", *MODEL]) == 2
    assert "expand must lie in [0, 10]" in capsys.readouterr().err
    assert main(["blur", str(tmp_path), "--out", str(tmp_path / "o"), "--persist", "-1", *MODEL]) == 2
    assert "persist must be >= 0 frames, got -1" in capsys.readouterr().err


def write_clip(path: Path, frames: int, size=(64, 48), fps: int = 25, audio: bool = True, noise: bool = True) -> Path:
    """An H.264 clip of random (or, cheaper to encode, flat) frames, with an AAC tone."""
    av = pytest.importorskip("av")
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=48000) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for _ in range(frames):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            pixels = pixels if noise else np.full_like(pixels, pixels[0, 0, 0])
            out.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            tone = (0.2 * np.sin(np.arange(48000 * frames // fps) * 0.05)).astype(np.float32)
            for start in range(0, len(tone), 1024):
                frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 48000, start
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def test_blur_video_keeps_audio_and_logs_every_frame(tmp_path, capsys):
    av = pytest.importorskip("av")
    clip = write_clip(tmp_path / "clip.mp4", frames=5)
    out = tmp_path / "out"
    code = main(["blur", str(clip), "--out", str(out), "--json", "--persist", "3", *MODEL])
    assert code == 0, capsys.readouterr().err
    with av.open(str(out / "clip.mp4")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert sum(1 for _ in c.decode(video=0)) == 5 and c.streams.video[0].average_rate == 25
    log = json.loads((out / "clip.mp4.json").read_text())
    assert log["audio"] == "copied (aac)" and log["fps"] == 25 and log["settings"]["persist"] == 3
    assert [f["frame"] for f in log["frames"]] == list(range(5))


@pytest.mark.slow
def test_sigterm_during_a_long_video_leaves_no_partial_output(tmp_path):
    clip = write_clip(tmp_path / "long.mp4", frames=600, audio=False, noise=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "long.mp4").write_bytes(b"previous complete output")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "ufssd", "blur", str(clip), "--out", str(out), *MODEL, "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not [p for p in out.iterdir() if p.name.startswith(".long.mp4.")]:  # the temporary file
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.5)  # some frames written
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert [p.name for p in out.iterdir()] == ["long.mp4"]  # no temporary file left
    assert (out / "long.mp4").read_bytes() == b"previous complete output"
