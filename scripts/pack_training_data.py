"""Pack the trainable WIDER FACE images into a small copy in the official layout.

The GPU machine of the ``device`` tool receives only the work tree (64 MiB), so its training run
reads a re-encoded copy: every image the trainer may use (``train`` + ``val_train_images.txt``;
never the dev slice), its longer side shrunk to ``--max-side``, saved as WebP, and the official
annotation files, read with :func:`ufssd.widerface_files.read_split` and written back
(:func:`ufssd.widerface_files.format_annotations`) with the boxes scaled by the same factor and
the ``invalid`` flag set for every ignored face (blur, pose and the other attributes, which no
trainer reads, are written as 0)::

    python scripts/pack_training_data.py --root ../shared/data/widerface --out .device_data/widerface

The copy is a root like any other: ``ufssd train --data-root .device_data/widerface``. It stops
with an error, writing nothing more, when the images would exceed ``--max-mib``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from ufssd.atomic import atomic_write_bytes, atomic_write_text
from ufssd.data import load_image
from ufssd.widerface_files import (
    VAL_TRAIN_LIST,
    DataError,
    format_annotations,
    read_image_list,
    read_split,
    split_paths,
)


def pack(root: Path, out: Path, max_side: int, quality: int, max_mib: float) -> None:
    root = root.resolve()
    subsets = {"train": None, "val": root / VAL_TRAIN_LIST}
    total = 0
    for split, subset in subsets.items():
        samples = sorted(read_split(root, split, subset=subset), key=lambda s: s.name)
        out_txt, out_images = split_paths(out, split)
        written: list[tuple[str, np.ndarray, np.ndarray]] = []
        for sample in samples:
            image = load_image(sample.image_path, sample.origin)
            scale = min(1.0, max_side / max(image.shape[:2]))
            if scale < 1.0:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            ok, data = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, quality])
            if not ok:
                raise DataError(f"{sample.image_path}: WebP encoding failed")
            total += len(data)
            if total > max_mib * 2**20:
                raise SystemExit(
                    f"the packed images pass --max-mib {max_mib} at {sample.name}: lower --max-side or --quality"
                )
            atomic_write_bytes(out_images / f"{sample.name}.webp", data.tobytes())
            written.append((f"{sample.name}.webp", sample.boxes * scale, sample.ignore))
        atomic_write_text(out_txt, format_annotations(written))
        print(f"{split}: {len(samples)} images -> {out_images}")
    val_names = sorted(read_image_list(root / VAL_TRAIN_LIST))
    atomic_write_text(out / VAL_TRAIN_LIST, "".join(f"{n}.webp\n" for n in val_names))
    print(f"{total / 2**20:.1f} MiB of images in {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("../shared/data/widerface"), help="WIDER FACE root")
    p.add_argument("--out", type=Path, default=Path(".device_data/widerface"), help="the packed root")
    p.add_argument("--max-side", type=int, default=800, help="longer image side after packing (default 800)")
    p.add_argument("--quality", type=int, default=72, help="WebP quality (default 72)")
    p.add_argument("--max-mib", type=float, default=58.0, help="refuse to pack more image bytes than this")
    args = p.parse_args(argv)
    pack(args.root, args.out, args.max_side, args.quality, args.max_mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
