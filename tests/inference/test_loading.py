"""Weights and backends (``ufssd.inference.loading``): every weight format, every way a weight file
can be wrong, one ``WeightFileError`` each, whose message is one line naming the file."""

from __future__ import annotations

import pytest
import torch

from ufssd.config import config_to_dict
from ufssd.inference import FaceDetector
from ufssd.inference.loading import load_network
from ufssd.model import WeightFileError, build_model, save_weights
from ufssd.model.serialization import MissingWeightFileError


@pytest.fixture(scope="module")
def light():
    return build_model("ufssd_light")


@pytest.fixture(scope="module")
def weight_files(light, tmp_path_factory):
    """Good and bad weight files of every kind, by name."""
    d = tmp_path_factory.mktemp("weights")
    good = save_weights(d / "good.safetensors", light)
    torch.save({"model": light.state_dict(), "config": config_to_dict(light.config)}, d / "good.pt")
    files = {
        "corrupt.onnx": b"\x00garbage" * 10,
        "truncated.safetensors": good.read_bytes()[:1000],
        "truncated.pt": (d / "good.pt").read_bytes()[:5000],
        "text.pt": b"not a checkpoint\n",
        "model.bin": good.read_bytes(),
        "empty.safetensors": b"",
        "empty.onnx": b"",
        "empty.pt": b"",
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


CASES = [
    ("corrupt.onnx", WeightFileError, "not a readable ONNX model (Protobuf parsing failed"),
    ("truncated.safetensors", WeightFileError, "not a readable safetensors file"),
    ("truncated.pt", WeightFileError, "not a readable training checkpoint (corrupt or truncated"),
    ("text.pt", WeightFileError, "not a training checkpoint (torch.save's zip archive expected)"),
    ("model.bin", WeightFileError, "unknown weight file type '.bin'"),
    ("empty.safetensors", WeightFileError, "empty file (0 bytes)"),
    ("empty.onnx", WeightFileError, "empty file (0 bytes)"),
    ("empty.pt", WeightFileError, "empty file (0 bytes)"),
    ("missing.onnx", MissingWeightFileError, "weight file not found"),
    ("missing.safetensors", MissingWeightFileError, "weight file not found"),
    ("missing.pt", MissingWeightFileError, "weight file not found"),
]


@pytest.mark.parametrize(("name", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_every_bad_weight_file_is_one_line_naming_it(weight_files, name, error, message):
    path = weight_files / name
    with pytest.raises(error) as info:
        FaceDetector(weights=path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text
    assert "\n" not in text
    assert isinstance(info.value, ValueError)  # what the CLI turns into its one-line error


def test_missing_file_is_also_a_file_not_found_error(weight_files):
    with pytest.raises(FileNotFoundError):
        FaceDetector(weights=weight_files / "missing.onnx")


def test_a_folder_is_not_a_weight_file(weight_files):
    with pytest.raises(WeightFileError, match="is a directory, not a weight file"):
        FaceDetector(weights=weight_files)


def test_good_files_of_every_kind_load(weight_files):
    pytest.importorskip("onnxruntime")
    from ufssd.inference.export import export_onnx

    export_onnx(build_model("ufssd_light"), weight_files / "good.onnx", check=False)
    for name, backend in (("good.safetensors", "torch"), ("good.pt", "torch"), ("good.onnx", "onnxruntime")):
        network = load_network(weight_files / name)
        assert network.backend == backend and network.source == str(weight_files / name)
        assert network.config.name == "ufssd_light"


def test_onnx_without_our_metadata(weight_files):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = weight_files / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(WeightFileError, match=r"foreign\.onnx: no 'ufssd_config' metadata"):
        FaceDetector(weights=path)


def test_weights_only_refusal_is_one_line(weight_files):
    path = weight_files / "unsafe.pt"
    torch.save({"model": {}, "config": {}, "extra": print}, path)  # a function: not weights_only
    with pytest.raises(WeightFileError, match="refused by torch.load") as info:
        FaceDetector(weights=path)
    assert "\n" not in str(info.value)


def test_arguments_are_checked_before_loading(weight_files, light):
    with pytest.raises(ValueError, match="not both"):
        load_network(weight_files / "good.safetensors", preset="ufssd_light")
    with pytest.raises(ValueError, match="backend must be one of"):
        load_network(model=light, backend="tensorrt")
    with pytest.raises(ValueError, match="needs backend='onnxruntime'"):
        load_network(weight_files / "corrupt.onnx", backend="torch")


def test_an_in_memory_model_is_not_changed(light):
    before = {k: v.clone() for k, v in light.state_dict().items()}
    network = load_network(model=light)
    assert network.model is not light and network.source == "in-memory model"
    after = light.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
