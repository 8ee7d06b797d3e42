"""The package's layers import only downwards (docs/architecture.md), read from the source with ast.

The order of docs/architecture.md: atomic/config/presets/widerface_files/images (rank 0) <
evaluation < geometry < model < losses < data < inference < train < cli. The torch-free layers come
first: the rank-0 modules and evaluation import no torch, and evaluation imports only atomic,
config, presets and widerface_files. Of the torch layers only inference and train import
evaluation (they write and score prediction files). cli (and ``python -m ufssd``) may import
everything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ufssd"

# rank of each layer: a module may import ufssd modules of its own rank or lower
RANK = {"atomic": 0, "config": 0, "presets": 0, "widerface_files": 0, "images": 0, "geometry": 1, "model": 2, "losses": 3, "data": 4, "inference": 5, "train": 6}
TORCH_LAYERS = {"geometry", "model", "losses", "data", "inference", "train"}
TORCH_PACKAGES = {"torch", "torchvision", "safetensors", "onnxruntime", "onnx", "onnxscript"}
# the layers that never import torch: rank 0 (pure Python, NumPy and Pillow at most) and evaluation
TORCH_FREE_LAYERS = {"atomic", "config", "presets", "widerface_files", "images", "evaluation"}
EVALUATION_MAY_IMPORT = {"atomic", "config", "presets", "widerface_files", "evaluation"}
# the torch-free evaluation package may be used by the layers that write or score predictions
EVALUATION_IMPORTERS = {"inference", "train", "evaluation"}
LAYERS = {*RANK, "evaluation", "cli", "__main__"}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """'ufssd.model.network' -> 'model'; the root package -> None."""
    parts = module.split(".")
    if parts[0] != "ufssd" or len(parts) == 1:
        return None
    return parts[1]


def _type_checking_block(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import, function-level ones included; imports under
    ``if TYPE_CHECKING:`` are skipped (they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            if target == "ufssd":  # "from ufssd import model" imports the submodule ufssd.model
                found.extend((node.lineno, f"ufssd.{a.name}") for a in node.names if a.name in LAYERS)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _allowed(importer_layer: str | None, target: str) -> bool:
    top = target.split(".")[0]
    if importer_layer in ("cli", "__main__"):
        return True
    if importer_layer in TORCH_FREE_LAYERS and top in TORCH_PACKAGES:
        return False
    if top != "ufssd":
        return True
    target_layer = layer_of(target)
    if target_layer is None:  # the root package: lazy, imports nothing heavy
        return True
    if importer_layer is None:  # ufssd/__init__.py must stay torch-free
        return target_layer in ("atomic", "config", "presets")
    if importer_layer == "evaluation":
        return target_layer in EVALUATION_MAY_IMPORT
    if target_layer == "evaluation":
        return importer_layer in EVALUATION_IMPORTERS
    if target_layer in ("cli", "__main__"):
        return False
    if importer_layer not in RANK or target_layer not in RANK:
        return False  # an unknown layer: add it to docs/architecture.md and here
    return RANK[target_layer] <= RANK[importer_layer]


def test_sources_found():
    names = {module_name(p) for p in _sources()}
    assert {"ufssd", "ufssd.config", "ufssd.presets", "ufssd.model"} <= names


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_only_downwards(path):
    importer = module_name(path)
    importer_layer = layer_of(importer)
    if importer_layer is not None and importer_layer not in LAYERS:
        pytest.fail(f"{importer}: layer {importer_layer!r} is not in the table of docs/architecture.md")
    bad = [f"line {line}: {target}" for line, target in imports_of(path) if not _allowed(importer_layer, target)]
    assert not bad, f"{importer} ({importer_layer or 'root'}) imports upwards or forbidden: {bad}"


def test_rules_catch_violations():
    """The checker itself: a few hand-written cases."""
    assert not _allowed("geometry", "ufssd.model.network")
    assert not _allowed("model", "ufssd.losses")
    assert _allowed("losses", "ufssd.geometry.matching")
    assert _allowed("inference", "ufssd.model")
    assert not _allowed("inference", "ufssd.train")
    assert not _allowed("evaluation", "torch")
    assert not _allowed("evaluation", "ufssd.geometry")
    assert _allowed("evaluation", "ufssd.widerface_files")
    assert _allowed("data", "ufssd.widerface_files")
    assert not _allowed("widerface_files", "ufssd.data")
    assert not _allowed("widerface_files", "torch")
    assert _allowed("data", "ufssd.images") and _allowed("inference", "ufssd.images")
    assert not _allowed("images", "torch") and not _allowed("images", "ufssd.inference")
    assert not _allowed("config", "torch")
    assert _allowed("evaluation", "numpy")
    assert _allowed("train", "ufssd.evaluation")
    assert not _allowed("model", "ufssd.evaluation")
    assert not _allowed("geometry", "ufssd.evaluation")
    assert not _allowed("widerface_files", "ufssd.evaluation")  # rank 0 is above evaluation
    assert _allowed("cli", "ufssd.train")
    assert not _allowed(None, "ufssd.model")


def test_relative_imports_are_resolved(tmp_path):
    pkg = tmp_path / "ufssd" / "geometry"
    pkg.mkdir(parents=True)
    f = pkg / "anchors.py"
    f.write_text("from ..model import network\nfrom . import boxes\nfrom .. import model, __version__\ndef f():\n    import torch\n")
    targets = [t for _, t in imports_of(f, src=tmp_path)]
    assert targets == ["ufssd.model", "ufssd.geometry", "ufssd", "ufssd.model", "torch"]
    assert not _allowed("geometry", targets[3])


def test_import_evaluation_does_not_import_torch():
    if not (PACKAGE / "evaluation").exists() and not (PACKAGE / "evaluation.py").exists():
        pytest.skip("ufssd.evaluation does not exist yet")
    code = "import sys, ufssd.evaluation; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (
        sorted(TORCH_PACKAGES),
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and "No module named 'ufssd.evaluation'" in result.stderr:
        pytest.skip("ufssd.evaluation is not importable yet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"import ufssd.evaluation imported {result.stdout.strip()}"


def test_building_the_cli_parser_does_not_import_torch():
    """``ufssd --help`` (every command's parser, ``ufssd train``'s choices from
    ``ufssd.train.run_config`` included) stays torch-free: ``ufssd train`` sets the OpenMP wait
    policy only while torch is not imported yet, and help should not take seconds."""
    code = (
        "import sys; from ufssd.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (sorted(TORCH_PACKAGES),)
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"building the CLI parser imported {result.stdout.strip()}"
