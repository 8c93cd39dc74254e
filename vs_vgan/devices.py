"""Device and precision resolution: the only module that touches ``torch.cuda``."""
from __future__ import annotations

import os
import re

import torch

from .errors import type_error, value_error

__all__ = ["resolve_device", "resolve_dtype", "is_cuda", "synchronize", "cpu_cores", "cpu_plan"]

_DEVICE_ACCEPTED = "'auto', 'cpu', 'cuda' or 'cuda:N'"
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: object, *, func: str) -> torch.device:
    """``"auto"`` is CUDA when a GPU is usable, else the CPU, which always works."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise type_error(func, "device", _DEVICE_ACCEPTED, device)
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise value_error(func, "device", _DEVICE_ACCEPTED, device)
    if not torch.cuda.is_available():
        raise value_error(
            func, "device", "'auto' or 'cpu' on this machine (no CUDA device is usable)", device,
            f"torch {torch.__version__} sees no GPU; device='cpu' always works",
        )
    index = int(match.group(1)) if match.group(1) else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise value_error(func, "device", f"a CUDA index below {count} on this machine", device)
    return torch.device("cuda", index)


def resolve_dtype(precision: object, *, device: torch.device, clip_is_half: bool, func: str) -> torch.dtype:
    """Compute precision.

    ``"auto"`` follows the clip: half-float clips (RGBH, GRAYH, YUV444PH) run in fp16 on
    CUDA; everything else, and everything on the CPU (where fp16 convolutions are slow),
    runs in fp32.  ``"fp32"``, ``"fp16"`` and ``"bf16"`` force one.
    """
    accepted = "'auto', 'fp32', 'fp16' or 'bf16'"
    if not isinstance(precision, str):
        raise type_error(func, "precision", accepted, precision)
    name = precision.strip().lower()
    if name == "auto":
        return torch.float16 if (clip_is_half and device.type == "cuda") else torch.float32
    if name not in _PRECISIONS:
        raise value_error(func, "precision", accepted, precision)
    return _PRECISIONS[name]


def is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on the CPU); for benchmarks."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_plan(core_threads: int, cores: int | None = None) -> tuple[int, int]:
    """``(calls, threads)``: how many network calls run at once on the CPU, and torch's
    intra-op threads for each, so that ``calls * threads`` fills the cores without
    oversubscribing them.

    VapourSynth runs up to ``core.num_threads`` frame callbacks at once.  Frames in
    parallel, each on one thread, beat one frame at a time on all threads: many of the
    per-frame operations (warps, resizes) don't split across threads, and the rest split
    with losses.  So: one call per core while there are callbacks for them, and the cores
    left over (when ``core.num_threads`` is below the core count) shared among the calls.
    """
    cores = cpu_cores() if cores is None else max(1, int(cores))
    calls = max(1, min(int(core_threads), cores))
    return calls, max(1, cores // calls)
