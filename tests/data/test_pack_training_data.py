"""scripts/pack_training_data.py: the packed copy reads as a root whose boxes are the originals, scaled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ufssd.data import read_split

@pytest.fixture(scope="module")
def pack(load_script):
    return load_script("pack_training_data")


def _mini_root(src: Path, dst: Path, n_train: int = 3, n_val: int = 2) -> Path:
    """A small root in the official layout: the first images of the shared split files."""
    for split, n in (("train", n_train), ("val", n_val)):
        samples = read_split(src, split)
        names = [s.name for s in samples[:n]]
        lines = (src / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").read_text().splitlines()
        blocks: list[str] = []
        i = 0
        while i < len(lines):
            count = int(lines[i + 1])
            block = lines[i : i + 2 + max(count, 1)]
            if block[0].strip()[:-4] in names:
                blocks.extend(block)
            i += 2 + max(count, 1)
        out_txt = dst / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        out_txt.parent.mkdir(parents=True, exist_ok=True)
        out_txt.write_text("\n".join(blocks) + "\n")
        for name in names:
            image = dst / f"WIDER_{split}" / "images" / f"{name}.jpg"
            image.parent.mkdir(parents=True, exist_ok=True)
            image.symlink_to(src / f"WIDER_{split}" / "images" / f"{name}.jpg")
        if split == "val":
            (dst / "val_train_images.txt").write_text("".join(f"{n}.jpg\n" for n in names))
    return dst


def test_pack_scales_boxes_and_keeps_flags(pack, widerface_dir: Path, tmp_path: Path) -> None:
    import cv2

    root = _mini_root(widerface_dir, tmp_path / "src")
    out = tmp_path / "packed"
    pack.pack(root, out, max_side=320, quality=70, max_mib=10)
    for split in ("train", "val"):
        original = {s.name: s for s in read_split(root, split)}
        packed = read_split(out, split, check_images=True)
        assert [s.name for s in packed] == sorted(original)
        for s in packed:
            image = cv2.imread(str(s.image_path))
            assert image is not None and max(image.shape[:2]) <= 320
            o = original[s.name]
            h, w = cv2.imread(str(o.image_path)).shape[:2]
            scale = min(1.0, 320 / max(h, w))
            np.testing.assert_allclose(s.boxes, o.boxes * scale, atol=0.01)
            assert s.ignore.tolist() == o.ignore.tolist()


def test_pack_refuses_past_the_size_limit(pack, widerface_dir: Path, tmp_path: Path) -> None:
    root = _mini_root(widerface_dir, tmp_path / "src")
    with pytest.raises(SystemExit, match="max-mib"):
        pack.pack(root, tmp_path / "packed", max_side=800, quality=90, max_mib=0.001)
