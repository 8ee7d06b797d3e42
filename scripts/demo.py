"""`make demo`: find faces in two real photos that ship with installed dependencies.

matplotlib ships ``grace_hopper.jpg``; scikit-image ships the ``astronaut`` image (written to a PNG
here first). Runs ``ufssd detect`` with the embedded default model and writes annotated copies and
JSON into ``--out`` (git-ignored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def demo_inputs(folder: Path) -> list[Path]:
    import matplotlib.cbook
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    folder.mkdir(parents=True, exist_ok=True)
    hopper = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    astronaut = folder / "astronaut.png"
    if not astronaut.exists():
        Image.fromarray(np.asarray(skdata.astronaut())).save(astronaut)
    return [hopper, astronaut]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    args = parser.parse_args(argv)
    from ufssd.cli import main as ufssd_main

    inputs = demo_inputs(args.out / "inputs")
    out = args.out / "detections"
    code = ufssd_main(["detect", *map(str, inputs), "--out", str(out), "--json", "--save-images"])
    print(f"\nufssd demo: annotated images and JSON are in {out.resolve()}")
    return code


if __name__ == "__main__":
    sys.exit(main())
