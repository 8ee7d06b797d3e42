"""``ufssd train``: train a preset on WIDER FACE (one process, or ``torchrun`` for several).

Argument parsing only; the work is :func:`ufssd.train.train`. See ``docs/training.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ufssd.cli import CLIError
# the run's choices, from their one home (torch-free: importing it imports no trainer and no torch)
from ufssd.train.run_config import AMP_MODES, EVAL_METRICS, TARGET_PLACES, WORKER_STARTS

if TYPE_CHECKING:
    from ufssd.config import DetectorConfig
    from ufssd.train import EvalSpec, RunConfig

logger = logging.getLogger(__name__)

_EPILOG = """\
sources: without --source, trains on DATA_ROOT:train (restricted to --subset) plus, when
DATA_ROOT/val_train_images.txt exists, DATA_ROOT:val:DATA_ROOT/val_train_images.txt.
--source SPEC (repeatable) replaces that: SPEC is ROOT:SPLIT[:LIST] or SPLIT[:LIST] (under
--data-root), SPLIT train or val, LIST a file of <event>/<name>.jpg lines. Images of
DATA_ROOT/dev_images.txt and of --eval-subset never train.

examples:
  ufssd train --preset ufssd_light_ffmm_x1 --data-root ../shared/data/widerface \\
      --out ~/runs/light --iters 20000 --batch-size 16 --resume \\
      --eval-every 2000 --eval-subset ../shared/data/widerface/dev_images.txt
  ufssd train --preset ufssd_light_ffmm_x1 --data-device cuda --pack .device_data/pack \\
      --batch-size 256 --out runs/gpu --resume          # images, augmentation, targets on the GPU
  torchrun --nproc_per_node=8 -m ufssd train --preset ufssd_vgg16_ffmm_x1 \\
      --data-root /data/widerface --out /runs/vgg_x1 --resume
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a detector (SGD, checkpoints, resume, torchrun)",
        description="Train a UF-SSD preset on WIDER FACE with the paper's recipe (docs/training.md).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_and_data(p.add_argument_group("model and data"))
    _add_schedule(p.add_argument_group("schedule (defaults from the preset; flags win over --set)"))
    _add_run(p.add_argument_group("run"))
    _add_evaluation(p.add_argument_group("periodic evaluation (rank 0)"))
    p.set_defaults(func=run)


def _add_model_and_data(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--preset", required=True, help="preset name (ufssd.list_presets())")
    g.add_argument("--data-root", metavar="DIR", help="WIDER FACE root (WIDER_train/, WIDER_val/, wider_face_split/)")
    g.add_argument("--source", action="append", default=[], metavar="SPEC",
                   help="training source ROOT:SPLIT[:LIST] or SPLIT[:LIST] (repeatable; replaces the default)")
    g.add_argument("--subset", metavar="LIST", help="restrict the default train source to this image list")
    g.add_argument("--init", metavar="WEIGHTS", help="start from these weights (.safetensors or .pt checkpoint)")
    g.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set train.crop_min=0.5 --set model.channels=[16,32,64]")
    g.add_argument("--no-augment", action="store_true",
                   help="no augmentation: each whole image fitted into the square input (debugging, overfit tests)")


def _add_schedule(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--iters", type=int, help="optimizer steps (milestones scale with it)")
    g.add_argument("--batch-size", type=int, help="total batch over all processes")
    g.add_argument("--lr", type=float, help="learning rate at the base batch size (32); scaled linearly")
    g.add_argument("--warmup", type=int, help="linear warm-up steps (not clipped; default: the preset's, "
                   "clipped to 5%% of the run)")
    g.add_argument("--resolution", type=int, help="square training input side")
    g.add_argument("--seed", type=int, help="seed of the model init, the data order and the augmentation")
    g.add_argument("--amp", choices=AMP_MODES, help="CUDA mixed precision (default bf16)")
    g.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the gradient norm")


def _add_run(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--out", metavar="DIR",
                   help="output folder: checkpoints, logs, final.safetensors (default: runs/PRESET; "
                   "long runs belong outside the work tree)")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.pt if it exists (else start afresh)")
    g.add_argument("--checkpoint-every", type=int, metavar="N", help="steps between checkpoints")
    g.add_argument("--workers", type=int, default=2, help="DataLoader workers per process (default 2)")
    g.add_argument("--targets", choices=TARGET_PLACES, default="workers",
                   help="build matching targets / GT masks in the loader workers (default) or the main process")
    g.add_argument("--worker-start", choices=WORKER_STARTS,
                   help="how loader workers start (default forkserver on Linux: fork can deadlock in OpenCV)")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda:LOCAL_RANK when available)")
    g.add_argument("--threads", type=int, help="torch CPU threads per process")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm in multi-GPU runs")
    g.add_argument("--deterministic", action="store_true", help="deterministic CUDA kernels (slower)")
    g.add_argument("--log-every", type=int, default=20, metavar="N", help="steps between log rows (default 20)")
    g.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    g.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard events")
    g.add_argument("--stop-at", type=int, metavar="STEP", help="stop after this step (checkpointed), resumable")
    g.add_argument("--data-device", metavar="DEVICE",
                   help="keep the images on the training device (cuda, cuda:N or cpu) and augment and target "
                   "whole batches there instead of in loader workers (docs/data.md)")
    g.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="train about this long: a speed probe, then --iters sized to the time left, the "
                   "whole schedule (milestones, warm-up clip) following it")
    g.add_argument("--probe-steps", type=int, default=50, metavar="N",
                   help="steps of the --time-budget speed probe (default 50; speed from its second half)")
    g.add_argument("--pack", metavar="DIR",
                   help="with --data-device: train on this pack (scripts/pack_device_data.py) instead of "
                   "--data-root/--source")


