"""The one audited weight loader.

Weights are safetensors files shipped inside the package (or given by absolute path in a
user's :class:`ModelSpec`); their sha256 is checked before anything is read; the module is
built on the meta device and the tensors assigned with ``strict=True``.  Nothing is ever
downloaded or written.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import os
import threading
from functools import lru_cache
from pathlib import Path

import torch

from .registry import ARCHITECTURES, ModelSpec

__all__ = ["load_model", "weights_path", "file_sha256"]

_hash_lock = threading.Lock()
_hash_cache: dict[tuple[str, int, int], str] = {}


def weights_path(name: str) -> Path:
    """Where a shipped weights file lives (absolute paths are returned as they are)."""
    path = Path(name)
    if path.is_absolute():
        return path
    return Path(str(importlib.resources.files("vs_vgan.weights").joinpath(name)))


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def _architecture(arch: str) -> type[torch.nn.Module]:
    module_name, _, cls_name = ARCHITECTURES[arch].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def load_model(spec: ModelSpec, device: torch.device, dtype: torch.dtype, *, func: str = "interpolate") -> torch.nn.Module:
    """Build ``spec``'s network in eval mode on ``device`` in ``dtype`` (cached, at most 8)."""
    return _load(spec, torch.device(device), dtype, func)


@lru_cache(maxsize=8)
def _load(spec: ModelSpec, device: torch.device, dtype: torch.dtype, func: str) -> torch.nn.Module:
    cls = _architecture(spec.arch)
    if spec.weights is None:
        net = cls(**spec.kwargs)
    else:
        path = weights_path(spec.weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"vs_vgan.{func}: the weights file of model {spec.name!r} must exist; got a missing "
                f"file {os.fspath(path)}. Reinstall vs_vgan (pip install --force-reinstall .) or fix the ModelSpec"
            )
        actual = file_sha256(path)
        if actual != spec.sha256:
            raise ValueError(
                f"vs_vgan.{func}: the weights file {os.fspath(path)} of model {spec.name!r} must have "
                f"sha256 {spec.sha256}; got {actual}. The file is damaged or not the one the model was "
                f"registered with; reinstall vs_vgan"
            )
        from safetensors.torch import load_file

        state = load_file(os.fspath(path), device="cpu")
        with torch.device("meta"):
            net = cls(**spec.kwargs)
        net.load_state_dict(state, strict=True, assign=True)
    net = net.to(device=device, dtype=dtype).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
