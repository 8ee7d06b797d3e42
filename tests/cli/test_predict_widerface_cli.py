"""``ufssd predict-widerface``: the evaluator's format for every listed image, input policy printed."""

from __future__ import annotations

import numpy as np

from ufssd.cli import main


def test_predict_widerface_writes_every_file(widerface_dir, tmp_path, capsys):
    names = (widerface_dir / "dev_images.txt").read_text().split()[:2]
    subset = tmp_path / "subset.txt"
    subset.write_text("\n".join(names) + "\n")
    out = tmp_path / "pred"
    args = ["predict-widerface", "--data-root", str(widerface_dir), "--split", "val", "--subset", str(subset),
            "--out", str(out), "--preset", "ufssd_light", "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "input policy: original size" in err and "score >= 0.01" in err and "at most 750" in err
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(n[:-4] + ".txt" for n in names)
    total = 0
    for name in names:
        lines = (out / (name[:-4] + ".txt")).read_text().split("\n")
        assert lines[0] == name.split("/")[1][:-4] and lines[-1] == ""
        count = int(lines[1])
        assert count == len(lines) - 3 and count <= 750
        values = np.array([[float(v) for v in ln.split(" ")] for ln in lines[2:-1]]).reshape(-1, 5)
        assert np.all(np.diff(values[:, 4]) <= 0) and np.all(values[:, 4] >= 0.01)
        assert np.all(values[:, 2:4] >= 0)
        total += count
    assert f"wrote {len(names)} files ({total} boxes)" in err
    # the folder chains into the evaluator: every file is read, none missing or invalid, every box counted
    from ufssd.evaluation import evaluate

    result = evaluate(out, widerface_dir / "eval_tools", subset=names, strict=True)
    assert result.images == len(names) and result.detections == total > 0
    assert result.missing == () and result.invalid == ()
    assert all(0.0 <= result.aps[k] <= 1.0 or np.isnan(result.aps[k]) for k in ("easy", "medium", "hard"))


def test_predict_widerface_errors(tmp_path, capsys):
    args = ["predict-widerface", "--data-root", str(tmp_path / "nope"), "--out", str(tmp_path / "p")]
    args += ["--preset", "ufssd_light"]
    assert main(args) == 2
    assert "no such folder" in capsys.readouterr().err


def test_predict_widerface_threshold_flag_reaches_the_files(widerface_dir, tmp_path, capsys):
    name = (widerface_dir / "dev_images.txt").read_text().split()[0]
    subset = tmp_path / "subset.txt"
    subset.write_text(name + "\n")
    out = tmp_path / "pred"
    args = ["predict-widerface", "--data-root", str(widerface_dir), "--subset", str(subset), "--out", str(out),
            "--preset", "ufssd_light", "--no-progress", "--threshold", "0.5"]
    assert main(args) == 0
    assert "score >= 0.5," in capsys.readouterr().err
    lines = (out / (name[:-4] + ".txt")).read_text().split("\n")[2:-1]
    assert all(float(ln.split(" ")[4]) >= 0.5 for ln in lines)


def test_predict_widerface_soft_nms_flag(widerface_dir, tmp_path, capsys):
    """--soft-nms reaches the post-processing: the policy says so, and Soft-NMS keeps the boxes
    that NMS deletes (at least as many lines, the NMS boxes among them)."""
    name = (widerface_dir / "dev_images.txt").read_text().split()[0]
    subset = tmp_path / "subset.txt"
    subset.write_text(name + "\n")
    base = ["predict-widerface", "--data-root", str(widerface_dir), "--subset", str(subset),
            "--no-progress", "--threshold", "0.05"]  # the shipped model: random weights find nothing
    assert main([*base, "--out", str(tmp_path / "hard")]) == 0
    assert "NMS at IoU 0.3," in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "soft"), "--soft-nms", "0.5"]) == 0
    assert "Gaussian Soft-NMS (sigma 0.5)," in capsys.readouterr().err
    hard, soft = (
        np.array([[float(v) for v in ln.split(" ")] for ln in (tmp_path / d / (name[:-4] + ".txt")).read_text().split("\n")[2:-1]]).reshape(-1, 5)
        for d in ("hard", "soft")
    )
    assert len(soft) >= len(hard) > 0 and np.all(np.diff(soft[:, 4]) <= 0)
    np.testing.assert_allclose(soft[0], hard[0], atol=1e-3)  # the best box is taken first by both
    assert main([*base, "--out", str(tmp_path / "bad"), "--soft-nms", "-1"]) == 2
    assert "soft_nms_sigma must be >= 0" in capsys.readouterr().err
