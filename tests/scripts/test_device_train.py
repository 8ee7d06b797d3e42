"""scripts/device_train.py end to end on the CPU: a tiny pack, the calls that carry it, the check of
what arrived, and the training call with a tiny budget that brings the results back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

NAMES = [
    "0--Parade/0_Parade_marchingband_1_1038",
    "1--Handshaking/1_Handshaking_Handshaking_1_234",
    "13--Interview/13_Interview_Interview_On_Location_13_536",
    "20--Family_Group/20_Family_Group_Family_Group_20_1001",
]


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("device_train")


@pytest.fixture(scope="module")
def pack(widerface_dir, tmp_path_factory) -> Path:
    from ufssd.data import read_split
    from ufssd.data.pack import write_pack

    out = tmp_path_factory.mktemp("pack") / "pack"
    write_pack(read_split(widerface_dir, "train", subset=NAMES), out, max_side=256, quality=75, shard_mib=0.02)
    return out


def test_plan_carries_every_shard_once_and_the_manifest_last(script, pack, capsys) -> None:
    from ufssd.data.pack import read_manifest

    calls = script.plan_calls(pack, call_mib=0.025, tree_mib=0.0)
    carried = [p.name for call in calls for p in call]
    assert carried == [s.file for s in read_manifest(pack).shards] + ["manifest.json"]
    assert len(calls) > 1 and all(len(c) <= 8 for c in calls)
    script.main(["plan", "--pack", str(pack), "--budget", "300", "--call-mib", "0.025", "--tree-mib", "0",
                 "--", "--init", "w.safetensors"])  # fmt: skip
    text = capsys.readouterr().out
    assert "receive --pack" in text and "train --pack" in text and "--budget 300.0" in text and "--init w.safetensors" in text


def test_receive_names_a_broken_or_missing_shard(script, pack, tmp_path, capsys) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(pack, copy)
    assert script.main(["receive", "--pack", str(copy)]) == 0
    shard = sorted(copy.glob("shard-*.bin"))[1]
    shard.write_bytes(shard.read_bytes()[:-10])  # a transfer that broke off
    (sorted(copy.glob("shard-*.bin"))[0]).unlink()
    assert script.main(["receive", "--pack", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"{shard.name}: differs" in out and "shard-000.bin: missing" in out


def test_train_within_a_tiny_budget_brings_the_results_back(script, pack, tmp_path) -> None:
    out, run_dir = tmp_path / "out", tmp_path / "run"
    code = script.main(["train", "--pack", str(pack), "--device", "cpu", "--budget", "12", "--out", str(out),
                        "--run-dir", str(run_dir), "--", "--resolution", "128", "--batch-size", "2",
                        "--probe-steps", "20", "--threads", "1", "--warmup", "2"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] > 20 and summary["images_seen"] == 2 * summary["steps"]
    # the budget holds roughly (a busy 2-core machine changes the speed after the probe)
    assert summary["exit_code"] == 0 and summary["train_loop_s"] < 12 * 3
    for name in ("final.safetensors", "train_log.csv", "config.json", "last.pt", "train_console.log"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["train"]["iters"] == summary["steps"]
    assert "time budget 12 s" in (out / "train_console.log").read_text()


def test_train_refuses_a_pack_that_does_not_match(script, pack, tmp_path) -> None:
    from ufssd.data.pack import PackError

    copy = tmp_path / "copy"
    shutil.copytree(pack, copy)
    sorted(copy.glob("shard-*.bin"))[-1].unlink()
    with pytest.raises(PackError, match="missing"):
        script.main(["train", "--pack", str(copy), "--device", "cpu", "--out", str(tmp_path / "out")])


def test_compare_trains_each_candidate_at_the_same_budget(script, pack, tmp_path, monkeypatch) -> None:
    import ufssd.data.pack

    decoded = []
    load_pack = ufssd.data.pack.load_pack
    monkeypatch.setattr(ufssd.data.pack, "load_pack", lambda *a, **k: decoded.append(1) or load_pack(*a, **k))
    out = tmp_path / "out"
    code = script.main(["compare", "--pack", str(pack), "--device", "cpu", "--budget", "6", "--out", str(out),
                        "--run-dir", str(tmp_path / "runs"),
                        "--candidate", "plain=--preset ufssd_light", "--candidate", "x1=--preset ufssd_light_ffmm_x1",
                        "--", "--resolution", "128", "--batch-size", "2", "--probe-steps", "4", "--threads", "1",
                        "--warmup", "2"])  # fmt: skip
    assert code == 0
    results = json.loads((out / "compare.json").read_text())
    assert set(results) == {"plain", "x1"}
    for name, summary in results.items():
        assert (out / f"{name}.safetensors").is_file() and summary["steps"] > 4
        assert summary["train_args"][summary["train_args"].index("--preset", 2) + 1] == (
            "ufssd_light" if name == "plain" else "ufssd_light_ffmm_x1"
        )
    assert len(decoded) == 1  # one pool for both candidates
    assert "time budget 6 s" in (tmp_path / "runs" / "x1.log").read_text()
    with pytest.raises(SystemExit, match="NAME=ARGS"):
        script.main(["compare", "--pack", str(pack), "--device", "cpu", "--out", str(out), "--candidate", "bad"])
