"""ufssd.widerface_files: the layout, the one image-list comment rule (and that data, evaluation
and the CLI all read lists with it), annotation files real and hand-written with every quirk."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ufssd.widerface_files as wf
from ufssd.widerface_files import (
    DataError,
    DataSource,
    ListEntry,
    annotation_file,
    format_annotations,
    ground_truth_folder,
    image_folder,
    list_entries,
    normalize_name,
    parse_source,
    read_annotations,
    read_image_list,
    read_list_entries,
    read_sources,
    read_split,
    split_paths,
)

# ---------------------------------------------------------------------------------------------
# the layout


def test_layout_paths() -> None:
    root = Path("/d/wf")
    assert image_folder(root, "val") == Path("/d/wf/WIDER_val/images")
    assert image_folder("/d/wf", "test") == Path("/d/wf/WIDER_test/images")
    assert annotation_file(root, "train") == Path("/d/wf/wider_face_split/wider_face_train_bbx_gt.txt")
    assert split_paths(root, "val") == (
        Path("/d/wf/wider_face_split/wider_face_val_bbx_gt.txt"),
        Path("/d/wf/WIDER_val/images"),
    )
    assert ground_truth_folder(root) == Path("/d/wf/eval_tools")
    with pytest.raises(ValueError, match="split"):
        annotation_file(root, "test")  # the test split has no annotations
    with pytest.raises(ValueError, match="split"):
        image_folder(root, "Val")


def test_layout_matches_the_shared_subset(widerface_dir: Path) -> None:
    for split in ("train", "val"):
        txt, images = split_paths(widerface_dir, split)
        assert txt.is_file() and images.is_dir()
    assert (ground_truth_folder(widerface_dir) / "wider_face_val.mat").is_file()
    assert (widerface_dir / wf.DEV_LIST).is_file() and (widerface_dir / wf.VAL_TRAIN_LIST).is_file()


def test_import_loads_neither_torch_nor_numpy() -> None:
    """Rank 0: evaluation and the command line's parser import it; NumPy waits for a parse."""
    code = "import sys, ufssd.widerface_files; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'cv2'}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_data_reexports_the_same_objects() -> None:
    import ufssd.data

    for name in ("DataError", "Sample", "DataSource", "read_annotations", "read_image_list", "read_split",
                 "read_sources", "parse_source", "split_paths"):
        assert getattr(ufssd.data, name) is getattr(wf, name), name


# ---------------------------------------------------------------------------------------------
# image lists: one comment rule

LIST_LINES = [
    "# the dev slice",  # 1: a comment line
    "",  # 2: blank
    "   \t",  # 3: white space only
    "ev/a.jpg",  # 4
    "  ev/b.jpg   ",  # 5: leading and trailing white space
    "ev/c.jpg  # an inline comment",  # 6: the comment is cut, the name kept
    "   # an indented comment",  # 7
    "ev/d",  # 8: no extension
    "#ev/e.jpg",  # 9: a commented-out name
    "ev/a.jpg",  # 10: a duplicate, kept by list_entries
    "ev/f#g.jpg",  # 11: '#' always starts a comment, even inside a name
]
LIST_ENTRIES = [(4, "ev/a.jpg"), (5, "ev/b.jpg"), (6, "ev/c.jpg"), (8, "ev/d"), (10, "ev/a.jpg"), (11, "ev/f")]


