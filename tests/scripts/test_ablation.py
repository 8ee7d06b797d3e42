"""scripts/ablation.py: the statistics and verdict rule on hand-made numbers, and the grid end to
end at a toy budget (2 presets x 2 seeds, 2 steps at 128 px on 4 train images, scored on 4 dev
images): one CSV row per pair, resumable, a removed pair redone alone, the rendered page."""

from __future__ import annotations

import math
import subprocess

import pytest


@pytest.fixture(scope="module")
def ablation(load_script):
    return load_script("ablation")


def test_paired_interval_hand_worked(ablation):
    # per-seed differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half width 2.484138
    iv = ablation.diff_interval({0: 10.0, 1: 12.0, 2: 14.0}, {0: 9.0, 1: 10.0, 2: 11.0})
    assert iv.method == "paired" and iv.n == 3
    assert iv.mean == pytest.approx(2.0)
    assert (iv.low, iv.high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)


def test_welch_interval_hand_worked(ablation):
    # var 1 / 3 and 2 / 2; se = sqrt(4/3); df = (4/3)^2 / ((1/3)^2 / 2 + 1) = 32/19; t -> 5.976997
    iv = ablation.diff_interval({0: 1.0, 1: 2.0, 2: 3.0}, {3: 0.0, 4: 2.0})
    assert iv.method == "Welch" and iv.n == 2
    assert iv.mean == pytest.approx(1.0)
    assert (iv.low, iv.high) == pytest.approx((1 - 5.976997, 1 + 5.976997), abs=1e-6)


def test_too_few_seeds_give_no_interval(ablation):
    assert ablation.diff_interval({0: 1.0}, {0: 0.5}) is None
    assert ablation.diff_interval({0: 1.0, 1: 2.0}, {}) is None


def _iv(ablation, low, high):
    return ablation.Interval((low + high) / 2, low, high, 3, "paired")


def test_verdict_rule(ablation):
    paper = {"easy": 0.3, "medium": 0.8, "hard": 6.0}
    up, zero, down = (0.2, 1.0), (-0.5, 0.5), (-1.0, -0.1)
    iv = lambda e, m, h: {"easy": _iv(ablation, *e), "medium": _iv(ablation, *m), "hard": _iv(ablation, *h)}  # noqa: E731
    assert ablation.verdict(iv(zero, zero, up), paper) == "holds"
    assert ablation.verdict(iv(up, up, up), paper) == "holds"
    assert ablation.verdict(iv(zero, zero, zero), paper) == "cannot be told apart at this scale"
    assert ablation.verdict(iv(down, zero, up), paper) == "does not hold"  # a loss outweighs a gain
    # a setting where the paper reports no gain (eta 0.20, easy: -0.1) is not judged
    assert ablation.verdict(iv(down, zero, up), {"easy": -0.1, "medium": 0.1, "hard": 0.5}) == "holds"
    assert ablation.verdict({"easy": None, "medium": None, "hard": None}, paper) == "not measured"


def test_paper_differences(ablation):
    claims = {c.row: c.paper_diff() for c in ablation.CLAIMS}
    assert claims["_ffmm_x1"] == (0.3, 0.8, 6.0)
    assert claims["_ffmm_x6"] == (1.3, 1.6, 3.4)
    assert claims["_fem_mcdm_b_eta0.10"] == (0.6, 0.6, 1.0)
    assert claims["_fem_mcdm_b_eta0.20"] == (-0.1, 0.1, 0.5)
    assert claims["_fem_mcdm_b_eta0.30"] == (0.3, 0.3, 0.3)


def test_training_seconds_sums_resumed_segments(ablation, tmp_path):
    log = tmp_path / "train_log.csv"
    log.write_text("step,elapsed_s\n20,1.0\n40,3.0\n60,0.5\n80,1.5\n")  # resumed after step 40
    assert ablation.training_seconds(log) == pytest.approx(4.5)


