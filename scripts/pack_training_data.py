"""Pack the trainable WIDER FACE images into a small copy in the official layout.

The GPU machine of the ``device`` tool receives only the work tree (64 MiB), so its training run
reads a re-encoded copy: every image the trainer may use (``train`` + ``val_train_images.txt``;
never the dev slice), its longer side shrunk to ``--max-side``, saved as WebP, and the official
annotation files with the boxes scaled by the same factor (the other nine fields unchanged)::

    python scripts/pack_training_data.py --root ../shared/data/widerface --out .device_data/widerface

The copy is a root like any other: ``ufssd train --data-root .device_data/widerface``. It stops
with an error, writing nothing more, when the images would exceed ``--max-mib``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from ufssd.atomic import atomic_write_bytes, atomic_write_text
from ufssd.data import DataError, read_image_list
from ufssd.data.widerface import normalize_name, split_paths
from ufssd.train.sources import VAL_TRAIN_LIST


def _blocks(txt_path: Path) -> dict[str, list[str]]:
    """name -> the block's lines (name line, count, face lines) of an official annotation file."""
    lines = txt_path.read_text().splitlines()
    blocks: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        count = int(lines[i + 1])
        n_face_lines = max(count, 1)  # a zero-face block still carries one line of zeros
        blocks[normalize_name(lines[i])] = lines[i : i + 2 + n_face_lines]
        i += 2 + n_face_lines
    return blocks


def _scaled_block(block: list[str], new_name: str, scale: float) -> list[str]:
    out = [new_name, block[1]]
    for line in block[2:]:
        fields = line.split()
        if not any(float(f) for f in fields):  # the zero line of a face-less image, kept verbatim
            out.append(line)
            continue
        xywh = [float(f) * scale for f in fields[:4]]
        out.append(" ".join([*(f"{v:.2f}" for v in xywh), *fields[4:]]))
    return out


def pack(root: Path, out: Path, max_side: int, quality: int, max_mib: float) -> None:
    root = root.resolve()
    wanted = {"train": None, "val": set(read_image_list(root / VAL_TRAIN_LIST))}
    total = 0
    for split, names in wanted.items():
        txt_path, image_root = split_paths(root, split)
        out_txt, out_images = split_paths(out, split)
        blocks = _blocks(txt_path)
        kept = sorted(blocks if names is None else names)
        written: list[str] = []
        for name in kept:
            src = image_root / f"{name}.jpg"
            image = cv2.imread(str(src), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            if image is None:
                raise DataError(f"{src}: cannot read the image")
            scale = min(1.0, max_side / max(image.shape[:2]))
            if scale < 1.0:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, quality])
            if not ok:
                raise DataError(f"{src}: WebP encoding failed")
            total += len(data)
            if total > max_mib * 2**20:
                raise SystemExit(f"the packed images pass --max-mib {max_mib} at {name}: lower --max-side or --quality")
            atomic_write_bytes(out_images / f"{name}.webp", data.tobytes())
            written.extend(_scaled_block(blocks[name], f"{name}.webp", scale))
        atomic_write_text(out_txt, "\n".join(written) + "\n")
        print(f"{split}: {len(kept)} images -> {out_images}")
    atomic_write_text(out / VAL_TRAIN_LIST, "".join(f"{n}.webp\n" for n in sorted(wanted["val"])))
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
