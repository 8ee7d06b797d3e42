"""Running a detector over files, folders and videos and writing the results (``ufssd detect``).

Outputs, for an input found as ``<relative>`` (its path inside a folder argument, or its file
name for a file argument), with ``<base>`` = ``out_dir/<relative without suffix>``:

* ``--json``: ``<base>.json`` per image (:meth:`DetectionResult.to_dict`), and per video one
  ``<base>.json`` with a ``frames`` list;
* ``--jsonl FILE``: one line per image or video frame, all inputs in one file;
* ``--save-images``: ``<base>_faces<suffix>`` (annotated copy; videos as ``<base>_faces.mp4``).

Every file is written atomically (a temporary file, then ``os.replace``), so a failure leaves no
partial output; a target that is one of the inputs is refused (an input is never overwritten);
two inputs with the same ``<base>`` get ``_2``, ``_3`` ... suffixes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ufssd.atomic import atomic_path, atomic_write, atomic_write_bytes, atomic_write_text
from ufssd.inference.draw import draw_detections, encode_image
from ufssd.inference.io import (
    InputError,
    InputFile,
    VideoReader,
    collect_inputs,
    load_image,
)
from ufssd.inference.results import DetectionResult

__all__ = ["detect_files", "FilesSummary", "OutputClashError"]

_ENCODABLE = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class OutputClashError(InputError):
    """An output path would overwrite an input."""


@dataclass
class FilesSummary:
    processed: int = 0  # images + videos done
    frames: int = 0  # video frames done
    faces: int = 0
    failed: list[InputError] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


class OutputPaths:
    """Output paths ``out_dir/<relative folder>/<stem>[_n]...``: one base per input, de-duplicated
    (``a.jpg`` and ``a.png`` give ``a`` and ``a_2``), never an input (``ufssd detect`` and
    ``ufssd blur``)."""

    def __init__(self, out_dir: Path | None, inputs: Iterable[Path]) -> None:
        self.out_dir = out_dir
        self.inputs = {p.resolve() for p in inputs}
        self.used: set[Path] = set()

    def base(self, item: InputFile) -> Path:
        assert self.out_dir is not None
        stem = self.out_dir / item.relative.parent / item.relative.stem
        candidate, n = stem, 1
        while candidate in self.used:
            n += 1
            candidate = stem.with_name(f"{stem.name}_{n}")
        self.used.add(candidate)
        return candidate

    def with_suffix(self, item: InputFile, suffix: str, *also: str) -> Path:
        """``base + suffix``, checked; ``also``: suffixes appended to it that are written beside it
        (e.g. ``".json"``), checked too."""
        base = self.base(item)
        path = self.check(base.with_name(base.name + suffix), item)
        for extra in also:
            self.check(path.with_name(path.name + extra), item)
        return path

    def check(self, path: Path, item: InputFile) -> Path:
        if path.resolve() in self.inputs:
            raise OutputClashError(item.path, f"output {path} is an input; choose another --out")
        return path


def detect_files(
    detector,
    paths: Sequence[str | os.PathLike],
    *,
    out_dir: str | os.PathLike | None = None,
    write_json: bool = False,
    jsonl: str | os.PathLike | TextIO | None = None,
    save_images: bool = False,
    batch_size: int = 1,
    video_stride: int = 1,
    progress: bool = True,
    on_error: Callable[[InputError], None] | None = None,
    on_result: Callable[[InputFile, DetectionResult], None] | None = None,
) -> FilesSummary:
    """Detect faces in every image and video of ``paths`` (files and folders, recursively).

    A bad input is reported through ``on_error`` (and in the summary) and the others go on.
    ``jsonl`` may be a path (written atomically at the end) or an open text stream (e.g. stdout).
    """
    from tqdm import tqdm

    if (write_json or save_images) and out_dir is None:
        raise ValueError("out_dir is needed to write JSON files or annotated images")
    if batch_size < 1 or video_stride < 1:
        raise ValueError("batch_size and video_stride must be >= 1")
    items = collect_inputs(paths)
    files = [i for i in items if isinstance(i, InputFile)]
    outputs = OutputPaths(Path(out_dir) if out_dir is not None else None, [f.path for f in files])
    run = _FileDetection(
        detector, outputs, write_json=write_json, save_images=save_images, batch_size=batch_size,
        video_stride=video_stride, on_error=on_error, on_result=on_result,
    )
    for item in items:
        if isinstance(item, InputError):
            run.fail(item)

    jsonl_path: Path | None = None
    if isinstance(jsonl, (str, os.PathLike)):
        jsonl_path = Path(jsonl)
        if jsonl_path.resolve() in outputs.inputs:
            raise OutputClashError(jsonl_path, "the JSON lines file is an input; choose another path")
    elif jsonl is not None:
        run.jsonl_stream = jsonl

    bar = tqdm(total=len(files), desc="detect", unit="file", disable=None if progress else True, dynamic_ncols=True)
    return run.run(files, bar, jsonl_path)


class _FileDetection:
    """One :func:`detect_files` run: the summary, the output paths, the JSON lines stream, the
    progress bar and the images waiting for a batch, with one method per step."""

    def __init__(
        self,
        detector,
        outputs: OutputPaths,
        *,
        write_json: bool,
        save_images: bool,
        batch_size: int,
        video_stride: int,
        on_error: Callable[[InputError], None] | None,
        on_result: Callable[[InputFile, DetectionResult], None] | None,
    ) -> None:
        self.detector = detector
        self.outputs = outputs
        self.write_json = write_json
        self.save_images = save_images
        self.batch_size = batch_size
        self.video_stride = video_stride
        self.on_error = on_error
        self.on_result = on_result
        self.summary = FilesSummary()
        self.jsonl_stream: TextIO | None = None
        self.pending: list[tuple[InputFile, np.ndarray]] = []
        self.bar: Any = None

    def run(self, files: list[InputFile], bar: Any, jsonl_path: Path | None) -> FilesSummary:
        """Handle every file; the JSON lines file appears, whole, only when every input was handled."""
        with contextlib.ExitStack() as stack:
            self.bar = stack.enter_context(contextlib.closing(bar))
            if jsonl_path is not None:
                self.jsonl_stream = stack.enter_context(atomic_write(jsonl_path, "w"))
            for item in files:
                self.handle(item)
            self.flush()
        if jsonl_path is not None:
            self.summary.written.append(jsonl_path)
        elif self.jsonl_stream is not None:
            self.jsonl_stream.flush()
        return self.summary

    def fail(self, err: InputError) -> None:
        self.summary.failed.append(err)
        if self.on_error is not None:
            self.on_error(err)

    def emit_line(self, record: dict[str, Any]) -> None:
        if self.jsonl_stream is not None:
            self.jsonl_stream.write(json.dumps(record) + "\n")

    def handle(self, item: InputFile) -> None:
        """A video is done at once (after the pending images); an image joins the pending batch."""
        if item.kind == "video":
            self.flush()
            try:
                _detect_video(
                    self.detector, item, self.outputs, self.write_json, self.save_images, self.batch_size,
                    self.video_stride, self.emit_line, self.summary,
                )
            except InputError as err:
                self.fail(err)
            self.bar.update(1)
            return
        try:
            image = load_image(item.path, pixel_limit=self.detector.pixel_limit)
        except InputError as err:
            self.fail(err)
            self.bar.update(1)
            return
        self.pending.append((item, image))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        results = self.detector.detect([img for _, img in self.pending], batch_size=self.batch_size)
        for (item, img), result in zip(self.pending, results):
            result.source = str(item.path)
            try:
                self.finish_image(item, img, result)
            except InputError as err:
                self.fail(err)
            self.bar.update(1)
        self.pending.clear()

    def finish_image(self, item: InputFile, image: np.ndarray, result: DetectionResult) -> None:
        writes: list[tuple[Path, bytes]] = []
        if self.write_json or self.save_images:
            base = self.outputs.base(item)
            if self.write_json:
                path = self.outputs.check(base.with_suffix(".json"), item)
                writes.append((path, (result.to_json(indent=1) + "\n").encode()))
            if self.save_images:
                suffix = item.path.suffix.lower() if item.path.suffix.lower() in _ENCODABLE else ".png"
                path = self.outputs.check(base.with_name(base.name + "_faces" + suffix), item)
                writes.append((path, encode_image(draw_detections(image, result), suffix)))
        for path, data in writes:
            atomic_write_bytes(path, data)
            self.summary.written.append(path)
        self.emit_line(result.to_dict())
        self.summary.processed += 1
        self.summary.faces += len(result)
        if self.on_result is not None:
            self.on_result(item, result)


def _detect_video(detector, item, outputs, write_json, save_images, batch_size, stride, emit_line, summary) -> None:
    import cv2

    reader = VideoReader(item.path, pixel_limit=detector.pixel_limit)
    base = outputs.base(item) if (write_json or save_images) else None
    json_path = outputs.check(base.with_suffix(".json"), item) if write_json else None
    video_path = outputs.check(base.with_name(base.name + "_faces.mp4"), item) if save_images else None
    frames: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []  # emitted only when the whole video succeeded
    try:
        # the annotated video is renamed into place only when every frame is written; on an
        # error the writer is released (callbacks run last-in first) and the partial file removed
        with contextlib.ExitStack() as video_out:
            writer = None
            if video_path is not None:
                tmp_video = video_out.enter_context(atomic_path(video_path, suffix=".mp4"))
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(str(tmp_video), fourcc, reader.fps / stride, (reader.width, reader.height))
                video_out.callback(writer.release)
                if not writer.isOpened():
                    raise InputError(item.path, "cannot write the annotated video (no mp4v encoder in this OpenCV)")
            batch: list[tuple[int, np.ndarray]] = []

            def flush() -> None:
                results = detector.detect([f for _, f in batch], batch_size=batch_size)
                for (index, frame), result in zip(batch, results):
                    record = {"image": str(item.path), "frame": index, "time_s": round(index / reader.fps, 4)}
                    record.update({k: v for k, v in result.to_dict().items() if k != "image"})
                    lines.append(record)
                    frames.append({k: v for k, v in record.items() if k not in ("image", "width", "height")})
                    if writer is not None:
                        writer.write(cv2.cvtColor(draw_detections(frame, result), cv2.COLOR_RGB2BGR))
                    summary.frames += 1
                    summary.faces += len(result)
                batch.clear()

            for index, frame in enumerate(reader):
                if index % stride:
                    continue
                batch.append((index, frame))
                if len(batch) >= batch_size:
                    flush()
            if batch:
                flush()
        if video_path is not None:
            summary.written.append(video_path)
        if json_path is not None:
            doc = {
                "video": str(item.path), "width": reader.width, "height": reader.height, "fps": reader.fps,
                "frames": frames,
            }
            atomic_write_text(json_path, json.dumps(doc, indent=1) + "\n")
            summary.written.append(json_path)
        for record in lines:
            emit_line(record)
        summary.processed += 1
    finally:
        reader.close()