def test_comment_rule_hand_written() -> None:
    entries = list_entries(LIST_LINES)
    assert entries == LIST_ENTRIES
    assert all(isinstance(e, ListEntry) for e in entries)
    assert entries[2].line == 6 and entries[2].text == "ev/c.jpg"
    assert list_entries([]) == [] and list_entries(["#", " # x", ""]) == []


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_list_file_same_as_its_lines(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(newline.join(LIST_LINES).encode("utf-8"))
    assert read_list_entries(path) == LIST_ENTRIES


def test_list_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image list not found"):
        read_list_entries(tmp_path / "nope.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("ev/caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(DataError, match=f"{bad}: cannot read image list"):
        read_list_entries(bad)


@pytest.fixture()
def commented_list(tmp_path: Path) -> Path:
    path = tmp_path / "subset.txt"
    path.write_text("\n".join(LIST_LINES[:-1]) + "\n")  # the last one is no '<event>/<name>' for data
    return path


def test_data_evaluation_and_cli_read_lists_alike(commented_list: Path) -> None:
    from ufssd.cli.predict_widerface import read_subset as cli_read_subset
    from ufssd.data import read_image_list as data_read_image_list
    from ufssd.evaluation import read_subset as evaluation_read_subset

    expected = [text for _, text in LIST_ENTRIES[:-1]]  # ev/a ev/b ev/c ev/d ev/a
    assert cli_read_subset(commented_list) == expected
    assert [(n, e) for _, n, e in evaluation_read_subset(commented_list)] == LIST_ENTRIES[:-1]
    assert [w for w, _, _ in evaluation_read_subset(str(commented_list))] == [str(commented_list)] * 5
    assert data_read_image_list(commented_list) == ["ev/a", "ev/b", "ev/c", "ev/d"]  # names, deduplicated
    assert data_read_image_list(commented_list) == list(dict.fromkeys(map(normalize_name, expected)))


def test_every_list_reader_goes_through_list_entries(commented_list: Path, monkeypatch) -> None:
    from ufssd.cli.predict_widerface import read_subset as cli_read_subset
    from ufssd.evaluation import read_subset as evaluation_read_subset

    calls: list[str] = []
    original = wf.list_entries

    def spy(lines):
        calls.append("called")
        return original(lines)

    monkeypatch.setattr(wf, "list_entries", spy)
    readers = {
        "data": lambda: read_image_list(commented_list),
        "evaluation": lambda: evaluation_read_subset(commented_list),
        "cli": lambda: cli_read_subset(commented_list),
    }
    for who, read in readers.items():
        calls.clear()
        read()
        assert calls == ["called"], who


def test_unreadable_list_errors_keep_their_type(tmp_path: Path) -> None:
    from ufssd.cli import CLIError
    from ufssd.cli.predict_widerface import read_subset as cli_read_subset
    from ufssd.evaluation import SubsetError
    from ufssd.evaluation import read_subset as evaluation_read_subset

    missing = tmp_path / "nope.txt"
    with pytest.raises(SubsetError, match="nope.txt: image list not found"):
        evaluation_read_subset(missing)
    with pytest.raises(CLIError, match="nope.txt: image list not found"):
        cli_read_subset(missing)
    with pytest.raises(DataError, match="nope.txt: image list not found"):
        read_image_list(missing)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(CLIError, match="empty"):
        cli_read_subset(empty)
    assert read_image_list(empty) == [] and evaluation_read_subset(empty) == []


# ---------------------------------------------------------------------------------------------
# the real files


@pytest.fixture(scope="module")
def train_samples(widerface_dir: Path) -> list:
    return read_split(widerface_dir, "train")


@pytest.fixture(scope="module")
def val_samples(widerface_dir: Path) -> list:
    return read_split(widerface_dir, "val")


def test_real_train_counts(train_samples: list) -> None:
    samples = train_samples
    assert len(samples) == 976
    assert sum(s.num_faces for s in samples) == 14_685
    s = samples[0]
    assert s.boxes.dtype == np.float32 and s.boxes.shape == (s.num_faces, 4)
    assert s.ignore.dtype == bool and s.ignore.shape == (s.num_faces,)
    assert s.image_path.is_file()
    assert s.name.count("/") == 1 and not s.name.endswith(".jpg")


def test_real_val_counts(val_samples: list) -> None:
    samples = val_samples
    assert len(samples) == 462
    assert sum(s.num_faces for s in samples) == 8_677
    # first block of the val file: 0--Parade/0_Parade_Parade_0_628.jpg, "26 299 10 16 ..."
    first = next(s for s in samples if s.name == "0--Parade/0_Parade_Parade_0_628")
    np.testing.assert_array_equal(first.boxes[0], [26, 299, 36, 315])
    assert first.num_faces == 29
    # its line "165 346 3 6 0 0 0 1 0 0" has invalid = 1
    assert first.ignore[8] and not first.ignore[0]


def test_real_degenerate_box_is_ignored(train_samples: list) -> None:
    s = next(s for s in train_samples if s.name == "7--Cheering/7_Cheering_Cheering_7_17")
    # the official line "0 5 0 5 ..." (zero width) -> (0, 5, 0, 10), ignored
    k = np.flatnonzero((s.boxes == np.array([0, 5, 0, 10], np.float32)).all(axis=1))
    assert len(k) == 1 and s.ignore[k[0]]


def test_real_zero_face_image(train_samples: list) -> None:
    s = next(s for s in train_samples if s.name == "2--Demonstration/2_Demonstration_Political_Rally_2_444")
    assert s.boxes.shape == (0, 4) and s.ignore.shape == (0,)


def test_real_subsets(widerface_dir: Path) -> None:
    dev = read_split(widerface_dir, "val", subset=widerface_dir / "dev_images.txt")
    assert len(dev) == 156
    extra = read_split(widerface_dir, "val", subset=widerface_dir / "val_train_images.txt")
    assert len(extra) == 306
    assert not {s.name for s in dev} & {s.name for s in extra}


def test_real_sources(widerface_dir: Path) -> None:
    root = str(widerface_dir)
    samples = read_sources([f"{root}:train", f"{root}:val:{root}/val_train_images.txt"])
    assert len(samples) == 976 + 306
    dev = set(read_image_list(widerface_dir / "dev_images.txt"))
    assert not dev & {s.name for s in samples}
    with pytest.raises(DataError, match="given twice"):
        read_sources([f"{root}:train", f"{root}:train"])


def test_real_check_images(widerface_dir: Path) -> None:
    samples = read_split(widerface_dir, "val", check_images=True)
    assert len(samples) == 462


# ---------------------------------------------------------------------------------------------
# hand-written files

GOOD = """\
ev/a.jpg
2
10 20 30 40 0 0 0 0 0 0 
50 60 5 5 2 0 0 1 0 0 
ev/b.jpg
0
0 0 0 0 0 0 0 0 0 0 
ev/c.jpg
1
0 0 0 0 0 0 0 0 0 0 
ev/d.jpg
2
7 8 0 4 0 0 0 0 0 0 
7 8 3 -2 0 0 0 0 0 0 
"""


def _write(tmp_path: Path, text: str, images: tuple[str, ...] = ("a", "b", "c", "d")) -> Path:
    (tmp_path / "images" / "ev").mkdir(parents=True, exist_ok=True)
    for stem in images:
        # a minimal JPEG signature is enough for check_images (header check only)
        (tmp_path / "images" / "ev" / f"{stem}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(12))
    txt = tmp_path / "gt.txt"
    txt.write_text(text)
    return txt


def test_format_and_quirks(tmp_path: Path) -> None:
    txt = _write(tmp_path, GOOD)
    samples = read_annotations(txt, tmp_path / "images", check_images=True)
    assert [s.name for s in samples] == ["ev/a", "ev/b", "ev/c", "ev/d"]
    a, b, c, d = samples
    np.testing.assert_array_equal(a.boxes, [[10, 20, 40, 60], [50, 60, 55, 65]])  # xywh -> xyxy
    assert a.ignore.tolist() == [False, True]  # invalid flag
    assert b.boxes.shape == (0, 4) and c.boxes.shape == (0, 4)  # count 0 / count 1 + zeros
    assert d.ignore.tolist() == [True, True]  # zero and negative size
    assert a.image_path == tmp_path / "images" / "ev" / "a.jpg"
    assert a.origin == f"{txt}:1" and d.origin == f"{txt}:11"


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("ev/a.jpg\nabc\n1 2 3 4 0 0 0 0 0 0\n", 2, "face count"),  # bad count
        ("ev/a.jpg\n-1\n", 2, "negative"),
        ("ev/a.jpg\n3\n1 2 3 4 0 0 0 0 0 0\nev/b.jpg\n0\n", 4, "ends early"),  # short block
        ("ev/a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", 4, "end of file"),  # truncated
        ("ev/a.jpg\n1\n1 2 x 4 0 0 0 0 0 0\n", 3, "non-numeric"),
        ("ev/a.jpg\n1\n1 2 3 4\n", 3, "10 fields"),
        ("ev/a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8 0 0 0 0 0 0\n", 4, "more face lines"),
        ("1\nev/a.jpg\n", 1, "image path"),
    ],
)
def test_malformed_names_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    txt = _write(tmp_path, text)
    with pytest.raises(DataError, match=what) as info:
        read_annotations(txt, tmp_path / "images")
    assert f"{txt}:{line}:" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_image_eager(tmp_path: Path) -> None:
    txt = _write(tmp_path, GOOD, images=("a", "b", "d"))
    with pytest.raises(DataError) as info:
        read_annotations(txt, tmp_path / "images", check_images=True)
    assert f"{txt}:8:" in str(info.value) and "c.jpg" in str(info.value)
    # lazily (the default) the sample is returned; loading it fails (tests/data/test_dataset.py)
    assert len(read_annotations(txt, tmp_path / "images")) == 4


def test_skip_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = (
        "ev/a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"
        "ev/b.jpg\nxx\n1 2 3 4 0 0 0 0 0 0\n"  # bad count
        "ev/c.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n"  # short block
        "ev/d.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"
        "ev/e.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"  # image missing
    )
    txt = _write(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger="ufssd.widerface_files"):
        samples = read_annotations(txt, tmp_path / "images", on_error="skip", check_images=True)
    assert [s.name for s in samples] == ["ev/a", "ev/d"]
    assert "skipped 3" in caplog.text
    assert f"{txt}:5:" in caplog.text and f"{txt}:10:" in caplog.text and f"{txt}:13:" in caplog.text
    # a skipped image named in a subset is not a second error
    samples = read_annotations(
        txt, tmp_path / "images", subset=["ev/b.jpg", "ev/d"], on_error="skip"
    )
    assert [s.name for s in samples] == ["ev/d"]


def test_subset(tmp_path: Path) -> None:
    txt = _write(tmp_path, GOOD)
    lst = tmp_path / "subset.txt"
    lst.write_text("# a comment\nev/d.jpg\n\n  ev/a   # stem without .jpg\nev/d.jpg\n")
    assert read_image_list(lst) == ["ev/d", "ev/a"]
    samples = read_annotations(txt, tmp_path / "images", subset=lst)
    assert [s.name for s in samples] == ["ev/a", "ev/d"]  # annotation order
    with pytest.raises(DataError, match="ev/zzz"):
        read_annotations(txt, tmp_path / "images", subset=["ev/a.jpg", "ev/zzz.jpg"])


def test_image_list_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_image_list(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("ev/a.jpg\nno_event.jpg\n")
    with pytest.raises(DataError, match=f"{bad}:2:"):
        read_image_list(bad)


def test_parse_source() -> None:
    assert parse_source("/d/wf:train") == DataSource(Path("/d/wf"), "train")
    assert parse_source("/d/wf:val:/d/wf/x.txt") == DataSource(Path("/d/wf"), "val", Path("/d/wf/x.txt"))
    s = parse_source(r"C:\wf:val:C:\lists\x.txt")
    assert (str(s.root), s.split, str(s.subset)) == (r"C:\wf", "val", r"C:\lists\x.txt")
    for bad in ("/d/wf", "/d/wf:test", ":train", "train"):
        with pytest.raises(ValueError):
            parse_source(bad)


def test_read_split_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="WIDER_train"):
        read_split(tmp_path, "train")
    with pytest.raises(ValueError):
        read_split(tmp_path, "test")


def test_webp_images_and_bad_headers(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "images" / "ev").mkdir(parents=True)
    ok, data = cv2.imencode(".webp", np.full((8, 8, 3), 128, np.uint8))
    assert ok
    (tmp_path / "images" / "ev" / "a.webp").write_bytes(data.tobytes())
    (tmp_path / "images" / "ev" / "b.webp").write_bytes(b"GIF89a" + bytes(10))
    txt = tmp_path / "gt.txt"
    txt.write_text("ev/a.webp\n1\n1 2 3 4 0 0 0 0 0 0\n")
    (sample,) = read_annotations(txt, tmp_path / "images", check_images=True)
    assert sample.name == "ev/a" and sample.image_path.suffix == ".webp"
    txt.write_text("ev/b.webp\n1\n1 2 3 4 0 0 0 0 0 0\n")
    with pytest.raises(DataError, match="not a JPEG, PNG or WebP file"):
        read_annotations(txt, tmp_path / "images", check_images=True)


# ---------------------------------------------------------------------------------------------
# the writer


def test_format_annotations_hand_written_and_read_back(tmp_path: Path) -> None:
    blocks = [
        ("ev/a.jpg", np.array([[10, 20, 40, 60], [50, 60, 55, 65]], np.float32), np.array([False, True])),
        ("ev/b.webp", np.zeros((0, 4), np.float32), np.zeros(0, bool)),
        ("ev/c.jpg", np.array([[1.5, 2.25, 4, 3]], np.float32), np.array([False])),
    ]
    text = format_annotations(blocks)
    assert text == (
        "ev/a.jpg\n2\n10.00 20.00 30.00 40.00 0 0 0 0 0 0\n50.00 60.00 5.00 5.00 0 0 0 1 0 0\n"
        "ev/b.webp\n0\n0 0 0 0 0 0 0 0 0 0\n"
        "ev/c.jpg\n1\n1.50 2.25 2.50 0.75 0 0 0 0 0 0\n"
    )
    txt = tmp_path / "gt.txt"
    txt.write_text(text)
    samples = read_annotations(txt, tmp_path)
    assert [s.name for s in samples] == ["ev/a", "ev/b", "ev/c"]
    for s, (_, boxes, ignore) in zip(samples, blocks):
        np.testing.assert_array_equal(s.boxes, boxes)
        assert s.ignore.tolist() == ignore.tolist()
    assert format_annotations([]) == "\n"