def test_render_from_hand_made_rows(ablation, tmp_path):
    rows = []
    for seed, (base, x1) in enumerate([(0.50, 0.55), (0.52, 0.58), (0.51, 0.57)]):
        for preset, ap in (("ufssd_light", base), ("ufssd_light_ffmm_x1", x1)):
            rows.append({"preset": preset, "seed": str(seed), "easy": f"{ap}", "medium": f"{ap}", "hard": f"{ap}",
                         "images_seen": "60000", "train_s": "1800", "machine": "cpu"})
    text = ablation.render(rows, tmp_path, tmp_path / "ablation.csv")
    assert "| `ufssd_light_ffmm_x1` | 92.4 / 90.8 / 83.5 | 56.7 ± 1.5 |" in text
    assert "| `ufssd_light` | 92.1 / 90.0 / 77.5 | 51.0 ± 1.0 |" in text
    # differences 5, 6, 6 points: mean 5.67, sd 0.577 -> [4.23, 7.10]
    assert "FFMM-x1 over UF-SSD (Table 1): **holds** — ours easy +5.7 [+4.2, +7.1] (paper +0.3)" in text
    assert "FFMM-x6 over UF-SSD (Table 1): not measured yet" in text


def test_render_orders_extra_rows_as_the_paper(ablation, tmp_path):
    # rows finished in any order (here eta 0.30 first) are listed in the paper's order
    rows = [{"preset": f"ufssd_light_fem_mcdm_b_eta{eta}", "seed": "0", "easy": "0.1", "medium": "0.1",
             "hard": "0.1", "images_seen": "60000", "train_s": "1800", "machine": "cpu"} for eta in ("0.30", "0.20")]
    text = ablation.render(rows, tmp_path, tmp_path / "ablation.csv")
    at = [text.index(f"| `ufssd_light_fem_mcdm_b_eta{eta}` |") for eta in ("0.10", "0.20", "0.30")]
    assert at == sorted(at)


# ---------------------------------------------------------------------------------------------
# end to end


@pytest.fixture()
def toy_grid(ablation, widerface_dir, tmp_path):
    train_list = tmp_path / "train4.txt"
    train_list.write_text("\n".join((widerface_dir / "train_images.txt").read_text().split()[:4]) + "\n")
    # the 4 smallest dev-slice images (by file size): scoring is the test's costliest step
    dev = (widerface_dir / "dev_images.txt").read_text().split()
    dev = sorted(dev, key=lambda n: (widerface_dir / "WIDER_val" / "images" / n).stat().st_size)[:4]
    dev_list = tmp_path / "dev4.txt"
    dev_list.write_text("\n".join(dev) + "\n")
    out, doc = tmp_path / "grid", tmp_path / "ablation.md"
    argv = ["--out", str(out), "--results", str(out / "ablation.csv"), "--efficiency", str(tmp_path / "eff.csv"),
            "--presets", "ufssd_light", "ufssd_light_ffmm_x1", "--seeds", "0", "1",
            "--budget-images", "4", "--batch-size", "2", "--resolution", "128",
            "--source", f"{widerface_dir}:train:{train_list}", "--threads", "1", "--workers", "0",
            "--checkpoint-every", "1", "--eval-root", str(widerface_dir), "--eval-subset", str(dev_list),
            "--gt", str(widerface_dir / "eval_tools"), "--doc", str(doc)]
    return argv, out, doc


