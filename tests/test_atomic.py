"""ufssd.atomic: the one home of the atomic writers, and its fsync policy."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from ufssd import atomic
from ufssd.atomic import atomic_write, atomic_write_bytes, atomic_write_text

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ufssd"
WRITERS = {"atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_csv", "atomic_path"}


@pytest.fixture
def fsync_calls(monkeypatch):
    calls = []
    real = os.fsync

    def counting(fd):
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(atomic.os, "fsync", counting)
    return calls


def test_default_is_no_fsync_for_every_writer(tmp_path, fsync_calls):
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_write(tmp_path / "b.bin") as f:
        f.write(b"x")
    assert fsync_calls == []
    assert (tmp_path / "a.bin").read_bytes() == b"x" and (tmp_path / "a.txt").read_text() == "x"


def test_fsync_true_syncs_the_file_and_its_folder(tmp_path, fsync_calls):
    atomic_write_bytes(tmp_path / "w.safetensors", b"weights", fsync=True)
    assert len(fsync_calls) == 2  # the temporary file before the rename, the folder after it
    atomic_write_text(tmp_path / "t.txt", "text", fsync=True)
    assert len(fsync_calls) == 4


def test_checkpoints_and_weight_files_are_written_with_fsync(tmp_path, fsync_calls):
    torch = pytest.importorskip("torch")
    from ufssd.model import build_model, save_weights
    from ufssd.train.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "last.pt", {"step": 1, "model": {"w": torch.zeros(2)}})
    assert len(fsync_calls) == 2
    save_weights(tmp_path / "w.safetensors", build_model("ufssd_light"))
    assert len(fsync_calls) == 4


def test_no_other_module_defines_or_reexports_the_writers():
    """One home: ufssd.atomic. Others import what they use, but define none and export none."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "atomic.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in WRITERS:
                offenders.append(f"{path.relative_to(PACKAGE)}: defines {node.name}")
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                names = {e.value for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant)}
                offenders += [f"{path.relative_to(PACKAGE)}: exports {n}" for n in sorted(names & WRITERS)]
    assert not offenders


def test_atomic_write_csv_header_rows_and_extra_keys(tmp_path):
    from ufssd.atomic import atomic_write_csv

    path = atomic_write_csv(tmp_path / "t.csv", [{"a": 1, "b": "x", "extra": 9}, {"a": 2}], ("a", "b"))
    assert path.read_text() == "a,b\n1,x\n2,\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary file left


def test_read_csv_reads_what_atomic_write_csv_wrote(tmp_path):
    from ufssd.atomic import atomic_write_csv, read_csv

    assert read_csv(tmp_path / "missing.csv") == []
    path = atomic_write_csv(tmp_path / "t.csv", [{"a": 1, "b": "x, y"}, {"a": 2}], ("a", "b"))
    assert read_csv(path) == [{"a": "1", "b": "x, y"}, {"a": "2", "b": ""}]


def test_temporary_files_are_what_a_killed_writer_leaves(tmp_path):
    """The pattern lives with the writers: what atomic_write / atomic_path hold open mid-write is
    exactly what temporary_files names (for those targets only)."""
    from ufssd.atomic import atomic_path, temporary_files

    with atomic_write(tmp_path / "last.pt") as f:
        f.write(b"half")
        assert temporary_files(tmp_path, ["last.pt", "best.pt"]) == sorted(tmp_path.iterdir())  # the one file
        assert temporary_files(tmp_path, ["best.pt", "last"]) == []
    with atomic_path(tmp_path / "log[1].csv") as tmp:
        tmp.write_text("x")
        assert temporary_files(tmp_path, ("log[1].csv",)) == [tmp]
    assert temporary_files(tmp_path, ["last.pt", "log[1].csv"]) == []  # renamed into place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "log[1].csv"]
