"""Weight files: safetensors round trip, checksum, corruption, training checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from ufssd.config import config_from_json, config_to_dict
from ufssd.model import WeightFileError, build_model, fuse_batchnorm, load_weights, save_weights
from ufssd.model.serialization import read_config, tensors_sha256


@pytest.fixture(scope="module")
def trained_like():
    """A light FFMM model with non-default weights and BatchNorm statistics."""
    torch.manual_seed(0)
    model = build_model("ufssd_light_ffmm_x1").train()
    with torch.no_grad():
        model(torch.randn(2, 3, 128, 128))
        model.heads[0].cls.bias.add_(0.5)
    return model.eval()


def _outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_round_trip_identical_outputs(tmp_path, trained_like):
    path = save_weights(tmp_path / "w.safetensors", trained_like)
    loaded = load_weights(path)
    assert not loaded.training
    assert loaded.config == trained_like.config
    x = torch.randn(1, 3, 256, 128)
    a, b = _outputs(trained_like, x), _outputs(loaded, x)
    assert torch.equal(a.cls_logits, b.cls_logits)
    assert torch.equal(a.box_deltas, b.box_deltas)
    assert torch.equal(a.mask_logits[0], b.mask_logits[0])
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left


def test_metadata_holds_config_and_checksum(tmp_path, trained_like):
    from safetensors import safe_open

    path = save_weights(tmp_path / "w.safetensors", trained_like)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert config_from_json(meta["config"]) == trained_like.config
    assert json.loads(meta["config"])["name"] == "ufssd_light_ffmm_x1"
    assert meta["sha256"] == tensors_sha256(trained_like.state_dict())
    assert read_config(path) == trained_like.config


def test_overwrite_is_atomic_replace(tmp_path, trained_like):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"old")
    save_weights(path, trained_like)
    assert load_weights(path).config == trained_like.config


def test_corrupted_tensor_bytes_fail_checksum(tmp_path, trained_like):
    path = save_weights(tmp_path / "w.safetensors", trained_like)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor data, after the header
    path.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match="checksum"):
        load_weights(path)


def test_truncated_or_garbage_file(tmp_path, trained_like):
    path = save_weights(tmp_path / "w.safetensors", trained_like)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightFileError):
        load_weights(path)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightFileError):
        load_weights(garbage)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "nope.safetensors")


def test_safetensors_without_our_metadata(tmp_path, trained_like):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in trained_like.state_dict().items()}, str(path))
    with pytest.raises(WeightFileError, match="not a ufssd weight file"):
        load_weights(path)


def test_training_checkpoint(tmp_path, trained_like):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": trained_like.state_dict(), "config": config_to_dict(trained_like.config), "step": 7}, path)
    loaded = load_weights(path)
    x = torch.randn(1, 3, 128, 128)
    assert torch.equal(_outputs(loaded, x).cls_logits, _outputs(trained_like, x).cls_logits)


def test_config_that_does_not_match_weights(tmp_path, trained_like):
    other = build_model("ufssd_light")  # no FFMM: the weights have an extra mask conv
    path = tmp_path / "ckpt.pt"
    torch.save({"model": trained_like.state_dict(), "config": config_to_dict(other.config)}, path)
    with pytest.raises(WeightFileError, match="do not match"):
        load_weights(path)
    torch.save({"weights": trained_like.state_dict()}, path)
    with pytest.raises(WeightFileError, match="'model'"):
        load_weights(path)


def test_fused_model_is_not_saved(tmp_path, trained_like):
    with pytest.raises(ValueError, match="fused"):
        save_weights(tmp_path / "f.safetensors", fuse_batchnorm(trained_like))


def test_kind_comes_from_the_extension_and_errors_are_one_line(tmp_path, trained_like):
    """load_weights (training --init, export, bench) reports every bad file in one line."""
    good = save_weights(tmp_path / "w.safetensors", trained_like)
    cases = {
        "w.onnx": (good.read_bytes(), "an ONNX file holds an exported graph, not PyTorch weights"),
        "w.bin": (good.read_bytes(), "unknown weight file type '.bin'"),
        "w.pt": (good.read_bytes(), "not a training checkpoint (torch.save's zip archive expected)"),
        "e.safetensors": (b"", "empty file (0 bytes)"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightFileError) as info:
            load_weights(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: ") and message in str(info.value)
        assert "\n" not in str(info.value)


def test_mismatch_names_the_tensors_in_one_line(tmp_path, trained_like):
    other = build_model("ufssd_light")
    path = tmp_path / "ckpt.pt"
    torch.save({"model": trained_like.state_dict(), "config": config_to_dict(other.config)}, path)
    with pytest.raises(WeightFileError, match=r"do not match the stored config \(ufssd_light\): tensors .*unexpected") as info:
        load_weights(path)
    assert "\n" not in str(info.value)
