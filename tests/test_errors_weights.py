"""A ModelSpec whose weights file is damaged, of another format or architecture, or not a
file gives a clear ValueError naming the call, the file and the model, and what is wrong
(never a raw safetensors or torch error)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import vapoursynth as vs
from safetensors.torch import load_file, save_file

import vs_vgan
from conftest import TINY_FLOW_KWARGS, make_tiny_flow_spec
from vs_vgan.models import ModelSpec, load_model
from vs_vgan.models.loader import file_sha256

CPU = torch.device("cpu")


def _clip() -> vs.VideoNode:
    return vs.core.std.BlankClip(format=vs.RGB24, width=32, height=16, length=4, fpsnum=24)


def _spec_for(path: Path, **changes) -> ModelSpec:
    """A spec made for the file as it is: its sha256 matches, so only the contents can fail."""
    fields = dict(name="tiny", task="interpolate", arch="flow", kwargs=TINY_FLOW_KWARGS, weights=str(path),
                  sha256=file_sha256(path) if path.is_file() else "0" * 64, modulo=8)
    return ModelSpec(**{**fields, **changes})


def _interpolate_error(spec: ModelSpec) -> str:
    with pytest.raises(ValueError) as info:
        vs_vgan.interpolate(_clip(), model=spec, device="cpu")
    return str(info.value)


def _good_bytes(tmp_path: Path) -> bytes:
    return Path(make_tiny_flow_spec(tmp_path).weights).read_bytes()


def _header_garbage(raw: bytes) -> bytes:
    return raw[:8] + b"x" * 20 + raw[28:]  # the header length is intact, its JSON is not


@pytest.mark.parametrize("damage, diagnosis", [
    (_header_garbage, "damaged header"),
    (lambda raw: raw[: len(raw) // 2], "truncated"),
    (lambda raw: raw[:20], "truncated"),
    (lambda raw: raw[:5], "truncated"),
    (lambda raw: b"", "truncated"),
    (lambda raw: b"hello, this is not a model at all", "does not start with a safetensors header"),
], ids=["garbage JSON", "half", "20 bytes", "5 bytes", "empty", "text"])
def test_damaged_file_whose_sha256_matches(tmp_path, damage, diagnosis):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(damage(_good_bytes(tmp_path)))
    msg = _interpolate_error(_spec_for(path))
    assert msg.startswith(f"vs_vgan.interpolate: the weights file {path} of model 'tiny' must be a complete "
                          "safetensors file; got ")
    assert diagnosis in msg


def test_torch_checkpoint_is_named_as_such(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(load_file(make_tiny_flow_spec(tmp_path).weights), path)
    msg = _interpolate_error(_spec_for(path))
    assert msg.startswith(f"vs_vgan.interpolate: the weights file {path} of model 'tiny' must be a complete "
                          "safetensors file; got a zip archive")
    assert "torch.save" in msg and "safetensors.torch.save_file" in msg


def test_kwargs_that_do_not_fit_the_file_name_the_first_mismatch(tmp_path):
    spec = make_tiny_flow_spec(tmp_path)
    other = _spec_for(Path(spec.weights), kwargs={**TINY_FLOW_KWARGS, "channels": (4, 12)})
    msg = _interpolate_error(other)
    assert msg.startswith(f"vs_vgan.interpolate: the weights file {spec.weights} of model 'tiny' must hold the "
                          "tensors of arch 'flow' with kwargs {'channels': (4, 12), 'radius': (0, 1), 'stem': 2, "
                          "'synth': 4}; got ")
    assert "encoder.1.0.0.weight is [8, 4, 3, 3] in the file but [12, 4, 3, 3] in the network" in msg
    assert "size mismatch" not in msg  # not torch's message


def test_tensor_missing_from_the_file(tmp_path):
    state = load_file(make_tiny_flow_spec(tmp_path).weights)
    gone = sorted(state)[0]
    del state[gone]
    path = tmp_path / "missing.safetensors"
    save_file(state, str(path))
    msg = _interpolate_error(_spec_for(path))
    assert msg.startswith(f"vs_vgan.interpolate: the weights file {path} of model 'tiny' must hold the tensors "
                          "of arch 'flow'")
    assert f"{gone} is missing from the file" in msg


def test_tensor_the_network_does_not_have(tmp_path):
    state = load_file(make_tiny_flow_spec(tmp_path).weights)
    state["bogus.weight"] = torch.zeros(3)
    path = tmp_path / "extra.safetensors"
    save_file(state, str(path))
    msg = _interpolate_error(_spec_for(path))
    assert f"the weights file {path} of model 'tiny' must hold the tensors of arch 'flow'" in msg
    assert "bogus.weight [3] is in the file but not in the network" in msg


def test_integer_tensors_are_refused(tmp_path):
    state = {k: (v * 100).to(torch.int32) for k, v in load_file(make_tiny_flow_spec(tmp_path).weights).items()}
    path = tmp_path / "ints.safetensors"
    save_file(state, str(path))
    msg = _interpolate_error(_spec_for(path))
    assert f"the weights file {path} of model 'tiny' must hold the tensors of arch 'flow'" in msg
    assert "is int32 in the file; the network needs floating point" in msg


@pytest.mark.parametrize("kwargs, detail", [
    ({**TINY_FLOW_KWARGS, "chanels": (4, 8)}, "unexpected keyword argument 'chanels'"),
    ({**TINY_FLOW_KWARGS, "stem": 3}, "stem must be 1, 2 or 4; got 3"),
])
def test_kwargs_the_architecture_refuses(tmp_path, kwargs, detail):
    spec = make_tiny_flow_spec(tmp_path)
    msg = _interpolate_error(_spec_for(Path(spec.weights), kwargs=kwargs))
    assert msg.startswith("vs_vgan.interpolate: the kwargs of model 'tiny' must be arguments arch 'flow' "
                          "(vs_vgan.models.flownet:FlowInterpolator) accepts; got ")
    assert detail in msg


def test_directory_is_not_called_missing(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.mkdir()
    msg = _interpolate_error(_spec_for(path))
    assert msg.startswith(f"vs_vgan.interpolate: the weights file of model 'tiny' must be a file; got a directory "
                          f"{path}")
    assert "missing" not in msg


def test_errors_are_not_cached(tmp_path):
    """Once the file is put right, the same spec loads (the loader's cache keeps only models)."""
    raw = _good_bytes(tmp_path)
    good = tmp_path / "good.safetensors"
    good.write_bytes(raw)
    path = tmp_path / "later.safetensors"
    path.mkdir()
    spec = _spec_for(path, sha256=file_sha256(good))
    with pytest.raises(ValueError, match="got a directory"):
        load_model(spec, CPU, torch.float32)
    path.rmdir()
    path.write_bytes(raw)
    assert not load_model(spec, CPU, torch.float32).training


def test_errors_name_the_calling_function(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"^vs_vgan\.predict: the weights file .* of model 'tiny-p'"):
        load_model(_spec_for(path, name="tiny-p", task="predict", arch="flow-predict"), CPU, torch.float32,
                   func="predict")
