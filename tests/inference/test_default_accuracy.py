"""The shipped model's accuracy: ``ufssd predict-widerface`` + the official evaluation on a fixed
part of the dev slice give the APs stored beside the weights (``default.accuracy.json``, written
by ``scripts/accuracy_figures.py``) to within 1e-3. A change to pre-processing, decoding, NMS or
the prediction files that costs accuracy fails here."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def figures_script(load_script):
    return load_script("accuracy_figures")


def test_stored_figures_belong_to_the_shipped_weights(figures_script):
    assert figures_script.WEIGHTS.is_file(), f"{figures_script.WEIGHTS} missing"
    stored = json.loads(figures_script.FIGURES.read_text())
    assert stored["weights_sha256"] == figures_script.sha256(figures_script.WEIGHTS), (
        f"{figures_script.FIGURES.name} holds the figures of another weight file: a new default model "
        "ships with its figures (python scripts/accuracy_figures.py, committed with the weights)"
    )
    assert set(stored["ap"]) == {"easy", "medium", "hard"} and stored["tolerance"] == 1e-3


def test_shipped_model_accuracy_on_the_dev_slice_part(figures_script, widerface_dir):
    stored = json.loads(figures_script.FIGURES.read_text())
    names = figures_script.subset(widerface_dir)
    assert names == stored["images"], "the image part of the dev slice changed"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        aps = figures_script.measure(widerface_dir, names)
    finally:
        torch.set_num_threads(before)
    stored_aps = stored["ap"]
    off = {key: aps[key] - stored_aps[key] for key in ("easy", "medium", "hard")}
    assert all(abs(d) <= 1e-3 for d in off.values()), (
        "APs moved beyond 1e-3: "
        + ", ".join(f"{k} {aps[k]:.4f} (stored {stored_aps[k]:.4f}, {d:+.4f})" for k, d in off.items())
    )
