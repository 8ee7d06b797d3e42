"""Shared fixtures: where the read-only ``shared/`` folder (WIDER FACE subset, peers, docs) is.

Tests find it through ``UFSSD_SHARED`` (default: ``../shared`` beside the repository root) and skip
with a clear reason when it is absent, as in a user's clone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Whichever test first starts a forkserver (a DataLoader with workers, the trainer), it
    preloads what the trainer's does: the server is one per process, and a server started without
    the preload makes every later worker import torch and ufssd again (seconds each)."""
    import multiprocessing

    from ufssd.train.loader import FORKSERVER_PRELOAD

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(FORKSERVER_PRELOAD))


def _import_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script():
    """``load_script(name)`` imports ``scripts/<name>.py`` (not a package) as a module."""
    return _import_script


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
