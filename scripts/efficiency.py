"""Table 3 at our scale: does FFMM make inference cheaper? (issue 18, item 3)

For each trained model (``--weights LABEL=PATH``, repeatable; ``default`` is the shipped model),
on every ``--every``-th dev image (at most ``--images``) at its original size, batch 1,
``--threads`` threads:

- time per image split into pre-processing, network, decoding (score threshold, top-k, decode,
  back to original pixels) and NMS (``torchvision.ops.nms``, timed around its call);
- the number of candidates with score >= 0.01 (``above_001``; with ``skip_masked_anchors``, in
  kept cells only) and the number that reach NMS (``to_nms``: at most ``pre_nms_top_k``, 5,000);
- the FFMM mask's kept share (``B = 1``) per masked level, over the cells that cover the image;
- dev APs of the same predictions (threshold 0.01, the official protocol);

with ``skip_masked_anchors`` off (the network's output as it is) and on (anchors of cells with
``B = 0`` never reach NMS: the paper's argument), and for a model with FFMM every ``--th-mask``
value (``ModelConfig.mask_threshold``, Th_Mask, 0.01 the paper's). One CSV row per setting in
``--csv`` (by default ``docs/ablation_efficiency.csv``, committed); ``scripts/ablation.py``
renders it into ``docs/ablation.md``. The VGG-16 presets' forward times with and without FFMM are ``benchmarks/bench_forward.py``'s.

    python scripts/efficiency.py --weights default \\
        --weights uf-ssd@seed1=~/ufssd_runs/ablation/runs/ufssd_light/seed1/final.safetensors \\
        --weights ffmm-x1@seed1=~/ufssd_runs/ablation/runs/ufssd_light_ffmm_x1/seed1/final.safetensors

Labels ``<row>@<run>`` that share their ``@<run>`` are models trained alike: the page compares the
one without FFMM with the one with it (Table 3 proper).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("efficiency")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("UFSSD_SHARED", REPO.parent / "shared"))
TH_MASK = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
STAGES = ("pre_ms", "net_ms", "decode_ms", "nms_ms", "total_ms")
FIELDS = ("label", "preset", "skip_masked_anchors", "mask_threshold", "images", "repeats", *STAGES, "total_min_ms", "total_max_ms",
          "above_001", "to_nms", *(f"kept_l{l}" for l in range(6)), "easy", "medium", "hard", "threads", "machine",
          "load", "utc", "note")


class StageProbe:
    """Times NMS and records what reaches it and the FFMM masks, around a ``FaceDetector``: NMS is
    wrapped where ``ufssd.inference.postprocess`` calls it, the network where the detector calls it."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.nms_s = 0.0
        self.candidates = 0
        self.outputs = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StageProbe]:
        import importlib

        # the module (``ufssd.inference.postprocess`` as an attribute is the function of that name)
        post = importlib.import_module("ufssd.inference.postprocess")

        real_nms, real_runner = post.nms, self.detector.runner

        def nms(boxes, scores, iou):
            t0 = time.perf_counter()
            kept = real_nms(boxes, scores, iou)
            self.nms_s += time.perf_counter() - t0
            self.candidates += int(scores.numel())
            return kept

        def runner(batch):
            out = real_runner(batch)
            self.outputs = out
            return out

        post.nms, self.detector.runner = nms, runner
        try:
            yield self
        finally:
            post.nms, self.detector.runner = real_nms, real_runner

    def reset(self) -> None:
        self.nms_s, self.candidates, self.outputs = 0.0, 0, None

    def above(self, threshold: float, keep=None) -> int:
        """Anchors of the last image with face score >= ``threshold`` (and ``keep``, when given)."""
        import math

        cls_logits = self.outputs[0][0].float()
        above = cls_logits[:, 1] - cls_logits[:, 0] >= math.log(threshold / (1 - threshold))
        return int((above & keep[0]).sum()) if keep is not None else int(above.sum())


