"""Image loading: conversions and every kind of bad input, each a specific one-line error."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ufssd.images import (
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    MissingInputError,
    NotAnImageError,
)
from ufssd.inference.io import (
    InputFile,
    NoImagesFoundError,
    UnreadableVideoError,
    VideoReader,
    collect_inputs,
    load_image,
)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8  # after the signature: length (4), b"IHDR" (4), data (13), crc (4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 21])) & 0xFFFFFFFF
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def jpeg_bytes(h=64, w=80) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_missing_file(tmp_path):
    with pytest.raises(MissingInputError, match="no such file") as e:
        load_image(tmp_path / "nope.jpg")
    assert str(e.value).startswith(str(tmp_path / "nope.jpg") + ": ")


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(EmptyImageError, match="empty file"):
        load_image(p)


def test_zero_size_arrays():
    with pytest.raises(EmptyImageError, match="no pixels"):
        load_image(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(EmptyImageError):
        load_image(np.zeros((10, 0), np.uint8))


def test_truncated_jpeg(tmp_path):
    data = jpeg_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImageError, match="corrupt or truncated"):
        load_image(p)


def test_garbage_with_image_extension(tmp_path):
    p = tmp_path / "noise.jpg"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(NotAnImageError, match="not an image"):
        load_image(p)


def test_corrupt_png_body(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[60:80] = b"\xff" * 20  # inside IDAT
    p = tmp_path / "bad.png"
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptImageError):
        load_image(p)


def test_text_file_is_not_an_image(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello\n")
    with pytest.raises(NotAnImageError, match="not an image file"):
        load_image(p)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(NotAnImageError, match="directory"):
        load_image(tmp_path)


def test_enormous_image_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_claiming_size(20_000, 20_000))  # 400 megapixels in a 70-byte file
    with pytest.raises(ImageTooLargeError, match="400.0 megapixels"):
        load_image(p)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(small)
    with pytest.raises(ImageTooLargeError, match="limit"):
        load_image(small, pixel_limit=5000)
    with pytest.raises(ImageTooLargeError):
        load_image(np.zeros((100, 100, 3), np.uint8), pixel_limit=5000)
    assert load_image(small, pixel_limit=None).shape == (100, 100, 3)


def test_bad_arrays():
    with pytest.raises(NotAnImageError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(NotAnImageError, match=r"\[0, 1\]"):
        load_image(np.full((4, 4, 3), 200.0, np.float32))
    with pytest.raises(NotAnImageError, match="NaN"):
        load_image(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(NotAnImageError, match="uint16"):
        load_image(np.full((4, 4, 3), 300, np.int32))
    with pytest.raises(NotAnImageError, match="expected a file path"):
        load_image(12345)


def test_conversions(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = load_image(gray)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)
    assert np.array_equal(load_image(gray[..., None]), out)
    # 16-bit: 65535 -> 255, 257 * v -> v
    v16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 257)
    assert np.array_equal(load_image(v16)[..., 1], gray)
    # 16-bit grayscale PNG file
    p = tmp_path / "g16.png"
    Image.fromarray(v16).save(p)
    assert np.array_equal(load_image(p)[..., 0], gray)
    # RGBA drops alpha; bgr reverses
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 10, 0
    assert load_image(rgba)[0, 0].tolist() == [10, 0, 0]
    assert load_image(rgba, bgr=True)[0, 0].tolist() == [0, 0, 10]
    # float in [0, 1]; palette PNG; bool
    assert load_image(np.full((2, 2, 3), 1.0))[0, 0].tolist() == [255, 255, 255]
    pal = tmp_path / "p.png"
    Image.fromarray(np.full((5, 5, 3), 40, np.uint8)).convert("P").save(pal)
    assert load_image(pal).shape == (5, 5, 3)
    assert load_image(np.ones((2, 2), bool))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation(tmp_path):
    im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif)
    assert load_image(p).shape == (40, 20, 3)
    assert load_image(p, exif=False).shape == (20, 40, 3)


def test_collect_inputs(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "x.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "a" / "sub" / "y.PNG").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("skip me")
    (tmp_path / "empty").mkdir()
    (tmp_path / "v.mp4").write_bytes(b"")
    items = collect_inputs([tmp_path / "a", tmp_path / "empty", tmp_path / "v.mp4", tmp_path / "gone.jpg"])
    assert [type(i) for i in items] == [InputFile, InputFile, NoImagesFoundError, InputFile, MissingInputError]
    assert [i.relative.as_posix() for i in items if isinstance(i, InputFile)] == ["sub/y.PNG", "x.jpg", "v.mp4"]
    assert [i.kind for i in items if isinstance(i, InputFile)] == ["image", "image", "video"]


def test_unreadable_video(tmp_path):
    p = tmp_path / "clip.mp4"
    p.write_text("not a video at all")
    with pytest.raises(UnreadableVideoError, match="cannot"):
        VideoReader(p)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableVideoError, match="empty"):
        VideoReader(empty)
    with pytest.raises(MissingInputError):
        VideoReader(tmp_path / "missing.mp4")


def test_video_frames(tmp_path):
    cv2 = pytest.importorskip("cv2")
    p = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(3):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., 2] = 200  # red in BGR
        writer.write(frame)
    writer.release()
    reader = VideoReader(p)
    frames = list(reader)
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)
    assert frames[0][..., 0].mean() > 150 and frames[0][..., 2].mean() < 50  # RGB order


class _Interrupt(Exception):
    pass


class _StopsAfter:
    """A detector that works for ``n`` calls, then raises (an interrupt mid-run)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n, self.pixel_limit = inner, n, inner.pixel_limit

    def detect(self, *args, **kwargs):
        if self.n == 0:
            raise _Interrupt("stopped")
        self.n -= 1
        return self.inner.detect(*args, **kwargs)


def _clip(path, frames: int = 4):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (96, 64))
    for i in range(frames):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    return path


def test_interrupted_video_leaves_no_partial_files(tmp_path):
    from ufssd.inference import FaceDetector
    from ufssd.inference.files import detect_files

    video = _clip(tmp_path / "clip.avi")
    out = tmp_path / "out"
    detector = _StopsAfter(FaceDetector(preset="ufssd_light"), n=1)
    with pytest.raises(_Interrupt):
        detect_files(detector, [video], out_dir=out, write_json=True, save_images=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == []  # no video, no JSON, no temporary file


def test_interrupted_run_leaves_the_previous_jsonl(tmp_path):
    from ufssd.inference import FaceDetector
    from ufssd.inference.files import detect_files

    for k in range(3):
        Image.fromarray(np.full((48, 64, 3), 50 * k, np.uint8)).save(tmp_path / f"{k}.png")
    jsonl = tmp_path / "out" / "faces.jsonl"
    jsonl.parent.mkdir()
    jsonl.write_text("previous\n")
    detector = _StopsAfter(FaceDetector(preset="ufssd_light"), n=1)
    paths = [tmp_path / f"{k}.png" for k in range(3)]
    with pytest.raises(_Interrupt):
        detect_files(detector, paths, jsonl=jsonl, progress=False)
    assert jsonl.read_text() == "previous\n"
    assert sorted(p.name for p in jsonl.parent.iterdir()) == ["faces.jsonl"]
    summary = detect_files(FaceDetector(preset="ufssd_light"), paths, jsonl=jsonl, progress=False)
    assert len(jsonl.read_text().splitlines()) == 3 and summary.written == [jsonl]
