"""Cost of candidate networks (issue 17, the v4 candidates): parameters, conv MACs by level and
end-to-end latency, each measured the way ``ufssd bench`` measures it.

For each preset (``default`` = the shipped weights):

- parameters;
- multiply-accumulates of every convolution at the padded input of ``--size`` (640x480 is padded
  to 640x512), split by the level whose resolution the convolution writes (``stem``: stride 2;
  ``L0``..``L5``: strides 4..128; heads and FFMM count at their level). Element-wise adds,
  upsampling and BatchNorm (folded at export) are not counted; on CPU the depthwise convs cost
  more time than their MACs say (they are memory-bound);
- the end-to-end latency of :func:`ufssd.inference.bench.run_bench` (what ``ufssd bench`` runs:
  ``FaceDetector.detect`` on the bench photo, pre-processing + network + post-processing, batch
  1) on ``--backend`` with ``--threads`` threads, in ``--rounds`` interleaved rounds (every preset
  once per round, so the drift of a shared machine reaches all alike); each round gives the
  median of ``--repeats`` runs, and the table shows the median over rounds, each round's, the
  fastest single run, and the difference of medians to the first preset;
- the network alone on onnxruntime (``--net-runs`` calls of each exported graph's session on the
  padded bench photo, interleaved call by call across the presets, so that slow phases of the
  machine are shared): median ms and the difference to the first preset. Pre- and
  post-processing are the same for every candidate (same input, same anchors), so this is where
  they differ, measured with less noise than end to end.

A preset's random weights give the same network cost as trained ones; post-processing may differ
(a random network has almost no score above its threshold), which the ``default`` row (trained)
against ``ufssd_light_ffmm_x1`` (the same network, random) shows.

    python benchmarks/bench_candidates.py --presets default ufssd_light_ffmm_x1 ufssd_light_v4_wide \\
        ufssd_light_v4_deep ufssd_light_v4_fpn ufssd_light_v4_pan ufssd_light_v4_pan_deep --rounds 3 --net-runs 300
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import time

import torch
from torch import nn

from ufssd.inference.bench import machine_info, parse_sizes, run_bench
from ufssd.presets import get_preset

BASE = "ufssd_light_ffmm_x1"  # the preset whose fields "what changes" is relative to
LEVEL_NAMES = ("stem", "L0", "L1", "L2", "L3", "L4", "L5")


def conv_macs_by_level(model: nn.Module, height: int, width: int) -> dict[str, int]:
    """MACs of every convolution in one forward pass of a (1, 3, height, width) input, by the
    stride of its output (stride 2 = ``stem``, 4 = ``L0`` ... 128 = ``L5``). A ``LevelHead`` runs
    its class and box convs as one ``F.conv2d`` (no module call), so it is counted as a whole."""
    from ufssd.model.heads import LevelHead

    macs = dict.fromkeys(LEVEL_NAMES, 0)

    def add(out_height: int, count: int) -> None:
        level = int(round(math.log2(height / out_height))) - 1  # stride 2 -> 0 (stem)
        macs[LEVEL_NAMES[level]] += count

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        kh, kw = module.kernel_size
        add(output.shape[-2], output[0].numel() * module.in_channels // module.groups * kh * kw)

    def head_hook(module: LevelHead, inputs, _output) -> None:
        x = inputs[0]
        outputs = module.cls.out_channels + module.box.out_channels
        kh, kw = module.cls.kernel_size
        add(x.shape[-2], x[0].numel() * kh * kw * outputs)

    handles = [
        m.register_forward_hook(head_hook if isinstance(m, LevelHead) else conv_hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, LevelHead))
    ]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, height, width))
    finally:
        for h in handles:
            h.remove()
    return macs


def what_changes(name: str, model: nn.Module) -> str:
    """The model fields that differ from :data:`BASE`'s, as ``field=value``."""
    if name == "default":
        return "shipped weights"
    base, own = get_preset(BASE).model, model.config.model
    diff = [f"{f.name}={getattr(own, f.name)}" for f in dataclasses.fields(own)
            if getattr(own, f.name) != getattr(base, f.name)]  # fmt: skip
    return ", ".join(diff).replace(" ", "") if diff else "(the default network)"


