"""How many faces of a clip stay hidden in every frame, with and without ``--persist N``.

    python scripts/blur_persistence.py [--data-root /root/widerface-all] [--images 4]
        [--frames 90] [--size 960x540] [--persist 0,1,2,3,5,10] [--json OUT.json]

The clips are made from WIDER FACE dev photos, so the ground-truth face boxes are known in every
frame: a 16:9 window pans slowly across the photo while zooming in (from 90 % to 65 % of the
photo's width over the clip), each window is resized to ``--size`` and JPEG-compressed (quality
85) like a video frame. The photos: the first ``--images`` dev images (in list order, one per event)
with 8 to 40 valid faces of 20 px or more and a width of at least 1000 px.

Each frame's faces are found once by the embedded model at the blur threshold; then for each N of
``--persist`` the frames go through :class:`ufssd.inference.face_tracker.FaceTracker` and the
hidden area is drawn with :func:`ufssd.inference.anonymize.hide_faces` (default shape and
expand), exactly as ``ufssd blur`` does. A face counts as hidden in a frame when at least
``--cover`` (90 %) of its ground-truth box is inside the hidden area. Counted: valid faces that
are inside the frame and at least 20 px high in it. Reported per N: the share of faces hidden in
every frame where they are counted, the share of face-frames hidden, and the held boxes per frame
(what persistence adds); then the smallest N with the most faces hidden in every frame (the rule
for the default of ``ufssd blur --persist``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def pick_photos(samples, count: int, min_faces: int = 8, max_faces: int = 40, min_width: int = 1000):
    from PIL import Image

    picked, events = [], set()
    for s in samples:
        event = s.name.split("/")[0]
        if event in events:
            continue
        valid = ~s.ignore & (s.boxes[:, 3] - s.boxes[:, 1] >= 20)
        if not min_faces <= valid.sum() <= max_faces:
            continue
        with Image.open(s.image_path) as im:
            if im.width < min_width:
                continue
        picked.append(s)
        events.add(event)
        if len(picked) == count:
            break
    return picked


def windows(width: int, height: int, frames: int, aspect: float) -> list[tuple[float, float, float, float]]:
    """A window per frame (x, y, w, h) in photo pixels: zoom 0.9 -> 0.65 of the photo's width
    (capped by its height), centre panning from the left third to the right third."""
    out = []
    for i in range(frames):
        f = i / max(1, frames - 1)
        w = min(width * (0.9 - 0.25 * f), height * aspect)
        h = w / aspect
        cx = width * (0.35 + 0.3 * f)
        cy = height * 0.5
        x = float(np.clip(cx - w / 2, 0, width - w))
        y = float(np.clip(cy - h / 2, 0, height - h))
        out.append((x, y, w, h))
    return out


def make_clip(sample, frames: int, size: tuple[int, int]):
    """Frames (RGB uint8) and per frame the ground-truth boxes (G, 4) in frame pixels plus a
    (G,) mask of the faces counted in that frame (valid, inside, >= 20 px high)."""
    import cv2

    from ufssd.inference import load_image

    photo = load_image(sample.image_path, exif=False)
    ph, pw = photo.shape[:2]
    out_w, out_h = size
    clip, truth = [], []
    for x, y, w, h in windows(pw, ph, frames, out_w / out_h):
        scale = out_w / w
        affine = np.array([[scale, 0, -x * scale], [0, scale, -y * scale]])
        frame = cv2.warpAffine(photo, affine, (out_w, out_h), flags=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        clip.append(np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]))
        boxes = (sample.boxes - [x, y, x, y]) * scale
        inside = (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= out_w) & (boxes[:, 3] <= out_h)
        counted = ~sample.ignore & inside & (boxes[:, 3] - boxes[:, 1] >= 20)
        truth.append((boxes, counted))
    return clip, truth


def coverage(hidden_boxes: np.ndarray, gt: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Share of each ground-truth box's pixels inside the area ``ufssd blur`` hides."""
    from ufssd.inference.anonymize import AnonymizeConfig, hide_faces

    w, h = size
    mask = hide_faces(np.ones((h, w), np.uint8), hidden_boxes, AnonymizeConfig(method="fill")) == 0
    integral = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    out = np.zeros(len(gt))
    for i, (x1, y1, x2, y2) in enumerate(np.round(gt).astype(int)):
        x1, x2, y1, y2 = max(x1, 0), min(x2, w), max(y1, 0), min(y2, h)
        area = max(0, x2 - x1) * max(0, y2 - y1)
        if area:
            out[i] = (integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]) / area
    return out


