"""A kill that cannot miss: a ``ufssd train`` process dies (``os._exit``, no cleanup, no
``finally``) from inside the serializer, half-way through writing a checkpoint, at a step the test
chooses. The previous ``last.pt`` still loads, the half-written temporary file is never read
(the next start removes it), and the resumed run ends with the weights of an uninterrupted run.

The kill is placed by replacing ``torch.save`` in the child: at step ``KILL_AT`` it serialises the
checkpoint, writes the first half of the bytes to the file it was given, flushes them to disk and
exits. Had the checkpoint been written in place, ``last.pt`` itself would now be truncated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ufssd.cli import main
from ufssd.train import CheckpointError, load_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ITERS, KILL_AT = 4, 3  # checkpoints at 1, 2, then the child dies writing step 3's
KILLED = 71  # the child's exit status when the kill happened where it should

CHILD = textwrap.dedent(
    f"""
    import io, os, sys
    import torch

    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == {KILL_AT}:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            out = f if hasattr(f, "write") else open(f, "wb")
            out.write(data[: len(data) // 2])
            out.flush()
            os.fsync(out.fileno())
            os._exit({KILLED})  # no cleanup: as a SIGKILL or a power cut half-way through the write
        return real_save(obj, f, *args, **kwargs)

    torch.save = dying_save
    from ufssd.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _args(widerface_dir: Path, subset: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--preset", "ufssd_light", "--source", f"{widerface_dir}:train:{subset}",
        "--iters", str(ITERS), "--batch-size", "2", "--resolution", "128", "--warmup", "1",
        "--workers", "0", "--threads", "1", "--checkpoint-every", "1", "--log-every", "1",
        "--out", str(out), "--no-progress", "--no-tensorboard", *extra,
    ]  # fmt: skip


def test_kill_inside_the_checkpoint_write_leaves_the_previous_one_and_resumes_exactly(
    widerface_dir, tmp_path, caplog
):
    subset = tmp_path / "subset.txt"
    subset.write_text(
        "0--Parade/0_Parade_marchingband_1_1038.jpg\n1--Handshaking/1_Handshaking_Handshaking_1_234.jpg\n"
        "13--Interview/13_Interview_Interview_On_Location_13_536.jpg\n"
    )
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *_args(widerface_dir, subset, out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == KILLED, f"the kill did not land in the write (exit {child.returncode}):\n{child.stderr[-3000:]}"

    # last.pt is the previous checkpoint, whole ...
    assert load_checkpoint(out / "last.pt")["step"] == KILL_AT - 1
    assert not (out / "final.safetensors").exists()
    # ... although the kill landed half-way through a write: a partial temporary file is there,
    # which nothing could read
    partial = sorted(out.glob(".last.pt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0, sorted(p.name for p in out.iterdir())
    with pytest.raises(CheckpointError):
        load_checkpoint(partial[0])

    # the run resumes from step KILL_AT - 1, never from the temporary file, and removes it
    with caplog.at_level("INFO", logger="ufssd.train"):
        assert main(_args(widerface_dir, subset, out, "--resume")) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert f"resumed from {out / 'last.pt'} at step {KILL_AT - 1} of {ITERS}" in messages
    assert any("removed 1 temporary file" in m for m in messages), "the next start did not remove the partial file"
    assert not list(out.glob(".*.tmp"))
    assert load_checkpoint(out / "last.pt")["step"] == ITERS

    # and it matches a run that was never interrupted
    straight = tmp_path / "straight"
    assert main(_args(widerface_dir, subset, straight)) == 0
    a, b = load_file(straight / "final.safetensors"), load_file(out / "final.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    loss_rows = [ln.split(",")[:6] for ln in (out / "train_log.csv").read_text().splitlines()]
    assert loss_rows == [ln.split(",")[:6] for ln in (straight / "train_log.csv").read_text().splitlines()]
