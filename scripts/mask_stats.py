"""What the FFMM mask and the stride-4 scores of a model look like on real images (MODEL_CARD "Limits").

For every ``--every``-th dev-slice image: the share of FFMM cells with ``B = 1`` on each masked
level, the median face score of the anchors in kept and in switched-off cells, and the number of
boxes the detector returns at score >= 0.01 with and without ``skip_masked_anchors``::

    python scripts/mask_stats.py [--weights W] [--every 8] [--images 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    wider = repo.parent / "shared" / "data" / "widerface"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="weights file (default: the embedded model)")
    p.add_argument("--data-root", type=Path, default=wider)
    p.add_argument("--every", type=int, default=8, help="take every N-th dev image (default 8)")
    p.add_argument("--images", type=int, default=5, help="how many images (default 5)")
    args = p.parse_args(argv)

    import torch

    from ufssd.geometry import feature_sizes
    from ufssd.inference import FaceDetector, load_image
    from ufssd.inference.postprocess import masked_anchor_keep
    from ufssd.model import normalize
    from ufssd.widerface_files import DEV_LIST, image_folder, read_image_list

    names = read_image_list(args.data_root / DEV_LIST)[:: args.every][: args.images]
    plain = FaceDetector(weights=args.weights)
    skipping = FaceDetector(weights=args.weights, skip_masked_anchors=True)
    floor = plain.resolve(evaluation=True).score_threshold  # the model's eval_score_threshold (0.01)
    cfg = plain.config
    print("| image | B = 1 share | median score, kept cells | median score, masked cells | boxes | boxes, skip_masked_anchors |")
    print("|---|---|---|---|---|---|")
    for name in names:
        path = image_folder(args.data_root, "val") / f"{name}.jpg"
        image = load_image(path)
        h, w = image.shape[:2]
        mult = cfg.anchors.pad_multiple
        hp, wp = -(-h // mult) * mult, -(-w // mult) * mult
        # the detector's own pre-processing (normalise, zero-pad) at the original size
        batch = torch.zeros(1, 3, hp, wp)
        batch[0, :, :h, :w] = normalize(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float(), cfg.model)[0]
        with torch.no_grad():
            cls_logits, _, mask_logits = plain.runner(batch)
        sizes = feature_sizes(hp, wp, cfg.anchors.strides)
        keep = masked_anchor_keep(mask_logits, sizes, cfg.model.ffmm_levels, cfg.model.mask_threshold)[0]
        scores = torch.softmax(cls_logits[0].float(), dim=-1)[:, 1]
        # one anchor per cell, levels finest first (the layout masked_anchor_keep uses)
        level_of = torch.cat([torch.full((fh * fw,), level) for level, (fh, fw) in enumerate(sizes)])
        on_masked_level = torch.isin(level_of, torch.tensor(cfg.model.ffmm_levels))
        kept, off = scores[keep & on_masked_level], scores[~keep]
        share = float(keep[on_masked_level].float().mean())
        n_plain = len(plain.detect(image, score_threshold=floor).scores)
        n_skip = len(skipping.detect(image, score_threshold=floor).scores)
        med = lambda t: f"{float(t.median()):.3f}" if t.numel() else "-"  # noqa: E731
        print(f"| {name} | {share:.2f} | {med(kept)} | {med(off)} | {n_plain} | {n_skip} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
