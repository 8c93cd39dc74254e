"""Device and precision resolution: the only module that touches ``torch.cuda``."""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import platform
import re
import threading
from typing import Callable, ContextManager, Literal

import torch

from .errors import type_error, value_error

__all__ = ["resolve_device", "resolve_dtype", "synchronize", "cpu_cores", "cpu_plan",
           "thread_stream", "finish_stream", "memory_stats", "reset_peak_memory", "device_name", "HeapTrimmer",
           "keep_heap", "pin_cpu_threads", "CPU_CALL_THREADS", "CPU_POLICY_ENV", "cpu_policy_wanted",
           "apply_cpu_policy", "Precision"]

log = logging.getLogger("vs_vgan")
_DEVICE_ACCEPTED = "'auto', 'cpu', 'cuda' or 'cuda:N'"
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: The nodes' ``precision=`` values (:func:`resolve_dtype`).
Precision = Literal["auto", "fp32", "fp16", "bf16"]


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


def resolve_dtype(precision: object, *, device: torch.device, func: str) -> torch.dtype:
    """The network's precision (frames, warps and blends stay fp32 whatever it is).

    ``"auto"``: fp16 on CUDA (measured on the held-out clip: 38.48 dB against fp32's
    38.50), fp32 on the CPU (where fp16 convolutions are slow, and bf16, though 1.4 times
    as fast on CPUs with native bf16, loses 0.3 to 0.9 dB).  ``"fp32"``, ``"fp16"`` and
    ``"bf16"`` force one.
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


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on the CPU); for benchmarks."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_streams = threading.local()


def thread_stream(device: torch.device) -> ContextManager[object]:
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


def _find_glibc(name: str, argtypes: list[type[ctypes.c_int] | type[ctypes.c_size_t]]) -> Callable[..., int] | None:
    try:
        fn = getattr(ctypes.CDLL(None), name)  # glibc
    except (AttributeError, OSError):
        return None
    fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return fn


_malloc_trim = _find_glibc("malloc_trim", [ctypes.c_size_t])
_mallopt = _find_glibc("mallopt", [ctypes.c_int, ctypes.c_int])
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from (and go back to) glibc's heaps, not fresh mappings:
#: its largest allowed setting on 64-bit systems (the frame-sized tensors of 1080p and
#: below are all smaller).
HEAP_MMAP_THRESHOLD = 32 << 20
_heap_lock = threading.Lock()
_heap_tuned: bool | None = None


def keep_heap() -> bool:
    """Make glibc keep freed memory for reuse (process-wide, once): frame-sized blocks
    from its heaps instead of fresh mappings, and no trimming of a heap's top on free.

    By default glibc gives each block above its mmap threshold (128 KiB at first, raised to
    the size of each such block freed) a mapping of its own, and hands free memory at a
    heap's top back to the system once there is twice that much; a frame's tensors (a
    few MB each, a dozen or more a frame) are then paged in again, zero-filled, every
    frame, by the kernel.  On a 2-core CPU that kernel time was
    about a fifth of a 720p 2x conversion's CPU time (``scale=0.25``, 480 output frames,
    ``time`` of ``vspipe``: 3.6-4.2 s of system time against 1.7-2.0 s with the memory
    kept, which gives 16-19% more frames/s).  The memory is still given back:
    :class:`HeapTrimmer` trims the heaps every so many frames.

    Nothing is changed where the environment already sets glibc's malloc (a
    ``MALLOC_*_`` variable or a ``glibc.malloc`` tunable: the user's choice), or off
    glibc.  True when the settings are in effect."""
    global _heap_tuned
    with _heap_lock:
        if _heap_tuned is None:
            env = os.environ
            user = "glibc.malloc." in env.get("GLIBC_TUNABLES", "") or any(
                k.startswith("MALLOC_") and k.endswith("_") for k in env)
            _heap_tuned = (not user and _mallopt is not None
                           and bool(_mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD))
                           and bool(_mallopt(_M_TRIM_THRESHOLD, 1 << 30)))
        return _heap_tuned


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


#: torch's intra-op threads for each CPU network call, fixed so that the output does not
#: depend on the core count, ``core.num_threads`` or other nodes: float reductions split
#: over a different number of threads sum in a different order (measured: up to 4e-6
#: apart between 1 and 2 threads at 320x180, which changed the rounded samples of 20 of
#: 23 RGBS frames).  The cores are filled by running frames side by side instead.
CPU_CALL_THREADS = 1


def cpu_plan(core_threads: int, cores: int | None = None) -> tuple[int, int]:
    """``(calls, threads)``: how many network calls run at once on the CPU, and torch's
    intra-op threads for each (always :data:`CPU_CALL_THREADS`).

    VapourSynth runs up to ``core.num_threads`` frame callbacks at once.  Frames in
    parallel, each on one thread, beat one frame at a time on all threads (many of the
    per-frame operations, warps and resizes, don't split across threads, and the rest
    split with losses), and only one thread per call gives the same bytes on any machine
    of the same CPU kind: one call per core while there are callbacks for them.  With
    ``core.num_threads`` below the core count the other cores stay idle.
    """
    cores = cpu_cores() if cores is None else max(1, int(cores))
    return max(1, min(int(core_threads), cores)), CPU_CALL_THREADS


#: ``0``, ``off``, ``no`` or ``false`` here: nodes leave torch's thread count and glibc's
#: malloc as they are, unless a node's ``cpu_policy=True`` asks for them.
CPU_POLICY_ENV = "VS_VGAN_CPU_POLICY"
_OFF = ("0", "off", "no", "false")


def cpu_policy_wanted(cpu_policy: object, *, func: str) -> bool:
    """A node's ``cpu_policy`` argument: True or False, or None for the environment's
    :data:`CPU_POLICY_ENV` (on unless it says off)."""
    if cpu_policy is None:
        return os.environ.get(CPU_POLICY_ENV, "").strip().lower() not in _OFF
    if not isinstance(cpu_policy, bool):
        raise type_error(func, "cpu_policy", "True, False or None (the environment's " + CPU_POLICY_ENV + ")",
                         cpu_policy)
    return cpu_policy


_policy_lock = threading.Lock()
_policy_applied = False


def apply_cpu_policy() -> None:
    """vs_vgan's process-wide CPU settings, applied by the first CPU node that wants them
    (:func:`cpu_policy_wanted`) and logged once at INFO; later calls change nothing, so
    nodes never undo each other:

    * torch's intra-op threads: :data:`CPU_CALL_THREADS` (the bytes of a frame must not
      depend on the thread count; the cores are filled by frames side by side), and set
      again on each thread before it computes (:func:`pin_cpu_threads`);
    * glibc keeps freed frame-sized memory for reuse (:func:`keep_heap`; not where the
      environment sets glibc's malloc itself).

    Opting out (``cpu_policy=False`` on every node, or :data:`CPU_POLICY_ENV` off) leaves
    both as they are: frames then depend on torch's thread count, and a CPU run at 720p
    is slower by the kernel's paging (:func:`keep_heap`)."""
    global _policy_applied
    with _policy_lock:
        if _policy_applied:
            return
        before = torch.get_num_threads()
        torch.set_num_threads(CPU_CALL_THREADS)
        heap = keep_heap()
        _policy_applied = True
    log.info("vs_vgan CPU policy (process-wide, once): torch intra-op threads %d -> %d per frame, frames "
             "computed side by side; glibc malloc %s. Opt out: cpu_policy=False or %s=0",
             before, CPU_CALL_THREADS,
             f"keeps blocks up to {HEAP_MMAP_THRESHOLD >> 20} MiB for reuse" if heap
             else "left as it is (set by the environment, or not glibc)", CPU_POLICY_ENV)


_pinned = threading.local()
_warned_threads: list[int] = []


def pin_cpu_threads() -> None:
    """Before CPU network work on the calling thread of a node under the CPU policy
    (:func:`apply_cpu_policy`): torch's intra-op threads are :data:`CPU_CALL_THREADS`.
    Each thread sets them once (torch then also sets the calling thread's OpenMP count),
    and again, with a warning, if something else in the process (another plugin, the
    script) changed the process-wide count since."""
    current = torch.get_num_threads()
    if current == CPU_CALL_THREADS and getattr(_pinned, "done", False):
        return
    if current != CPU_CALL_THREADS and getattr(_pinned, "done", False) and not _warned_threads:
        _warned_threads.append(current)
        log.warning(
            "torch's threads were set to %d while vs_vgan runs; vs_vgan sets them back to %d per frame "
            "(its frames must not depend on the thread count)", current, CPU_CALL_THREADS)
    torch.set_num_threads(CPU_CALL_THREADS)
    _pinned.done = True
