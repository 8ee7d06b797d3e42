"""scripts/blur_threshold.py and scripts/blur_persistence.py: their errors name what is wrong."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def blur_threshold(load_script):
    return load_script("blur_threshold")


@pytest.fixture(scope="module")
def blur_persistence(load_script):
    return load_script("blur_persistence")


def _row(threshold: float, precision: float) -> dict:
    return {"threshold": threshold, "precision": precision}


def test_choose_takes_the_lowest_precise_enough_threshold(blur_threshold):
    rows = [_row(0.01, 0.1), _row(0.3, 0.55), _row(0.5, 0.8)]
    assert blur_threshold.choose(rows, 0.5) == 0.3
    assert blur_threshold.choose(rows, 0.8) == 0.5


def test_choose_says_why_nothing_qualifies(blur_threshold):
    rows = [_row(0.01, 0.1), _row(0.3, 0.42), _row(0.5, 0.4)]
    with pytest.raises(ValueError, match=r"precision >= 0.9: the best is 0.42, at score >= 0.30"):
        blur_threshold.choose(rows, 0.9)
    with pytest.raises(ValueError, match="empty table"):
        blur_threshold.choose([], 0.5)


@pytest.mark.parametrize("flag", ["--images", "--frames"])
def test_persistence_refuses_zero_clips_or_frames(blur_persistence, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        blur_persistence.main([flag, "0"])
    assert exit_info.value.code == 2
    assert f"{flag}: must be >= 1, got 0" in capsys.readouterr().err


def test_persistence_with_no_qualifying_photo_says_so(blur_persistence, widerface_dir, tmp_path, capsys):
    subset = tmp_path / "few_faces.txt"
    subset.write_text("0--Parade/0_Parade_Parade_0_628.jpg\n")  # fewer than 8 faces of 20 px
    assert blur_persistence.main(["--data-root", str(widerface_dir), "--subset", str(subset)]) == 1
    assert "no photo of" in capsys.readouterr().err


def test_share_of_nothing_is_not_a_division_by_zero(blur_persistence):
    assert blur_persistence.share(3, 4) == "75.0%"
    assert blur_persistence.share(0, 0) == "n/a"