def test_grid_end_to_end(ablation, toy_grid, monkeypatch):
    """Every `ufssd train` command line the script builds runs in this process (a new interpreter
    costs ~7 s of imports, and the suite must stay under 3 minutes on 2 cores); resuming across
    processes is the trainer's own test (tests/train/test_resume_cli.py, test_kill.py)."""
    from ufssd.cli import main as ufssd_main

    argv, out, doc = toy_grid
    calls = []

    def counting_run(cmd, check=False, **kw):
        calls.append(cmd[cmd.index("--out") + 1])
        assert cmd[1:4] == ["-m", "ufssd", "train"]
        rc = ufssd_main(cmd[3:])
        if check and rc:
            raise subprocess.CalledProcessError(rc, cmd)
        return subprocess.CompletedProcess(cmd, rc)

    monkeypatch.setattr(ablation.subprocess, "run", counting_run)
    assert ablation.main(argv) == 0
    rows = ablation.read_rows(out / "ablation.csv")
    assert [(r["preset"], r["seed"]) for r in rows] == [
        ("ufssd_light", "0"), ("ufssd_light_ffmm_x1", "0"), ("ufssd_light", "1"), ("ufssd_light_ffmm_x1", "1")]
    assert len(calls) == 4
    for r in rows:
        assert r["images_seen"] == "4" and r["budget_iters"] == "2" and r["budget_resolution"] == "128"
        assert all(0.0 <= float(r[s]) <= 1.0 for s in ("easy", "medium", "hard"))
        assert float(r["train_s"]) > 0 and r["machine"]

    # a second invocation does nothing new
    assert ablation.main(argv) == 0
    assert len(calls) == 4 and ablation.read_rows(out / "ablation.csv") == rows

    # a pair whose row is gone and whose run was killed before the end: only it is redone
    killed = out / "runs" / "ufssd_light_ffmm_x1" / "seed0"
    (killed / "final.safetensors").unlink()
    ablation.write_rows(out / "ablation.csv", [r for r in rows if (r["preset"], r["seed"]) != ("ufssd_light_ffmm_x1", "0")])
    assert ablation.main(argv) == 0
    assert calls[4:] == [str(killed)]
    again = ablation.read_rows(out / "ablation.csv")
    assert len(again) == 4 and again[:3] == [rows[0], rows[2], rows[3]]
    assert again[3]["preset"] == "ufssd_light_ffmm_x1" and again[3]["seed"] == "0"

    text = doc.read_text()
    assert "| `ufssd_light` | 92.1 / 90.0 / 77.5 |" in text and " ± " in text
    verdicts = ("**holds**", "**does not hold**", "**cannot be told apart at this scale**")
    line = next(l for l in text.splitlines() if l.startswith("- FFMM-x1 over UF-SSD"))
    assert any(v in line for v in verdicts) and "2 seeds, paired" in line
    assert "- MCDM-B, eta = 0.10, over UF-SSD+FEM (Table 2): not measured yet" in text

    # another budget on the same folder is refused (threads and workers may change);
    # --render-only renders without training
    with pytest.raises(SystemExit, match="another budget"):
        ablation.main([*argv, "--budget-images", "8"])
    assert ablation.main([*argv, "--threads", "2"]) == 0 and len(calls) == 5
    doc.unlink()
    assert ablation.main([*argv, "--render-only"]) == 0
    assert doc.read_text() == text
    assert not math.isnan(float(again[3]["hard"]))

    # the same runs scored at another input policy, into their own record: nothing trains (seed 2
    # has no run), the predictions go to their own folder, and the two policies never mix
    small, small_doc = out / "max64.csv", out / "max64.md"
    score_argv = [*argv, "--seeds", "0", "1", "2", "--score-only", "--eval-max-size", "64", "--results", str(small),
                  "--doc", str(small_doc), "--trained-results", str(out / "ablation.csv")]
    assert ablation.main([*score_argv, "--threads", "2"]) == 0 and len(calls) == 5
    scored = ablation.read_rows(small)
    assert [(r["preset"], r["seed"], r["eval_max_size"]) for r in scored] == [
        (p, s, "64") for s in ("0", "1") for p in ("ufssd_light", "ufssd_light_ffmm_x1")]
    # the row records how its run trained (1 thread), not how this process scored (2)
    assert {r["budget_threads"] for r in scored} == {"1"}
    assert (out / "runs" / "ufssd_light" / "seed1" / "dev_pred_max64").is_dir()
    assert all(r["eval_max_size"] == "" for r in ablation.read_rows(out / "ablation.csv"))
    page = small_doc.read_text()
    assert "images at longer side downscaled to at most 64 px;" in page
    assert "not at the original size of the protocol" in page and "[ablation.md](ablation.md#efficiency-table-3)" in page
    assert "every row above is scored as the protocol says" in text and "ablation_max640.md" in text
    assert f"--render-only --results {small} --doc {small_doc}`" in page.replace("\n", " ")
    with pytest.raises(SystemExit, match="another budget.*eval_max_size"):
        ablation.main([*argv, "--eval-max-size", "64"])
    with pytest.raises(SystemExit, match="another budget.*eval_max_size"):
        ablation.main([*score_argv[:-8], "--results", str(small)])


