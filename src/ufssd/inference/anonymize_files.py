"""Hiding the faces of files, folders and videos and writing the results (``ufssd blur``).

For an input found as ``<relative>`` (its path inside a folder argument, or its file name for a
file argument), the output keeps its name: ``out_dir/<relative>`` (an image in the same format,
a video in the same container), and with ``write_json`` a log of what was hidden beside it,
``out_dir/<relative>.json`` (the full name, so ``a.jpg`` and ``a.png`` keep separate logs).

Conventions of ``ufssd detect`` (:mod:`.files`): inputs are expanded by
:func:`~ufssd.inference.io.collect_inputs`; a bad input is reported (``on_error``) and the others
go on; an output that would overwrite an input is refused; two inputs with the same
``<relative>`` get ``_2``, ``_3`` ... before the suffix; every file is written atomically (a
temporary file beside it, then ``os.replace``), so no partly anonymised file is ever left, and an
interrupted run leaves a previous output intact.

Images are written without their metadata (EXIF thumbnails and GPS would defeat the purpose);
JPEGs are re-encoded with the input's quantisation tables and chroma subsampling (the input's
quality), so pixels away from the faces differ from the input only by JPEG rounding.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ufssd.atomic import atomic_write, atomic_write_text
from ufssd.images import open_file, pil_to_rgb
from ufssd.inference.anonymize import AnonymizeConfig, face_records, hide_faces
from ufssd.inference.face_tracker import DEFAULT_PERSIST, check_persist
from ufssd.inference.files import OutputPaths
from ufssd.inference.io import InputError, InputFile, collect_inputs

__all__ = ["anonymize_files", "BlurSummary"]


@dataclass
class BlurSummary:
    processed: int = 0  # images + videos done
    frames: int = 0  # video frames done
    faces: int = 0  # faces hidden (per frame for videos, held ones included)
    failed: list[InputError] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "clip.mov: audio not kept: ..."


def anonymize_files(
    detector,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    cfg: AnonymizeConfig,
    *,
    persist: int = DEFAULT_PERSIST,
    write_json: bool = False,
    progress: bool = True,
    on_error: Callable[[InputError], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> BlurSummary:
    """Hide the faces of every image and video of ``paths`` (files and folders, recursively)
    into ``out_dir``. ``persist`` applies to videos (:class:`~.face_tracker.FaceTracker`)."""
    from tqdm import tqdm

    check_persist(persist)
    summary = BlurSummary()
    items = collect_inputs(paths)
    files = [i for i in items if isinstance(i, InputFile)]
    targets = OutputPaths(Path(out_dir), [f.path for f in files])

    def fail(err: InputError) -> None:
        summary.failed.append(err)
        if on_error is not None:
            on_error(err)

    for item in items:
        if isinstance(item, InputError):
            fail(item)
    settings = {**cfg.to_dict(), "persist": persist}
    for item in tqdm(files, desc="blur", unit="file", disable=None if progress else True, dynamic_ncols=True):
        try:
            if item.kind == "video":
                doc = _video(detector, item, targets, cfg, persist, progress, summary, on_note)
            else:
                doc = _image(detector, item, targets, cfg, summary)
        except InputError as err:
            fail(err)
            continue
        if write_json:
            json_path = Path(doc["output"] + ".json")
            atomic_write_text(json_path, json.dumps({**doc, "settings": settings}, indent=1) + "\n")
            summary.written.append(json_path)
        summary.processed += 1
    return summary


def _image(detector, item: InputFile, targets: OutputPaths, cfg: AnonymizeConfig, summary: BlurSummary) -> dict[str, Any]:
    # decoded once (every bad-input error here): hidden in its own mode, detected in RGB
    upright = open_file(item.path, pixel_limit=detector.pixel_limit)
    rgb = pil_to_rgb(upright, item.path)
    native = rgb if upright.mode == "RGB" else upright
    suffix, fmt = item.path.suffix, _format_of(item.path.suffix)
    if fmt is None:  # a file named directly, with no (writable) image extension
        suffix, fmt = ".png", "PNG"
    target = targets.with_suffix(item, suffix, ".json")
    with Image.open(item.path) as src:  # the header only: the JPEG tables to write it again with
        options = _save_options(src, fmt)
    result = detector.detect(rgb, score_threshold=cfg.score_threshold)
    hidden = hide_faces(native, result.boxes, cfg)
    out = Image.fromarray(hidden) if isinstance(hidden, np.ndarray) else hidden
    if fmt == "PNG" and out.mode not in _PNG_MODES:
        out = out.convert("RGBA" if "A" in out.mode else "RGB")
    try:
        with atomic_write(target, "wb") as f:
            out.save(f, format=fmt, **options)
    except (OSError, ValueError) as exc:  # e.g. a mode the format cannot write; nothing is left
        raise InputError(item.path, f"cannot write {target} ({exc})") from exc
    summary.written.append(target)
    summary.faces += len(result)
    h, w = rgb.shape[:2]
    return {
        "image": str(item.path), "output": str(target), "width": w, "height": h,
        "faces": face_records(result.boxes, result.scores, (h, w), cfg.expand),
    }


_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}


def _format_of(suffix: str) -> str | None:
    """The Pillow format that writes files with this extension, or None."""
    fmt = Image.registered_extensions().get(suffix.lower())
    return fmt if fmt is not None and fmt in Image.SAVE else None


def _save_options(src: Image.Image, fmt: str) -> dict[str, Any]:
    """Save options for writing an opened input image as ``fmt``: its colour profile and, for a
    JPEG written as JPEG, its quantisation tables and chroma subsampling; never its EXIF."""
    options: dict[str, Any] = {}
    if "icc_profile" in src.info:
        options["icc_profile"] = src.info["icc_profile"]
    if fmt == "JPEG":
        qtables = getattr(src, "quantization", None) if src.format == "JPEG" else None
        if qtables:
            from PIL import JpegImagePlugin

            options["qtables"] = qtables
            sampling = JpegImagePlugin.get_sampling(src)
            if sampling >= 0:
                options["subsampling"] = sampling
        else:
            options["quality"] = 95
    return options


def _video(detector, item, targets, cfg, persist, progress, summary, on_note) -> dict[str, Any]:
    if importlib.util.find_spec("av") is None:
        raise InputError(item.path, "videos need PyAV: pip install 'ufssd[video]'")
    from ufssd.inference.anonymize_video import anonymize_video

    target = targets.with_suffix(item, item.path.suffix, ".json")
    report = anonymize_video(detector, item.path, target, cfg, persist=persist, progress=progress)
    if not report.audio_kept and report.audio != "none in the input":
        note = f"{item.path}: audio {report.audio}"
        summary.notes.append(note)
        if on_note is not None:
            on_note(note)
    summary.written.append(target)
    summary.frames += len(report.frames)
    summary.faces += report.faces
    return {
        "video": str(item.path), "output": str(target), "width": report.width, "height": report.height,
        "fps": report.fps, "audio": report.audio, "frames": report.frames,
    }