def _add_evaluation(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="evaluate every N steps and at the end (0: only at the end if --eval-subset is given)")
    g.add_argument("--eval-subset", metavar="LIST",
                   help="val images to evaluate on, or 'val' for the whole val split (default with --eval-every: "
                   "DATA_ROOT/dev_images.txt if it exists, else the whole val split)")
    g.add_argument("--eval-gt", metavar="DIR", help="folder of wider_*_val.mat (default: DATA_ROOT/eval_tools)")
    g.add_argument("--eval-images", metavar="DIR", help="val image folder (default: DATA_ROOT/WIDER_val/images)")
    g.add_argument("--eval-metric", choices=EVAL_METRICS, default="hard",
                   help="AP that selects best.pt (default hard)")


def run(args: argparse.Namespace) -> int:
    if "torch" not in sys.modules:
        # OpenMP threads that spin while waiting make CPU training ~10x slower on a busy machine
        # (2 shared cores: 5.0 s vs 0.45 s per light step at 640); sleeping costs little when idle
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch

        from ufssd.data import DataError
        from ufssd.model import WeightFileError
        from ufssd.train import CheckpointError, TrainingError, read_training_samples, train
    except ImportError as exc:  # pragma: no cover - an incomplete install
        raise CLIError(f"training needs torch and the full package: {exc}") from exc

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _config(args)
    data_root = Path(args.data_root) if args.data_root else None
    if args.pack and not args.data_device:
        raise CLIError("--pack needs --data-device (the pack is read by the device data path)")
    specs = [] if args.pack else _sources(args, data_root)
    out_dir = Path(args.out).expanduser() if args.out else Path("runs") / args.preset
    try:
        eval_spec = _eval_spec(args, data_root)
        exclude = [eval_spec.image_root / f"{n}.jpg" for n in eval_spec.names] if eval_spec else []
        samples = read_training_samples(specs, exclude_images=exclude) if specs else []
        if args.pack and eval_spec is not None:
            _check_pack_excludes(Path(args.pack), eval_spec.names)
        result = train(cfg, samples, out_dir, _run_config(args, eval_spec))
    except (DataError, TrainingError, CheckpointError, WeightFileError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    logger.debug("stopped at step %d (finished: %s)", result.step, result.finished)
    return 0


def _check_pack_excludes(pack: Path, eval_names: Sequence[str]) -> None:
    """Refuse a pack that holds an image the periodic evaluation scores."""
    from ufssd.data.pack import read_manifest

    shared = sorted(set(read_manifest(pack).names) & set(eval_names))
    if shared:
        raise CLIError(
            f"{pack} holds {len(shared)} image(s) of the evaluation set (e.g. {shared[0]}): "
            "pack without them or evaluate on another list"
        )


def _config(args: argparse.Namespace) -> DetectorConfig:
    """The preset, then ``--set``, then the dedicated flags (which win)."""
    from ufssd.presets import get_preset, replace
    from ufssd.train.overrides import apply_overrides

    try:
        cfg = apply_overrides(get_preset(args.preset), args.overrides)
    except (KeyError, ValueError, TypeError) as exc:
        raise CLIError(str(exc).strip("'\"")) from exc
    flags = {
        "iters": args.iters,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_iters": args.warmup,
        "resolution": args.resolution,
        "seed": args.seed,
        "amp": args.amp,
        "checkpoint_every": args.checkpoint_every,
    }
    train_changes = {k: v for k, v in flags.items() if v is not None}
    if train_changes:
        cfg = replace(cfg, train=train_changes)
    if args.no_augment:
        size = cfg.train.resolution
        logger.info("--no-augment: whole images fitted into %dx%d, no crop/flip/photometric", size, size)
    return cfg


def _sources(args: argparse.Namespace, data_root: Path | None) -> list[str]:
    """The training sources: ``--source`` specs, else the defaults under ``--data-root``."""
    from ufssd.train import default_sources, expand_source

    if args.source:
        if args.subset:
            raise CLIError("--subset applies to the default sources; with --source write ROOT:SPLIT:LIST")
        return [expand_source(s, data_root) for s in args.source]
    if data_root is not None:
        return default_sources(data_root, args.subset)
    raise CLIError("give --data-root DIR or at least one --source ROOT:SPLIT[:LIST]")


def _eval_spec(args: argparse.Namespace, data_root: Path | None) -> EvalSpec | None:
    """The periodic evaluation that ``--eval-*`` ask for (the dev slice by default), or None."""
    from ufssd.data import read_image_list, read_split
    from ufssd.train import EvalSpec
    from ufssd.widerface_files import DEV_LIST, ground_truth_folder, image_folder

    eval_subset = args.eval_subset
    if args.eval_every and not eval_subset:
        if data_root is None:
            raise CLIError("--eval-every needs --eval-subset LIST or --data-root")
        # the shared subset's dev slice, else (a full WIDER FACE download) the whole val split
        eval_subset = str(data_root / DEV_LIST) if (data_root / DEV_LIST).is_file() else "val"
    if not eval_subset:
        return None
    if eval_subset == "val" and not Path(eval_subset).exists():
        if data_root is None:
            raise CLIError("--eval-subset val needs --data-root (the val split is read from DATA_ROOT)")
        names = tuple(s.name for s in read_split(data_root, "val"))
        logger.info("periodic evaluation on the whole val split (%d images)", len(names))
    else:
        names = tuple(read_image_list(eval_subset))
    image_root = Path(args.eval_images) if args.eval_images else (image_folder(data_root, "val") if data_root else None)
    gt_dir = Path(args.eval_gt) if args.eval_gt else (ground_truth_folder(data_root) if data_root else None)
    if image_root is None or gt_dir is None:
        raise CLIError("evaluation needs --data-root or both --eval-images and --eval-gt")
    return EvalSpec(image_root, names, gt_dir, every=max(args.eval_every, 0), metric=args.eval_metric)


def _run_config(args: argparse.Namespace, eval_spec: EvalSpec | None) -> RunConfig:
    """The run's knobs from the flags (a warm-up given explicitly is not clipped)."""
    from ufssd.train import RunConfig
    from ufssd.train.schedule import DEFAULT_WARMUP_MAX_FRACTION

    explicit_warmup = args.warmup is not None or any(
        o.split("=", 1)[0].strip() == "train.warmup_iters" for o in args.overrides
    )
    return RunConfig(
        resume=args.resume,
        init=args.init,
        workers=args.workers,
        device=args.device,
        eval_spec=eval_spec,
        log_every=args.log_every,
        progress=not args.no_progress,
        targets=args.targets,
        augment=not args.no_augment,
        warmup_max_fraction=None if explicit_warmup else DEFAULT_WARMUP_MAX_FRACTION,
        grad_clip=args.grad_clip,
        sync_bn=args.sync_bn,
        deterministic=args.deterministic,
        stop_at=args.stop_at,
        tensorboard=not args.no_tensorboard,
        data_device=args.data_device,
        pack=args.pack,
        time_budget_s=args.time_budget,
        probe_steps=args.probe_steps,
        **({"worker_start": args.worker_start} if args.worker_start else {}),
    )
