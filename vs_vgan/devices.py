"""Device and precision resolution: the only module that touches ``torch.cuda``."""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import platform
import re
import threading
from typing import ContextManager

import torch

from .errors import type_error, value_error

__all__ = ["resolve_device", "resolve_dtype", "is_cuda", "synchronize", "cpu_cores", "cpu_plan",
           "thread_stream", "finish_stream", "memory_stats", "reset_peak_memory", "device_name", "HeapTrimmer"]

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
    """The network's precision (frames, warps and blends stay fp32 whatever it is).

    ``"auto"``: fp16 on CUDA (measured on the held-out clip: 38.48 dB against fp32's
    38.50), fp32 on the CPU (where fp16 convolutions are slow, and bf16, though 1.4 times
    as fast on CPUs with native bf16, loses 0.3 to 0.9 dB).  ``clip_is_half`` is kept for
    callers; it no longer changes the choice.  ``"fp32"``, ``"fp16"`` and ``"bf16"``
    force one.
    """
    accepted = "'auto', 'fp32', 'fp16' or 'bf16'"
    if not isinstance(precision, str):
        raise type_error(func, "precision", accepted, precision)
    name = precision.strip().lower()
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _PRECISIONS:
        raise value_error(func, "precision", accepted, precision)
    return _PRECISIONS[name]


def is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on the CPU); for benchmarks."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_streams = threading.local()


def thread_stream(device: torch.device) -> ContextManager:
    """Run the calling thread's work on ``device`` on that thread's own CUDA stream
    (made on first use, one per thread and device), so that frames requested by several
    VapourSynth threads at once overlap on the GPU: one frame's upload and download with
    another's compute.  A no-op context on the CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    pool = getattr(_streams, "pool", None)
    if pool is None:
        pool = _streams.pool = {}
    stream = pool.get(device.index)
    if stream is None:
        stream = pool[device.index] = torch.cuda.Stream(device)
    return torch.cuda.stream(stream)


def finish_stream(device: torch.device) -> None:
    """Wait for the work queued on the calling thread's current stream only (no-op on the
    CPU): what a thread computed is complete before another thread, on another stream,
    may read it.  Unlike :func:`synchronize` it leaves other threads' streams running."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def memory_stats(device: torch.device) -> dict[str, int]:
    """Bytes of GPU memory held by torch on ``device`` (allocated, reserved and their
    peaks since the last :func:`reset_peak_memory`); empty on the CPU."""
    if device.type != "cuda":
        return {}
    return {"allocated": torch.cuda.memory_allocated(device), "reserved": torch.cuda.memory_reserved(device),
            "peak_allocated": torch.cuda.max_memory_allocated(device),
            "peak_reserved": torch.cuda.max_memory_reserved(device)}


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (from /proc/cpuinfo where there is one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _find_malloc_trim():
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc
    except (AttributeError, OSError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


class HeapTrimmer:
    """Gives the C heap's free memory back to the system every ``every`` ticks (glibc's
    ``malloc_trim``; nothing elsewhere).

    Frames converted and computed on several threads at once leave glibc's heaps full of
    free holes between longer-lived blocks (VapourSynth's frames, cached states), which
    it keeps: measured on a 2x conversion of 320x180 frames on 2 threads, RSS went from
    0.55 GB to 2.7 GB over 12,000 frames, all of it free memory (a trim brought it back to
    0.66 GB).  Trimming now and then keeps it flat.  It frees only what is already free.
    """

    def __init__(self, every: int = 64) -> None:
        self.every = max(1, int(every))
        self._ticks = itertools.count(1)

    def tick(self) -> None:
        if _malloc_trim is not None and next(self._ticks) % self.every == 0:
            _malloc_trim(0)


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
