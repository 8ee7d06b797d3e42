"""End-to-end latency of :meth:`FaceDetector.detect` (``ufssd bench``): the source of every speed
figure in the README.

Method (``docs/inference.md``): one image of each size (matplotlib's ``grace_hopper.jpg``
resized, a real photo with a face; noise when it is missing), given as a ``uint8`` RGB array;
``warmup`` untimed calls, then ``repeats`` timed calls of ``detect(images, batch_size=B)`` with
``B`` copies of the image. Each call's wall time divided by ``B`` is one sample (ms per image);
we report its median, minimum and 90th percentile, and the medians of the pre-processing
(conversion, resize, normalisation, padding), network and post-processing (decode, threshold,
top-k, NMS, mapping back) parts, as recorded by ``FaceDetector.last_timings``. Thread counts are
set for both torch (``torch.set_num_threads``) and onnxruntime (``intra_op_num_threads``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["BenchRow", "machine_info", "bench_image", "run_bench", "format_markdown", "parse_sizes"]


@dataclass
class BenchRow:
    backend: str
    width: int
    height: int
    batch: int
    threads: int
    repeats: int
    median_ms: float
    min_ms: float
    p90_ms: float
    pre_ms: float
    net_ms: float
    post_ms: float
    faces: int


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"640x480,1024x768"`` -> ``[(640, 480), (1024, 768)]`` as (width, height)."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            w, h = (int(v) for v in part.split("x"))
        except ValueError:
            raise ValueError(f"size must be WIDTHxHEIGHT, got {part!r}") from None
        if w < 1 or h < 1:
            raise ValueError(f"size must be positive, got {part!r}")
        sizes.append((w, h))
    if not sizes:
        raise ValueError("no sizes given")
    return sizes


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int, device: str = "cpu") -> dict:
    info = {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "device": device,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def bench_image(width: int, height: int) -> np.ndarray:
    """A real photo (matplotlib's ``grace_hopper.jpg``) resized to ``width x height``, or noise."""
    import cv2

    try:
        import matplotlib.cbook
        from PIL import Image

        with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
            photo = np.asarray(im.convert("RGB"))
        return np.ascontiguousarray(cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA))
    except Exception:
        return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def run_bench(
    model: torch.nn.Module,
    sizes: list[tuple[int, int]],
    backends: list[str],
    batches: list[int],
    *,
    threads: int = 2,
    warmup: int = 3,
    repeats: int = 20,
    device: str = "cpu",
    score_threshold: float | None = None,
    progress=None,
) -> list[BenchRow]:
    """Time every (backend, size, batch) combination (see the module doc)."""

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(model, sizes, backends, batches, threads, warmup, repeats, device, score_threshold, progress)
    finally:
        torch.set_num_threads(previous)


def _run(
    model, sizes, backends, batches, threads, warmup, repeats, device, score_threshold, progress
) -> list[BenchRow]:
    from ufssd.inference.face_detector import FaceDetector

    rows = []
    for backend in backends:
        detector = FaceDetector.from_model(
            model, backend=backend, device=device, num_threads=threads, score_threshold=score_threshold
        )
        for width, height in sizes:
            image = bench_image(width, height)
            for batch in batches:
                images = [image] * batch
                for _ in range(warmup):
                    detector.detect(images, batch_size=batch)
                samples, parts = [], {"pre": [], "net": [], "post": []}
                faces = 0
                for _ in range(repeats):
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    results = detector.detect(images, batch_size=batch)
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    samples.append((time.perf_counter() - t0) * 1000.0 / batch)
                    for k in parts:
                        parts[k].append(detector.last_timings[k] * 1000.0 / batch)
                    faces = len(results[0])
                s = np.asarray(samples)
                rows.append(
                    BenchRow(
                        backend, width, height, batch, threads, repeats,
                        float(np.median(s)), float(s.min()), float(np.percentile(s, 90)),
                        float(np.median(parts["pre"])), float(np.median(parts["net"])), float(np.median(parts["post"])),
                        faces,
                    )
                )
                if progress is not None:
                    progress(rows[-1])
    return rows


def format_markdown(rows: list[BenchRow], info: dict, model_name: str) -> str:
    lines = [
        f"ufssd bench: model {model_name}; {info['cpu']} ({info['usable_cpus']} usable of "
        f"{info['logical_cpus']} logical CPUs), {info['threads']} threads, device {info['device']}; "
        f"torch {info['torch']}, onnxruntime {info['onnxruntime']}",
        "",
        "| backend | size (WxH) | batch | median ms/img | min | p90 | pre | net | post | faces |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.backend} | {r.width}x{r.height} | {r.batch} | {r.median_ms:.1f} | {r.min_ms:.1f} | "
            f"{r.p90_ms:.1f} | {r.pre_ms:.1f} | {r.net_ms:.1f} | {r.post_ms:.1f} | {r.faces} |"
        )
    lines.append("")
    lines.append(
        "End to end per image (array in, boxes out), after warm-up; pre/net/post are medians of the parts."
    )
    return "\n".join(lines)


def to_json(rows: list[BenchRow], info: dict, model_name: str) -> str:
    return json.dumps({"model": model_name, "machine": info, "rows": [asdict(r) for r in rows]}, indent=1)