def kept_shares(mask_logits, levels, image_size: tuple[int, int], strides, threshold: float) -> dict[int, float]:
    """Level -> share of the cells covering the image (not the padding) with ``M_face > Th_Mask``."""
    import torch

    h, w = image_size
    shares = {}
    for logits, level in zip(mask_logits, levels):
        s = strides[level]
        face = torch.softmax(logits.float(), dim=1)[0, 1, : -(-h // s), : -(-w // s)]
        shares[level] = float((face > threshold).float().mean())
    return shares


def with_mask_threshold(model, threshold: float):
    """A copy of ``model`` whose config (and FFMM modules) use Th_Mask = ``threshold``."""
    from ufssd.model import build_model
    from ufssd.presets import replace

    copy = build_model(replace(model.config, model={"mask_threshold": threshold}))
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def measure(model, arrays: dict[str, object], threads: int, skip: bool) -> tuple[dict, dict]:
    """One setting over every image: the row's timing/candidate/mask figures, and the detections
    (name -> (boxes, scores)) for scoring. The first image runs twice (warm-up); ``run`` passes
    over every image once before the first setting."""
    from ufssd.inference import FaceDetector

    detector = FaceDetector.from_model(model, num_threads=threads, skip_masked_anchors=skip)
    cfg, m = model.config, model.config.model
    probe = StageProbe(detector)
    sums = dict.fromkeys(STAGES, 0.0)
    sums["to_nms"], sums["above_001"], kept, dets = 0.0, 0.0, {l: [] for l in m.ffmm_levels}, {}
    with probe.installed():
        detector.detect(next(iter(arrays.values())), score_threshold=0.01)
        for name, image in arrays.items():
            probe.reset()
            t0 = time.perf_counter()
            result = detector.detect(image, score_threshold=0.01)
            total = time.perf_counter() - t0
            t = detector.last_timings
            for key, value in (("pre_ms", t["pre"]), ("net_ms", t["net"]), ("decode_ms", t["post"] - probe.nms_s),
                               ("nms_ms", probe.nms_s), ("total_ms", total)):
                sums[key] += 1e3 * value
            sums["to_nms"] += probe.candidates
            sums["above_001"] += probe.above(0.01, _keep(probe, cfg) if skip else None)
            shares = kept_shares(probe.outputs[2], m.ffmm_levels, result.input_size, cfg.anchors.strides,
                                 m.mask_threshold)
            for level, share in shares.items():
                kept[level].append(share)
            dets[name] = (result.boxes, result.scores)
    n = len(arrays)
    row = {k: f"{v / n:.2f}" for k, v in sums.items()}
    row.update({f"kept_l{l}": f"{statistics.fmean(v):.3f}" for l, v in kept.items()})
    return row, dets


def _keep(probe: StageProbe, cfg):
    """The anchors ``skip_masked_anchors`` keeps for the last image (the detector's own rule)."""
    from ufssd.geometry import feature_sizes
    from ufssd.inference.postprocess import masked_anchor_keep

    mask_logits = probe.outputs[2]
    level0 = cfg.model.ffmm_levels[0]
    hp = mask_logits[0].shape[-2] * cfg.anchors.strides[level0]
    wp = mask_logits[0].shape[-1] * cfg.anchors.strides[level0]
    sizes = feature_sizes(hp, wp, cfg.anchors.strides)
    return masked_anchor_keep(mask_logits, sizes, cfg.model.ffmm_levels, cfg.model.mask_threshold)


def score(dets: dict, gt_dir: Path, work: Path) -> dict[str, str]:
    """Dev APs (fractions) of the detections."""
    from ufssd.evaluation import evaluate, write_predictions

    for name, (boxes, scores) in dets.items():
        stem = name[: -len(".jpg")]
        write_predictions(work / f"{stem}.txt", Path(stem).name, boxes, scores)
    result = evaluate(work, gt_dir, subset=list(dets))
    return {s: f"{float(result.aps[s]):.6f}" for s in ("easy", "medium", "hard")}


def settings(model, th_mask: tuple[float, ...]) -> list[tuple[bool, float]]:
    """(skip_masked_anchors, Th_Mask) pairs to measure: without FFMM only the plain setting."""
    if not model.config.model.ffmm_levels:
        return [(False, model.config.model.mask_threshold)]
    return [(False, model.config.model.mask_threshold)] + [(True, t) for t in th_mask]


def run(weights: dict[str, str], arrays: dict, gt_dir: Path, threads: int, th_mask, work: Path,
        repeats: int = 1) -> list[dict]:
    """One row per (model, setting). Every setting passes over the images ``repeats`` times, the
    settings interleaved within each round (so drift in the machine's speed spreads over all of
    them); the times are the medians of the per-pass means (``total_min_ms`` / ``total_max_ms``:
    the fastest and slowest pass), the counts, mask shares and detections those of the first pass."""
    import tempfile

    import torch

    from ufssd.inference.bench import cpu_name
    from ufssd.inference.face_detector import default_weights_path
    from ufssd.model import load_weights

    torch.set_num_threads(threads)
    jobs = []  # (label, model, skip, Th_Mask)
    for label, path in weights.items():
        base = load_weights(default_weights_path() if path == "default" else Path(path).expanduser())
        for skip, threshold in settings(base, th_mask):
            model = base if threshold == base.config.model.mask_threshold else with_mask_threshold(base, threshold)
            jobs.append((label, model, skip, threshold))
    # an untimed pass first: every new input size makes oneDNN build its kernels once, which
    # otherwise lands on the first setting only (2.6x its time in a trial run)
    for model in dict.fromkeys(job[1] for job in jobs):
        measure(model, arrays, threads, False)
    passes, first_dets = [[] for _ in jobs], [None] * len(jobs)
    for _ in range(repeats):
        for i, (label, model, skip, threshold) in enumerate(jobs):
            row, dets = measure(model, arrays, threads, skip)
            passes[i].append(row)
            if first_dets[i] is None:
                first_dets[i] = dets
            logger.info("%s skip=%d Th_Mask=%g: %s ms", label, skip, threshold, row["total_ms"])
    rows = []
    for (label, model, skip, threshold), measured, dets in zip(jobs, passes, first_dets):
        row = dict(measured[0])
        row.update({k: f"{statistics.median(float(r[k]) for r in measured):.2f}" for k in STAGES})
        totals = [float(r["total_ms"]) for r in measured]
        row["total_min_ms"], row["total_max_ms"] = f"{min(totals):.1f}", f"{max(totals):.1f}"
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            aps = score(dets, gt_dir, Path(tmp))
        rows.append({"label": label, "preset": model.config.name, "skip_masked_anchors": int(skip),
                     "mask_threshold": threshold, "images": len(arrays), "repeats": repeats, **row, **aps,
                     "threads": threads, "machine": cpu_name(), "load": f"{os.getloadavg()[0]:.1f}",
                     "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        logger.info("%s skip=%d Th_Mask=%g: median %s ms, %s candidates >= 0.01, hard %s", label, skip, threshold,
                    row["total_ms"], row["above_001"], aps["hard"])
    return rows


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """The CSV after a run: the rows of every model measured now replace that model's old rows
    (by label), the other models' rows are kept, in their order."""
    labels = {r["label"] for r in new}
    return [r for r in old if r["label"] not in labels] + new


def read_csv(path: Path) -> list[dict[str, str]]:
    from ufssd.atomic import read_csv as read

    return read(path)


def write_csv(path: Path, rows: list[dict]) -> None:
    from ufssd.atomic import atomic_write_csv

    atomic_write_csv(path, rows, FIELDS)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", action="append", default=[], metavar="LABEL=PATH",
                   help="a model to measure (repeatable); PATH (or the whole argument) 'default' is the shipped model")
    p.add_argument("--data-root", type=Path, default=Path("~/widerface-all").expanduser())
    p.add_argument("--subset", type=Path, help="dev image list (default: DATA_ROOT/dev_images.txt)")
    p.add_argument("--gt", type=Path, default=SHARED / "data" / "widerface" / "eval_tools")
    p.add_argument("--every", type=int, default=5, help="every k-th image of the list (default 5: all events)")
    p.add_argument("--images", type=int, default=200, help="at most N images (default 200)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3,
                   help="passes over the images per setting, interleaved; times are their medians (default 3)")
    p.add_argument("--th-mask", type=float, nargs="+", default=list(TH_MASK), help="Th_Mask values to sweep")
    p.add_argument("--out", type=Path, default=Path("~/ufssd_runs/ablation").expanduser(),
                   help="work folder for the temporary predictions (default ~/ufssd_runs/ablation)")
    p.add_argument("--csv", type=Path, default=REPO / "docs" / "ablation_efficiency.csv",
                   help="the CSV written (default docs/ablation_efficiency.csv, which docs/ablation.md renders)")
    args = p.parse_args(argv)
    if not args.weights:
        p.error("give at least one --weights LABEL=PATH")

    weights = {w.partition("=")[0]: w.partition("=")[2] or w for w in args.weights}  # "default" alone too

    from ufssd.inference import load_image
    from ufssd.widerface_files import DEV_LIST, image_folder, read_image_list

    names = read_image_list(args.subset or args.data_root / DEV_LIST)[:: args.every][: args.images]
    arrays = {f"{n}.jpg": load_image(image_folder(args.data_root, "val") / f"{n}.jpg") for n in names}
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(weights, arrays, args.gt, args.threads, tuple(args.th_mask), args.out, args.repeats)
    write_csv(args.csv, merge_rows(read_csv(args.csv), rows))
    logger.info("wrote %s", args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
