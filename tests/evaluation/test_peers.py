"""End to end on the real ground truth: the peers' APs from the organisers' code (run under
Octave) and from the Python port, on ``shared/data/widerface/val_images.txt`` (462 images)."""

from __future__ import annotations

import json

import pytest

from ufssd.evaluation import evaluate

PEERS = [
    "blazeface",
    "blazeface_short",
    "dlib_hog",
    "haar",
    "mtcnn",
    "retinaface_mnet025",
    "scrfd_2.5g",
    "scrfd_500m",
    "ultralight_rfb320",
    "ultralight_rfb640",
    "yunet",
]


@pytest.fixture(scope="module")
def reference(peers_dir):
    return json.loads((peers_dir / "reference_aps.json").read_text())["peers"]


def test_every_peer_has_a_reference(reference):
    assert sorted(reference) == PEERS


@pytest.mark.parametrize("protocol, key", [("official", "official"), ("port", "python_port")])
@pytest.mark.parametrize("peer", PEERS)
def test_peer_aps_match_the_reference(peers_dir, widerface_dir, reference, peer, protocol, key):
    res = evaluate(
        peers_dir / peer,
        widerface_dir / "eval_tools",
        subset=widerface_dir / "val_images.txt",
        protocol=protocol,
    )
    assert res.images == 462 and not res.missing and not res.invalid
    for setting in ("easy", "medium", "hard"):
        assert res[setting].ap == pytest.approx(reference[peer][key][setting], abs=1e-9, rel=0)


def test_subset_counts_only_its_faces(widerface_dir, tmp_path):
    # the dev slice: 156 images with 395 easy, 720 medium and 2,410 hard faces
    res = evaluate(tmp_path, widerface_dir / "eval_tools", subset=widerface_dir / "dev_images.txt")
    assert res.images == 156 and len(res.missing) == 156
    assert [res[s].faces for s in ("easy", "medium", "hard")] == [395, 720, 2410]
    assert all(r.ap == 0.0 for r in res.settings.values())
