"""Hiding faces in a video file with PyAV: every frame, the frame rate, the size and the sound.

The video stream is decoded, each frame's faces are found and hidden (:mod:`.anonymize`, with
:class:`.face_tracker.FaceTracker` for ``persist``), and the frames are encoded again into the
input's container format with the input's timestamps (so the frame rate, variable or not, and
the synchronisation with the sound are kept). Audio streams are copied packet for packet (not
re-encoded). Where the output container cannot take them, the video is written without sound
and :attr:`VideoReport.audio` says why. Subtitle and data streams are not copied.

The output is written to a temporary file beside ``dst`` and renamed into place only when every
frame is done (:func:`ufssd.atomic.atomic_path`): an error or an interruption leaves no partly
anonymised file, and a previous ``dst`` intact.

PyAV is an optional dependency (``pip install 'ufssd[video]'``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from ufssd.atomic import atomic_path
from ufssd.inference.anonymize import AnonymizeConfig, face_records, hide_faces
from ufssd.inference.face_tracker import DEFAULT_PERSIST, FaceTracker
from ufssd.inference.io import MissingInputError, UnreadableVideoError

__all__ = ["VideoReport", "anonymize_video", "VIDEO_ENCODERS"]

log = logging.getLogger(__name__)

# encoders tried in order, by output container (the file's extension)
VIDEO_ENCODERS = {
    ".mp4": ("libx264", "mpeg4"),
    ".m4v": ("libx264", "mpeg4"),
    ".mov": ("libx264", "mpeg4"),
    ".mkv": ("libx264", "mpeg4"),
    ".webm": ("libvpx", "libvpx-vp9"),
    ".avi": ("mpeg4",),
    ".mpg": ("mpeg2video",),
    ".mpeg": ("mpeg2video",),
    ".wmv": ("wmv2",),
    ".flv": ("flv",),
}
_ENCODER_OPTIONS = {"libx264": {"crf": "18", "preset": "veryfast"}, "libvpx": {"crf": "10", "b": "4M"}}


@dataclass
class VideoReport:
    """What :func:`anonymize_video` did. ``frames``: one dict per frame (``frame``, ``time_s``,
    ``faces``: the hidden faces, each ``x1 y1 x2 y2 score held region``)."""

    width: int
    height: int
    fps: float
    audio: str  # "copied (aac)", "none in the input", or "not kept: <why>"
    frames: list[dict[str, Any]] = field(default_factory=list)

    @property
    def audio_kept(self) -> bool:
        return self.audio.startswith("copied")

    @property
    def faces(self) -> int:
        return sum(len(f["faces"]) for f in self.frames)


def anonymize_video(
    detector,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    cfg: AnonymizeConfig,
    *,
    persist: int = DEFAULT_PERSIST,
    progress: bool = False,
    on_frame: Callable[[int], None] | None = None,
) -> VideoReport:
    """Write ``src`` with its faces hidden to ``dst`` (same container format, by extension).

    Args:
        detector: a :class:`~ufssd.inference.FaceDetector`; faces scoring at least
            ``cfg.score_threshold`` are hidden.
        persist: a face stays hidden for this many frames after the detector loses it.
        on_frame: called with each frame's index once it is encoded (tests, progress).
    Raises:
        UnreadableVideoError (or MissingInputError) naming ``src``; nothing is left at ``dst``
        then, and a previous file there is kept.
    """
    import av

    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise MissingInputError(src, "no such file")
    if src.stat().st_size == 0:
        raise UnreadableVideoError(src, "empty file (0 bytes)")
    try:
        inp = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        log.debug("%s: %s", src, exc)
        raise UnreadableVideoError(src, "cannot open video (unknown format or corrupt)") from exc
    with inp:
        if not inp.streams.video:
            raise UnreadableVideoError(src, "no video stream")
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        with atomic_path(dst, suffix=dst.suffix) as tmp:
            out, vout, audio_out, audio = _open_output(tmp, vin, list(inp.streams.audio), dst.suffix.lower(), src)
            with out:
                report = VideoReport(vin.codec_context.width, vin.codec_context.height, float(vout.average_rate), audio)
                _transcode(inp, out, vin, vout, audio_out, detector, cfg, persist, report, src, progress, on_frame)
    return report


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without PyAV's ``[Errno N]`` and the ``: '<file or call>'`` it appends."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.split("] ", 1)[-1] if text.startswith("[Errno") else text
    return text.split(": '", 1)[0]


def _frame_rate(vin) -> Fraction:
    rate = vin.average_rate or vin.guessed_rate or vin.base_rate
    return Fraction(rate) if rate else Fraction(25)


def _open_output(tmp: Path, vin, audio_in: list, suffix: str, src: Path):
    """The output container with one video stream and, where the container takes them, copies
    of the audio streams. Returns ``(container, video stream, {input index: output audio
    stream}, audio status)``."""
    import av

    audio = "none in the input" if not audio_in else ""
    for with_audio in (True, False) if audio_in else (False,):
        out = av.open(str(tmp), "w")
        try:
            vout = _video_stream(out, vin, suffix, src)
            pairs = [(a, out.add_stream_from_template(a)) for a in audio_in] if with_audio else []
            out.start_encoding()  # writes the header: the muxer refuses codecs it cannot hold here
        except (av.error.FFmpegError, ValueError) as exc:
            out.close()
            if not with_audio:
                raise UnreadableVideoError(src, f"cannot write {suffix} video ({_reason(exc)})") from exc
            codecs = ", ".join(a.codec_context.name for a in audio_in)
            audio = f"not kept: the {suffix} container cannot hold {codecs} audio"
            log.debug("%s: audio refused by the %s muxer: %s", src, suffix, exc)
            continue
        if with_audio:
            audio = "copied (" + ", ".join(a.codec_context.name for a in audio_in) + ")"
        return out, vout, {a.index: o for a, o in pairs}, audio
    raise AssertionError("unreachable")


def _video_stream(out, vin, suffix: str, src: Path):
    import av

    width, height = vin.codec_context.width, vin.codec_context.height
    last: Exception | None = None
    for name in VIDEO_ENCODERS.get(suffix, ("libx264", "mpeg4")):
        try:
            stream = out.add_stream(name, rate=_frame_rate(vin), options=_ENCODER_OPTIONS.get(name, {}))
        except (av.error.FFmpegError, ValueError) as exc:  # encoder not in this FFmpeg build
            last = exc
            continue
        stream.width, stream.height = width, height
        odd = width % 2 or height % 2
        stream.pix_fmt = "yuv444p" if odd and name == "libx264" else "yuv420p"
        stream.codec_context.time_base = vin.time_base  # frames keep their timestamps
        return stream
    raise UnreadableVideoError(src, f"no encoder for {suffix} video in this PyAV ({last})")


def _transcode(inp, out, vin, vout, audio_out, detector, cfg, persist, report, src, progress, on_frame) -> None:
    import av
    from tqdm import tqdm

    tracker = FaceTracker(persist)
    streams = [vin, *(s for s in inp.streams.audio if s.index in audio_out)]
    step = max(1, round(1 / (_frame_rate(vin) * vin.time_base))) if vin.time_base else 1
    last_pts = None
    bar = tqdm(total=vin.frames or None, desc=src.name, unit="frame", leave=False, disable=None if progress else True)
    try:
        for packet in inp.demux(*streams):
            if packet.stream.index in audio_out:
                if packet.dts is not None:
                    packet.stream = audio_out[packet.stream.index]
                    out.mux(packet)
                continue
            for frame in packet.decode():
                pts = frame.pts if frame.pts is not None else (0 if last_pts is None else last_pts + step)
                if last_pts is not None and pts <= last_pts:
                    pts = last_pts + 1
                last_pts = pts
                _encode_frame(out, vout, frame, pts, vin, detector, cfg, tracker, report)
                bar.update(1)
                if on_frame is not None:
                    on_frame(len(report.frames) - 1)
        out.mux(vout.encode(None))
    except av.error.FFmpegError as exc:
        raise UnreadableVideoError(src, f"cannot decode frame {len(report.frames)} ({_reason(exc)})") from exc
    finally:
        bar.close()
    if not report.frames:
        raise UnreadableVideoError(src, "cannot decode any frame")


def _encode_frame(out, vout, frame, pts, vin, detector, cfg, tracker, report) -> None:
    import av

    rgb = frame.to_ndarray(format="rgb24")
    result = detector.detect(rgb, score_threshold=cfg.score_threshold)
    hidden = tracker.update(result.boxes, result.scores)
    new = av.VideoFrame.from_ndarray(hide_faces(rgb, hidden.boxes, cfg), format="rgb24")
    new.pts, new.time_base = pts, vin.time_base
    out.mux(vout.encode(new))
    report.frames.append({
        "frame": len(report.frames),
        "time_s": round(float(pts * vin.time_base), 4) if vin.time_base else None,
        "faces": face_records(hidden.boxes, hidden.scores, rgb.shape[:2], cfg.expand, held=hidden.held),
    })