def measure(detections, truth, persist: int, size, cover: float) -> dict:
    from ufssd.inference.face_tracker import FaceTracker

    tracker = FaceTracker(persist)
    counted_frames = np.zeros(len(truth[0][0]), int)
    hidden_frames = np.zeros(len(truth[0][0]), int)
    held = 0
    for (boxes, scores), (gt, counted) in zip(detections, truth):
        hidden = tracker.update(boxes, scores)
        held += int((hidden.held > 0).sum())
        ok = coverage(hidden.boxes, gt[counted], size) >= cover
        counted_frames[counted] += 1
        hidden_frames[np.flatnonzero(counted)[ok]] += 1
    seen = counted_frames > 0
    return {
        "faces": int(seen.sum()),
        "hidden_every_frame": int((hidden_frames[seen] == counted_frames[seen]).sum()),
        "face_frames": int(counted_frames.sum()),
        "face_frames_hidden": int(hidden_frames.sum()),
        "held_per_frame": held / len(truth),
    }


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def share(part: float, whole: float, fmt: str = ".1%") -> str:
    """``part / whole`` formatted, or "n/a" when ``whole`` is 0 (no face was counted)."""
    return format(part / whole, fmt) if whole else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path("/root/widerface-all"))
    parser.add_argument("--subset", type=Path, default=None, help="default: DATA_ROOT/dev_images.txt")
    parser.add_argument("--images", type=positive_int, default=4, help="clips, one per photo (default 4)")
    parser.add_argument("--frames", type=positive_int, default=90, help="frames per clip (default 90)")
    parser.add_argument("--size", default="960x540", help="frame size WxH")
    parser.add_argument("--persist", default="0,1,2,3,5,10")
    parser.add_argument("--cover", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    persists = [int(v) for v in args.persist.split(",")]

    import torch
    from tqdm import tqdm

    from ufssd.inference import FaceDetector
    from ufssd.inference.anonymize import BLUR_SCORE_THRESHOLD
    from ufssd.widerface_files import DEV_LIST, read_split

    subset = args.subset or args.data_root / DEV_LIST
    samples = read_split(args.data_root, "val", subset=subset)
    photos = pick_photos(samples, args.images)
    if not photos:
        print(f"blur_persistence.py: no photo of {subset} has 8 to 40 valid faces of 20 px or more and a "
              "width of at least 1000 px (one per event)", file=sys.stderr)
        return 1
    if len(photos) < args.images:
        print(f"blur_persistence.py: only {len(photos)} of the {args.images} photos asked for qualify "
              f"in {subset}; measuring {len(photos)} clips", file=sys.stderr)
    torch.set_num_threads(args.threads)
    detector = FaceDetector(backend="onnxruntime", num_threads=args.threads)
    totals = {n: {} for n in persists}
    for sample in photos:
        clip, truth = make_clip(sample, args.frames, size)
        detections = []
        for frame in tqdm(clip, desc=sample.name, unit="frame"):
            result = detector.detect(frame, score_threshold=BLUR_SCORE_THRESHOLD)
            detections.append((result.boxes, result.scores))
        for n in persists:
            row = measure(detections, truth, n, size, args.cover)
            print(f"{sample.name}: persist {n}: {row}")
            for k, v in row.items():
                totals[n][k] = totals[n].get(k, 0) + v
    print(f"\n{len(photos)} clips of {args.frames} frames at {size[0]}x{size[1]}; hidden = >= {args.cover:.0%} of "
          f"the face box inside the hidden area; faces >= 20 px; threshold {BLUR_SCORE_THRESHOLD}")
    print("| --persist | faces hidden in every frame | face-frames hidden | held boxes per frame |\n|---|---|---|---|")
    for n in persists:
        t = totals[n]
        print(f"| {n} | {t['hidden_every_frame']} / {t['faces']} ({share(t['hidden_every_frame'], t['faces'])}) | "
              f"{share(t['face_frames_hidden'], t['face_frames'])} | {t['held_per_frame'] / len(photos):.2f} |")
    best = max(totals[n]["hidden_every_frame"] for n in persists)
    chosen = min(n for n in persists if totals[n]["hidden_every_frame"] == best)
    print(f"\nsmallest N with the most faces hidden in every frame: {chosen} (the default of ufssd blur --persist)")
    if args.json:
        args.json.write_text(json.dumps({str(n): totals[n] for n in persists}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
