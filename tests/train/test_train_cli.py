"""``ufssd train`` end to end in-process: sources, --set precedence, periodic evaluation, outputs."""

from __future__ import annotations

import csv
import json

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ufssd
from ufssd.cli import main
from ufssd.train.sources import default_sources, expand_source, read_training_samples

DEFAULT_WEIGHTS = Path(ufssd.__file__).resolve().parent / "weights" / "default.safetensors"

TRAIN_IMAGES = [
    "0--Parade/0_Parade_marchingband_1_1038.jpg",
    "1--Handshaking/1_Handshaking_Handshaking_1_234.jpg",
]


def test_default_sources_and_dev_guard(widerface_dir, tmp_path, caplog):
    specs = default_sources(widerface_dir)
    assert specs == [f"{widerface_dir}:train", f"{widerface_dir}:val:{widerface_dir / 'val_train_images.txt'}"]
    assert expand_source("val:x.txt", "/d") == "/d:val:x.txt"
    assert expand_source("/r:train", "/d") == "/r:train"
    with pytest.raises(ValueError, match="--data-root"):
        expand_source("train", None)
    # a val source without a list would include the dev slice: the guard drops it
    dev = (widerface_dir / "dev_images.txt").read_text().split()
    samples = read_training_samples([f"{widerface_dir}:val"])
    names = {s.name for s in samples}
    assert len(samples) == 462 - len(dev)
    assert not names & {d[: -len(".jpg")] for d in dev}
    assert any("dev slice" in r.getMessage() for r in caplog.records)


def test_cli_train_with_eval(widerface_dir, tmp_path):
    subset = tmp_path / "train.txt"
    subset.write_text("\n".join(TRAIN_IMAGES) + "\n")
    dev = (widerface_dir / "dev_images.txt").read_text().split()
    eval_list = tmp_path / "dev2.txt"
    eval_list.write_text("\n".join(dev[:2]) + "\n")
    out = tmp_path / "run"
    args = [
        # from the shipped weights at a small lr, so that the evaluations give real APs
        "train", "--preset", "ufssd_light_ffmm_x1", "--init", str(DEFAULT_WEIGHTS), "--lr", "0.001",
        "--data-root", str(widerface_dir), "--source", f"train:{subset}", "--iters", "2", "--batch-size", "2",
        "--set", "train.resolution=256", "--resolution", "128",  # the flag wins over --set
        "--set", "train.photometric=false", "--set", "train.iters=99",
        "--workers", "0", "--threads", "1", "--out", str(out), "--no-progress", "--log-every", "1",
        "--eval-every", "1", "--eval-subset", str(eval_list),
    ]  # fmt: skip
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["resolution"] == 128 and cfg["train"]["iters"] == 2
    assert cfg["train"]["photometric"] is False
    for name in ("last.pt", "best.pt", "final.safetensors", "train_log.csv", "eval_history.csv"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir())
    assert not (out / "eval_tmp").exists()
    with open(out / "eval_history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"]
    # the periodic evaluation gives the APs that predict-widerface + evaluate give for the same
    # weights (step 2's are final.safetensors): same input policy, threshold, NMS and protocol
    from ufssd.evaluation import evaluate

    pred = tmp_path / "pred"
    assert main(["predict-widerface", "--data-root", str(widerface_dir), "--subset", str(eval_list),
                 "--out", str(pred), "--weights", str(out / "final.safetensors"), "--no-progress"]) == 0  # fmt: skip
    aps = evaluate(pred, widerface_dir / "eval_tools", subset=dev[:2]).aps
    assert aps["hard"] > 0.1, aps  # real APs, not those of random weights
    for key in ("easy", "medium", "hard"):
        assert rows[1][key] == ("nan" if aps[key] != aps[key] else f"{aps[key]:.6g}"), (key, rows[1], aps)
    best_step = max(rows, key=lambda r: float(r["hard"]))["step"]
    assert int(best_step) == torch.load(out / "best.pt", weights_only=True)["step"]
    with open(out / "train_log.csv") as f:
        log = list(csv.DictReader(f))
    assert [r["step"] for r in log] == ["1", "2"]
    assert set(log[0]) >= {"lr", "loss", "cls", "loc", "mask", "images_per_s"}
    # an existing run is not overwritten without --resume; with it, a finished run just ends
    assert main(args) == 2
    assert main([*args, "--resume"]) == 0


def test_cli_init_from_weights(widerface_dir, tmp_path):
    subset = tmp_path / "train.txt"
    subset.write_text("\n".join(TRAIN_IMAGES) + "\n")
    # lr 0: the step leaves the parameters as they started (only BatchNorm statistics move)
    common = ["train", "--preset", "ufssd_light_ffmm_x1", "--source", f"{widerface_dir}:train:{subset}", "--iters", "1",
              "--batch-size", "2", "--resolution", "128", "--lr", "0", "--workers", "0", "--no-progress",
              "--no-tensorboard"]  # fmt: skip
    parameters = [n for n, _ in ufssd.build_model("ufssd_light_ffmm_x1").named_parameters()]
    shipped = load_file(DEFAULT_WEIGHTS)
    assert main([*common, "--out", str(tmp_path / "b"), "--init", str(DEFAULT_WEIGHTS)]) == 0
    started = load_file(tmp_path / "b" / "final.safetensors")
    not_loaded = [n for n in parameters if not torch.equal(started[n], shipped[n])]
    assert not not_loaded, f"--init left {len(not_loaded)} of {len(parameters)} parameters unloaded: {not_loaded[:5]}"
    # without --init the same run starts from other weights (so the equality above is no accident)
    assert main([*common, "--out", str(tmp_path / "c")]) == 0
    fresh = load_file(tmp_path / "c" / "final.safetensors")
    assert sum(torch.equal(fresh[n], shipped[n]) for n in parameters) < len(parameters) // 4
    assert main([*common, "--out", str(tmp_path / "d"), "--init", str(tmp_path / "missing.safetensors")]) == 2


def test_cli_errors(tmp_path, capsys):
    assert main(["train", "--preset", "ufssd_light", "--out", str(tmp_path)]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert main(["train", "--preset", "nope", "--data-root", str(tmp_path)]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["train", "--preset", "ufssd_light", "--data-root", str(tmp_path), "--set", "train.x=1"]) == 2
    assert "unknown field" in capsys.readouterr().err
    assert main(["train", "--preset", "ufssd_light", "--data-root", str(tmp_path), "--set", "loss.box_loss=iou2"]) == 2
    assert "unknown box loss 'iou2'" in capsys.readouterr().err


def test_cli_eval_on_the_val_split_needs_the_data_root(tmp_path, capsys):
    # the training images come from --source, so nothing else asks for --data-root
    args = ["train", "--preset", "ufssd_light", "--source", f"{tmp_path}:train", "--eval-subset", "val",
            "--eval-images", str(tmp_path), "--eval-gt", str(tmp_path), "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert "--eval-subset val needs --data-root" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