def load(name: str) -> nn.Module:
    """The network ``ufssd bench`` times for ``--preset name`` (random weights), or with no
    ``--weights``/``--preset`` for ``default`` (the shipped model)."""
    from ufssd.inference.loading import load_model

    return load_model(None, None if name == "default" else name)


def time_networks(models: dict[str, nn.Module], width: int, height: int, threads: int, runs: int) -> dict[str, float]:
    """Median ms of one onnxruntime call per model, the calls interleaved across the models."""
    import numpy as np

    from ufssd.inference.bench import bench_image
    from ufssd.inference.export import export_onnx
    from ufssd.inference.onnx_backend import ONNX_INPUT, create_session
    from ufssd.model import normalize, pad_to_multiple

    image = torch.from_numpy(bench_image(width, height)).permute(2, 0, 1)[None]
    sessions = {}
    for name, model in models.items():
        x = pad_to_multiple(normalize(image, model.config.model), model.config.anchors.pad_multiple)
        sessions[name] = (create_session(export_onnx(model, check=False).data, num_threads=threads), x.numpy())
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(runs + 3):  # 3 warm-up calls each
        for name, (session, x) in sessions.items():
            t0 = time.perf_counter()
            session.run(None, {ONNX_INPUT: np.ascontiguousarray(x)})
            if i >= 3:
                times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", required=True, help="preset names; 'default' = the shipped weights")
    parser.add_argument("--size", default="640x480", help="WxH (default 640x480)")
    parser.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per round (default 30)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved end-to-end rounds (default 3; 0: none)")
    parser.add_argument("--net-runs", type=int, default=300, help="interleaved network-only calls (default 300; 0: none)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    (width, height), = parse_sizes(args.size)
    pad = lambda v: -(-v // 128) * 128  # noqa: E731
    models = {name: load(name) for name in args.presets}
    medians: dict[str, list[float]] = {name: [] for name in models}
    minima: dict[str, list[float]] = {name: [] for name in models}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, model in models.items():
            (row,) = run_bench(model, [(width, height)], [args.backend], [1], threads=args.threads,
                               warmup=args.warmup, repeats=args.repeats)  # fmt: skip
            medians[name].append(row.median_ms)
            minima[name].append(row.min_ms)
    net = time_networks(models, width, height, args.threads, args.net_runs) if args.net_runs else {}
    load_after = os.getloadavg()

    info = machine_info(args.threads)
    print(f"{info['cpu']} ({info['usable_cpus']} usable CPUs), {args.threads} threads, {args.backend} "
          f"{info['onnxruntime']}, torch {info['torch']}; end to end {args.rounds} rounds x {args.repeats} runs, "
          f"network {args.net_runs} interleaved calls; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")  # fmt: skip
    print()
    ref = statistics.median(medians[args.presets[0]]) if args.rounds else float("nan")
    print(f"| preset | what changes | params | GMACs ({pad(width)}x{pad(height)}) | "
          + " | ".join(f"{n} M" for n in LEVEL_NAMES)
          + f" | {width}x{height} ms: median (each round's) | min | vs {args.presets[0]} | net ms | vs |")  # fmt: skip
    print("|---" * (9 + len(LEVEL_NAMES)) + "|")
    for name, model in models.items():
        macs = conv_macs_by_level(model, pad(height), pad(width))
        params = sum(p.numel() for p in model.parameters())
        if medians[name]:
            med = statistics.median(medians[name])
            rounds = ", ".join(f"{m:.1f}" for m in medians[name])
            timing = f"{med:.1f} ({rounds}) | {min(minima[name]):.1f} | {med - ref:+.1f}"
        else:
            timing = "- | - | -"
        first = net.get(args.presets[0], float("nan"))
        timing += f" | {net[name]:.2f} | {net[name] - first:+.2f}" if name in net else " | - | -"
        print(f"| `{name}` | {what_changes(name, model)} | {params:,} | {sum(macs.values()) / 1e9:.3f} | "
              + " | ".join(f"{v / 1e6:.1f}" for v in macs.values()) + f" | {timing} |")  # fmt: skip


if __name__ == "__main__":
    main()
