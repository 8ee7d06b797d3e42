"""``anonymize_video``: a synthetic clip (frames from a photo, a sine tone made here with PyAV)
keeps its frame count, frame rate, size and audio; no frame shows the face where the detector
found it; an interrupted run leaves nothing, or the previous file intact."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from ufssd.inference.anonymize import BLUR_SCORE_THRESHOLD, AnonymizeConfig  # noqa: E402
from ufssd.inference.anonymize_video import anonymize_video  # noqa: E402

FPS = 10
SIZE = (320, 240)  # width, height


def hopper_frames(count: int, size=SIZE) -> list[np.ndarray]:
    """Grace Hopper (scaled to the frame height) panning right by 3 px a frame."""
    import matplotlib.cbook

    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    w, h = size
    face = np.asarray(photo.resize((h * 512 // 600, h)))
    frames = []
    for i in range(count):
        canvas = np.full((h, w, 3), 90, np.uint8)
        x = 8 + 3 * i
        canvas[:, x : x + face.shape[1]] = face[:, : w - x]
        frames.append(canvas)
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: int = FPS, audio: str | None = "aac",
               container: str | None = None) -> Path:  # fmt: skip
    """An H.264 clip of ``frames`` with, unless ``audio`` is None, a 440 Hz tone as long as it."""
    with av.open(str(path), "w", format=container) as out:
        video = out.add_stream("libx264", rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        sound = out.add_stream(audio, rate=48000) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for frame in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            samples = 0.3 * np.sin(2 * np.pi * 440 * np.arange(48000 * len(frames) // fps) / 48000)
            step = sound.codec_context.frame_size or 1024
            for start in range(0, len(samples), step):
                chunk = samples[None, start : start + step].astype(np.float32)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 48000, start
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return {
            "frames": frames, "rate": v.average_rate, "size": (v.codec_context.width, v.codec_context.height),
            "audio": [a.codec_context.name for a in c.streams.audio],
        }


@pytest.fixture(scope="module")
def detector():
    from ufssd.inference import FaceDetector

    return FaceDetector()


class NoFaces:
    """A detector stub for the tests about files, not faces (the CPU is shared)."""

    pixel_limit = None

    def detect(self, image, score_threshold=None):
        from ufssd.inference import DetectionResult

        return DetectionResult(np.zeros((0, 4)), np.zeros(0), image_size=image.shape[:2])


def sharpness(image: np.ndarray) -> float:
    import cv2

    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_clip_keeps_frames_rate_size_audio_and_no_frame_shows_the_face(detector, tmp_path):
    src = write_clip(tmp_path / "clip.mp4", hopper_frames(6))
    dst = tmp_path / "out" / "clip.mp4"
    report = anonymize_video(detector, src, dst, AnonymizeConfig(), persist=2)
    before, after = probe(src), probe(dst)
    assert len(after["frames"]) == len(before["frames"]) == 6 == len(report.frames)
    assert after["rate"] == before["rate"] == Fraction(FPS) and report.fps == FPS
    assert after["size"] == before["size"] == SIZE
    assert after["audio"] == ["aac"] and report.audio == "copied (aac)"
    for i, (frame_in, frame_out) in enumerate(zip(before["frames"], after["frames"])):
        faces = detector.detect(frame_in, score_threshold=BLUR_SCORE_THRESHOLD).boxes
        assert len(faces) >= 1, f"frame {i}: the detector should find Grace Hopper"
        assert len(detector.detect(frame_out)) == 0, f"frame {i}: a face is still found"
        for x1, y1, x2, y2 in faces.astype(int):
            crop_in, crop_out = frame_in[y1:y2, x1:x2], frame_out[y1:y2, x1:x2]
            assert sharpness(crop_out) < 0.1 * sharpness(crop_in), f"frame {i}: face box {x1, y1, x2, y2} not blurred"
    assert [f["frame"] for f in report.frames] == list(range(6))
    assert all(f["faces"] and f["faces"][0]["held"] == 0 for f in report.frames)


def test_interrupted_run_leaves_nothing_or_the_previous_file(tmp_path):
    src = write_clip(tmp_path / "clip.mp4", hopper_frames(6), audio=None)
    out = tmp_path / "out"

    def stop_at_3(index: int) -> None:
        if index == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        anonymize_video(NoFaces(), src, out / "clip.mp4", AnonymizeConfig(), on_frame=stop_at_3)
    assert list(out.iterdir()) == []  # no output, no temporary file
    (out / "clip.mp4").write_bytes(b"previous complete output")
    with pytest.raises(KeyboardInterrupt):
        anonymize_video(NoFaces(), src, out / "clip.mp4", AnonymizeConfig(), on_frame=stop_at_3)
    assert [p.name for p in out.iterdir()] == ["clip.mp4"]
    assert (out / "clip.mp4").read_bytes() == b"previous complete output"
    report = anonymize_video(NoFaces(), src, out / "clip.mp4", AnonymizeConfig())
    assert len(probe(out / "clip.mp4")["frames"]) == 6 and report.audio == "none in the input"


def test_audio_the_container_cannot_hold_is_dropped_with_a_reason(tmp_path):
    # a Matroska file with Opus sound, named .mov: the QuickTime muxer cannot take Opus
    src = write_clip(tmp_path / "clip.mov", hopper_frames(3), audio="libopus", container="matroska")
    report = anonymize_video(NoFaces(), src, tmp_path / "out" / "clip.mov", AnonymizeConfig())
    assert report.audio == "not kept: the .mov container cannot hold opus audio"
    after = probe(tmp_path / "out" / "clip.mov")
    assert len(after["frames"]) == 3 and after["audio"] == []
