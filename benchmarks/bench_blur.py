"""Frames per second of ``ufssd blur`` on a 1280x720 video: detection and hiding separately, and the
whole command (decode, detect, hide, encode, audio copied).

    python benchmarks/bench_blur.py [--threads 2] [--frames 60] [--runs 5] [--backends torch,onnxruntime]

The clip: Grace Hopper (matplotlib's sample) and the astronaut (scikit-image's sample) side by
side on a 1280x720 frame, panning 2 px a frame, encoded as H.264 with an AAC tone (PyAV), so each
frame has two faces of about 300 and 400 px. Timed, each over all ``--frames`` frames and
repeated ``--runs`` times, the stages taking turns within each round (median and best frames per
second):

* **detect**: ``FaceDetector.detect(frame, score_threshold=BLUR_SCORE_THRESHOLD)`` on the decoded
  RGB frames (pre-processing, network, post-processing), per backend;
* **hide**: :func:`ufssd.inference.anonymize.hide_faces` with the boxes found, per method (blur,
  pixelate, fill; ellipse, expand 0.25): copy, region, filter, composite;
* **end to end**: :func:`ufssd.inference.anonymize_video.anonymize_video` on the file, per
  backend (the video codecs use their own threads too).

Threads: ``--threads`` for torch, onnxruntime and OpenCV. Prints a Markdown table headed by the
CPU, the usable cores, the threads and the load average before and after each round
(``os.getloadavg``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 1280, 720


def make_frames(count: int) -> list[np.ndarray]:
    import cv2
    import matplotlib.cbook
    from PIL import Image
    from skimage import data as skdata

    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    hopper = np.asarray(Image.open(photo).convert("RGB"))
    hopper = cv2.resize(hopper, (HEIGHT * 512 // 600, HEIGHT), interpolation=cv2.INTER_AREA)
    astronaut = cv2.resize(np.asarray(skdata.astronaut()), (HEIGHT, HEIGHT), interpolation=cv2.INTER_AREA)
    strip = np.concatenate([hopper, astronaut, hopper], axis=1)  # wider than the frame: room to pan
    return [np.ascontiguousarray(strip[:, 2 * i : 2 * i + WIDTH]) for i in range(count)]


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "mono"
        for frame in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode(None))
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(48000 * len(frames) // fps) / 48000)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, start
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    return path


def stages(frames, clip: Path, out: Path, backends: list[str], threads: int) -> tuple[list, float]:
    """``[(name, fn)]``: each ``fn()`` handles every frame once; and the faces per frame."""
    from ufssd.inference import FaceDetector
    from ufssd.inference.anonymize import BLUR_SCORE_THRESHOLD, AnonymizeConfig, hide_faces
    from ufssd.inference.anonymize_video import anonymize_video

    found, boxes = [], None
    for backend in backends:
        detector = FaceDetector(backend=backend, num_threads=threads)

        def detect(detector=detector):
            return [detector.detect(f, score_threshold=BLUR_SCORE_THRESHOLD) for f in frames]

        def end_to_end(detector=detector):
            return anonymize_video(detector, clip, out, AnonymizeConfig())

        boxes = boxes or [r.boxes for r in detect()]
        found.append((f"detect ({backend})", detect))
        found.append((f"end to end ({backend}; decode, detect, hide, encode)", end_to_end))
    for method in ("blur", "pixelate", "fill"):

        def hide(cfg=AnonymizeConfig(method=method)):
            return [hide_faces(f, b, cfg) for f, b in zip(frames, boxes)]

        found.append((f"hide ({method})", hide))
    return found, sum(len(b) for b in boxes) / len(frames)


def timed(named: list, frames: int, runs: int) -> tuple[dict[str, list[float]], list[float]]:
    """Frames per second of each stage, run after run (the stages take turns, so a change in the
    machine's load affects them alike); and the 1-minute load average after each round."""
    rates: dict[str, list[float]] = {name: [] for name, _ in named}
    loads = []
    for name, fn in named:  # warm-up
        fn()
    for _ in range(runs):
        for name, fn in named:
            start = time.perf_counter()
            fn()
            rates[name].append(frames / (time.perf_counter() - start))
        loads.append(os.getloadavg()[0])
    return rates, loads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="torch,onnxruntime")
    args = parser.parse_args(argv)

    import cv2
    import torch

    from ufssd.inference.bench import cpu_name

    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    frames = make_frames(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", frames)
        named, faces = stages(frames, clip, Path(tmp) / "out.mp4", args.backends.split(","), args.threads)
        rates, loads = timed(named, len(frames), args.runs)

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"Machine: {cpu_name()}, {usable} usable cores; {args.threads} threads (torch, onnxruntime, OpenCV); "
          f"{WIDTH}x{HEIGHT}, {len(frames)} frames x {args.runs} runs, {faces:.1f} faces per frame; "
          f"load average (1 min) {load_before:.2f} before, after each round: {', '.join(f'{v:.2f}' for v in loads)}")
    print("\n| stage | frames/s (median) | frames/s (best) |\n|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} | {max(values):.1f} |")


if __name__ == "__main__":
    main()
