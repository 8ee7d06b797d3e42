"""The before/after picture of README.md and docs/anonymize.md: ``docs/anonymize_before_after.jpg``.

    python scripts/blur_figure.py [--out docs/anonymize_before_after.jpg] [--width 256]

Grace Hopper (matplotlib's sample photo, public domain) as given, then ``ufssd.anonymize`` with
the defaults (blur, ellipse, expand 0.25, the blur threshold), ``method="pixelate"`` and
``method="fill"``, side by side, each panel ``--width`` px wide and labelled; a JPEG (quality 85)
of about 60 KB.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def figure(width: int):
    import matplotlib.cbook
    import numpy as np
    from PIL import Image, ImageDraw

    from ufssd import anonymize
    from ufssd.inference import FaceDetector

    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    detector = FaceDetector()
    panels = [("before", photo)] + [
        (f"after: {m}", anonymize(photo, detector, method=m)) for m in ("blur", "pixelate", "fill")
    ]
    height = round(photo.height * width / photo.width)
    canvas = Image.new("RGB", (len(panels) * width + (len(panels) - 1) * 4, height), "white")
    for i, (label, image) in enumerate(panels):
        x = i * (width + 4)
        canvas.paste(image.resize((width, height), Image.Resampling.LANCZOS), (x, 0))
        draw = ImageDraw.Draw(canvas)
        box = draw.textbbox((x + 6, height - 22), label)
        draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
        draw.text((x + 6, height - 22), label, fill=(255, 255, 255))
    return np.asarray(canvas)


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=repo / "docs" / "anonymize_before_after.jpg")
    parser.add_argument("--width", type=int, default=256, help="width of each panel in px")
    args = parser.parse_args(argv)
    from PIL import Image

    from ufssd.atomic import atomic_write

    with atomic_write(args.out, "wb") as f:
        Image.fromarray(figure(args.width)).save(f, "JPEG", quality=85)
    print(f"written: {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