def test_no_eval_trains_every_pair_and_stores_the_budget(ablation, tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(ablation, "train_pair", lambda preset, seed, budget, run_dir, python: trained.append(
        (preset, seed, run_dir.relative_to(tmp_path).as_posix(), budget.iters)))
    argv = ["--out", str(tmp_path), "--presets", "ufssd_light", "ufssd_light_fem", "--seeds", "3", "4",
            "--budget-images", "100", "--batch-size", "64", "--device", "cuda", "--no-eval"]
    assert ablation.main(argv) == 0
    assert trained == [("ufssd_light", 3, "runs/ufssd_light/seed3", 2), ("ufssd_light_fem", 3, "runs/ufssd_light_fem/seed3", 2),
                       ("ufssd_light", 4, "runs/ufssd_light/seed4", 2), ("ufssd_light_fem", 4, "runs/ufssd_light_fem/seed4", 2)]
    stored = (tmp_path / "budget.json").read_text()
    assert '"budget_device": "cuda"' in stored and "budget_threads" not in stored
    assert not (tmp_path / "ablation.csv").exists()


def test_render_efficiency_rows(ablation, tmp_path):
    base = {"label": "x1", "preset": "ufssd_light_ffmm_x1", "images": "3", "threads": "2", "machine": "cpu",
            "load": "1.0", "pre_ms": "1", "net_ms": "10", "decode_ms": "2", "nms_ms": "5", "easy": "0.5",
            "medium": "0.4", "hard": "0.3", "kept_l0": "0.9"}
    rows = [{**base, "skip_masked_anchors": "0", "mask_threshold": "0.01", "total_ms": "20", "above_001": "8000",
             "to_nms": "5000"},
            {**base, "skip_masked_anchors": "1", "mask_threshold": "0.01", "total_ms": "18", "above_001": "6000",
             "to_nms": "4000", "nms_ms": "4"}]
    lines = ablation._efficiency_lines(rows, tmp_path / "efficiency.csv")
    assert "| x1 | `ufssd_light_ffmm_x1` | yes | 0.01 | 1 | 10 | 2 | 4 | 18 | 6,000 | 4,000 | 0: 0.9 | 50.0 / 40.0 / 30.0 |" in lines
    assert "- In 1 of 2 settings NMS receives" in "\n".join(lines)
    assert ("- x1, Th_Mask = 0.01: dropping the masked anchors removes 25% of the candidates >= 0.01 and changes "
            "those reaching NMS by -1,000, the NMS time by -1.0 ms and the total by -2.0 ms per image.") in lines


def _append_many(ablation, path, preset, n):
    for seed in range(n):
        ablation.append_row(path, {"preset": preset, "seed": seed, "easy": "0.5"})


def test_two_processes_appending_lose_no_row(ablation, tmp_path):
    """Two grid processes (disjoint --presets, one --out) finishing pairs at once: every row lands."""
    import multiprocessing

    path = tmp_path / "ablation.csv"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(ablation, path, p, 15)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = ablation.read_rows(path)
    assert sorted((r["preset"], int(r["seed"])) for r in rows) == sorted(
        (p, s) for p in ("a", "b") for s in range(15)
    )


def test_results_with_another_budget_are_refused(ablation, tmp_path):
    """The committed record and the run folders must hold one budget: a row trained at another
    one is refused (speed-only fields excepted), and a note on a row is rendered."""
    budget = ablation.Budget(60000, 16, 320, "/data", (), "cpu", 1, 1, 200, ("--lr", "0.01"))
    row = {"preset": "ufssd_light", "seed": "0", "easy": "0.5", "medium": "0.5", "hard": "0.5",
           "images_seen": "60000", "train_s": "10", "machine": "cpu", "note": "re-entered by hand",
           **budget.settings(), "budget_threads": 2}
    results = tmp_path / "runs.csv"
    ablation.write_rows(results, [row])
    ablation.check_budget(tmp_path / "a", budget, results)  # threads differ: speed only
    other = ablation.Budget(30000, 16, 320, "/data", (), "cpu", 1, 1, 200, ("--lr", "0.01"))
    with pytest.raises(SystemExit, match="ufssd_light seed 0 has another budget.*budget_images"):
        ablation.check_budget(tmp_path / "b", other, results)
    text = ablation.render(ablation.read_rows(results), tmp_path, results)
    assert "- ufssd_light seed 0: re-entered by hand" in text


def test_with_and_without_ffmm_compares_models_of_one_run(ablation):
    def row(label, preset, skip, th, total, above, to_nms):
        return {"label": label, "preset": preset, "skip_masked_anchors": skip, "mask_threshold": th,
                "net_ms": "50", "decode_ms": "4", "nms_ms": "10", "total_ms": total, "above_001": above,
                "to_nms": to_nms}

    rows = [row("uf-ssd@seed1", "ufssd_light", "0", "0.01", "70", "9000", "5000"),
            row("x1@seed1", "ufssd_light_ffmm_x1", "0", "0.01", "75", "8000", "5000"),
            row("x1@seed1", "ufssd_light_ffmm_x1", "1", "0.01", "72", "6000", "4000"),
            row("x1@seed1", "ufssd_light_ffmm_x1", "1", "0.1", "60", "3000", "3000"),
            row("x1@seed2", "ufssd_light_ffmm_x1", "1", "0.01", "72", "6000", "4000"),  # no plain model of seed 2
            row("default", "ufssd_light_ffmm_x1", "1", "0.01", "72", "6000", "4000")]
    lines = ablation._with_without_sentences(rows)
    assert len(lines) == 1
    assert lines[0].startswith("- With and without FFMM (seed1): `ufssd_light_ffmm_x1` with its masked anchors "
                               "dropped at Th_Mask = 0.01 against `ufssd_light`: 6,000 against 9,000 candidates")
    assert "4,000 against 5,000 reaching NMS" in lines[0] and "total +2.0 ms per image (72.0 against 70.0" in lines[0]


def test_total_times_are_told_apart_only_when_the_passes_do_not_overlap(ablation):
    a, b, c = ({"total_min_ms": lo, "total_max_ms": hi} for lo, hi in (("60.0", "70.0"), ("65.0", "80.0"), ("71.0", "75.0")))
    assert "cannot be told apart" in ablation._overlap_clause(a, b)
    assert "the difference is real" in ablation._overlap_clause(a, c)
    assert ablation._overlap_clause(a, {}) == ""


def test_seeds_to_resolve_a_gain(ablation):
    # t(0.975, n-1) * sd / sqrt(n) < gain: sd 3, gain 6 -> n = 4 (3.18 * 3 / 2 = 4.77; n = 3: 7.45)
    assert ablation.seeds_to_resolve(3.0, 6.0) == 4
    assert ablation.seeds_to_resolve(3.0, -6.0) == 4
    assert ablation.seeds_to_resolve(10.0, 0.01, most=50) is None


def test_undecided_claims_say_how_many_seeds_the_paper_gain_needs(ablation):
    base = {0: 20.0, 1: 22.0, 2: 21.0}
    row = {0: 23.0, 1: 20.0, 2: 22.0}  # differences 3, -2, 1: sd 2.52
    iv = ablation.diff_interval(row, base)
    assert iv.method == "paired" and iv.sd == pytest.approx(2.5166, abs=1e-3)
    claim = next(c for c in ablation.CLAIMS if c.row == "_ffmm_x1")
    text = ablation.claim_sentence(claim, {s: iv for s in ablation.SETTINGS}, "cannot be told apart at this scale")
    n = ablation.seeds_to_resolve(iv.sd, 6.0)
    assert n == 4 and text.endswith(f"(hard: sd 2.5 points), the paper's largest gain (hard +6.0) would need "
                                    f"about {n} paired seeds to be told apart from 0.")
    assert "would need" not in ablation.claim_sentence(claim, {s: iv for s in ablation.SETTINGS}, "holds")


def test_a_verdict_from_two_seeds_says_a_third_may_overturn_it(ablation):
    claim = next(c for c in ablation.CLAIMS if c.row == "_ffmm_x6")
    two = ablation.diff_interval({1: 38.1, 2: 38.5}, {1: 35.6, 2: 35.8})
    three = ablation.diff_interval({0: 37.0, 1: 38.1, 2: 38.5}, {0: 35.0, 1: 35.6, 2: 35.8})
    assert two.n == 2 and three.n == 3
    caveat = "a third seed may overturn this verdict"
    assert caveat in ablation.claim_sentence(claim, {s: two for s in ablation.SETTINGS}, "holds")
    assert caveat in ablation.claim_sentence(claim, {s: two for s in ablation.SETTINGS}, "does not hold")
    assert caveat not in ablation.claim_sentence(claim, {s: three for s in ablation.SETTINGS}, "holds")
    assert caveat not in ablation.claim_sentence(claim, {s: two for s in ablation.SETTINGS},
                                                 "cannot be told apart at this scale")
