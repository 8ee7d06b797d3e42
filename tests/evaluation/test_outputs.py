"""The command line, JSON, plots, MAT files, subsets, and import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.io import loadmat

from ufssd.cli import main
from ufssd.evaluation import SubsetError, evaluate, read_subset, save_pr_mat

from .conftest import write_pred

IMAGES = [
    {
        "event": "0--E",
        "stem": "a",
        "boxes": [[10, 10, 20, 20], [60, 10, 20, 20]],
        "counted": {"easy": [0], "medium": [0, 1], "hard": [0, 1]},
    },
    {
        "event": "1--F",
        "stem": "b",
        "boxes": [[10, 10, 30, 30]],
        "counted": {"easy": [], "medium": [], "hard": [0]},
    },
]


@pytest.fixture
def case(gt_factory, pred_dir, tmp_path):
    gt = gt_factory(IMAGES)
    write_pred(pred_dir, "0--E", "a", [[10, 10, 20, 20, 0.9], [200, 200, 9, 9, 0.2]])
    write_pred(pred_dir, "1--F", "b", [[10, 10, 30, 30, 0.95]])  # top score, ignored in easy
    return gt, pred_dir


def test_cli_prints_one_line_per_setting_and_writes_outputs(case, tmp_path, capsys):
    gt, pred = case
    other = tmp_path / "other"
    write_pred(other, "0--E", "a", [[60, 10, 20, 20, 0.7], [10, 10, 20, 20, 0.1]])
    out = tmp_path / "out"
    rc = main(
        [
            "evaluate",
            str(pred),
            "--gt",
            str(gt),
            "--name",
            "ours",
            "--json",
            str(out / "r.json"),
            "--plot",
            str(out / "pr.png"),
            "--save-mat",
            str(out / "mat"),
            "--compare",
            f"other={other}",
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ours (") and lines[4].startswith("other (")
    assert lines[1].split()[:3] == ["easy", "AP", "1.0000"]
    assert "2 images, 1 faces, 0 missing, 0 invalid" in lines[1]
    data = json.loads((out / "r.json").read_text())
    assert (
        data["name"] == "ours"
        and data["images"] == 2
        and data["missing"] == 0
        and data["invalid"] == 0
    )
    assert (
        data["easy"]["ap"] == 1.0
        and len(data["hard"]["precision"]) == 1000
        and len(data["hard"]["recall"]) == 1000
    )
    # easy at 0.999: only the detection of a face ignored in easy passes: 0/0 = NaN -> null
    assert data["easy"]["precision"][0] is None and data["hard"]["precision"][0] == 1.0
    assert data["compare"]["other"]["missing"] == 1
    assert (out / "pr.png").stat().st_size > 10_000
    mat = loadmat(out / "mat" / "ours" / "wider_pr_info_ours_hard_val.mat")
    assert mat["pr_cruve"].shape == (1000, 2) and str(mat["legend_name"][0]) == "ours"
    assert (out / "mat" / "other" / "wider_pr_info_other_easy_val.mat").is_file()


def test_cli_strict_fails_naming_file_and_line(case, capsys):
    gt, pred = case
    write_pred(pred, "1--F", "b", [[10, 10, 30, 30, 0.8]], count=2)
    assert main(["evaluate", str(pred), "--gt", str(gt)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(pred), "--gt", str(gt), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "b.txt, line 4" in err and "count says 2" in err


def test_cli_errors_are_one_line_and_exit_2(case, tmp_path, capsys):
    gt, pred = case
    assert main(["evaluate", str(tmp_path / "nope"), "--gt", str(gt)]) == 2
    assert main(["evaluate", str(pred), "--gt", str(tmp_path / "nogt")]) == 2
    assert main(["evaluate", str(pred), "--gt", str(gt), "--compare", "bad"]) == 2
    (tmp_path / "list.txt").write_text("0--E/a.jpg\n9--X/zzz.jpg\n")
    assert (
        main(["evaluate", str(pred), "--gt", str(gt), "--subset", str(tmp_path / "list.txt")]) == 2
    )
    err = capsys.readouterr().err
    assert "list.txt, line 2" in err and "'9--X/zzz.jpg'" in err
    assert all(line.startswith("ufssd evaluate: error:") for line in err.strip().splitlines())


def test_subset_accepts_names_stems_and_comments(case, tmp_path):
    gt, pred = case
    (tmp_path / "s.txt").write_text("# a comment\n\n1--F/b\n")
    res = evaluate(pred, gt, subset=tmp_path / "s.txt")
    assert res.images == 1 and res["hard"].faces == 1 and res["easy"].faces == 0
    assert np.isnan(res["easy"].ap)  # no counted face: recall 0/0, as in MATLAB
    assert evaluate(pred, gt, subset=["a.jpg", "0--E/a.jpg"]).images == 1
    assert [e for _, _, e in read_subset(["x", " ", "y # c"])] == ["x", "y"]
    with pytest.raises(SubsetError, match="line 1"):
        evaluate(pred, gt, subset=["0--E/zzz.jpg"])


def test_save_mat_rejects_names_that_cannot_be_file_names(case, tmp_path):
    gt, pred = case
    with pytest.raises(ValueError, match="method name"):
        save_pr_mat(tmp_path, "a/b", evaluate(pred, gt))


def test_import_never_loads_torch_or_matplotlib():
    code = (
        "import sys, ufssd.evaluation, ufssd.cli.evaluate;"
        "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
