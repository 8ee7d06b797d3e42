"""Shared fixtures: where the read-only ``shared/`` folder (WIDER FACE subset, peers, docs) is.

Tests find it through ``UFSSD_SHARED`` (default: ``../shared`` beside the repository root) and skip
with a clear reason when it is absent, as in a user's clone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    return Path(os.environ.get("UFSSD_SHARED", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    if not (root / "data" / "widerface").is_dir():
        pytest.skip(f"shared data folder not found at {root} (set UFSSD_SHARED to run data tests)")
    return root


@pytest.fixture(scope="session")
def widerface_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "widerface"


@pytest.fixture(scope="session")
def peers_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "peers"
