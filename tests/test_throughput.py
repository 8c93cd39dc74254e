"""The throughput options of interpolate: num_streams, compile, and the GPU path.

The CUDA tests run where torch sees a GPU and skip cleanly elsewhere."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
import vapoursynth as vs

import vs_vgan
from conftest import fetch_in_random_order, frame_bytes, moving, planes
from vs_vgan import devices, engine, nodes
from vs_vgan.models.compiled import CompiledNetwork

core = vs.core
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _code_diff(a: vs.VideoFrame, b: vs.VideoFrame) -> int:
    return max(int(np.abs(p.astype(np.int64) - q.astype(np.int64)).max()) for p, q in zip(planes(a), planes(b)))


# ---------------------------------------------------------------------- num_streams
@pytest.mark.parametrize("value, kind, expected", [
    (0, ValueError, "vs_vgan.interpolate: num_streams must be None or an int >= 1; got 0"),
    (2.0, TypeError, "vs_vgan.interpolate: num_streams must be None or an int >= 1; got 2.0"),
    (True, TypeError, "vs_vgan.interpolate: num_streams must be None or an int >= 1; got True"),
])
def test_error_num_streams(value, kind, expected):
    with pytest.raises(kind) as e:
        vs_vgan.interpolate(moving(length=3), model="blend", device="cpu", num_streams=value)
    assert str(e.value).startswith(expected)


def test_error_compile_not_bool():
    with pytest.raises(TypeError, match=r"^vs_vgan.interpolate: compile must be True or False; got 'yes'"):
        vs_vgan.interpolate(moving(length=3), model="blend", device="cpu", compile="yes")


@pytest.mark.parametrize("streams", [1, 3])
def test_num_streams_gives_the_same_frames_on_the_cpu(tiny_flow, streams, monkeypatch):
    """Any number of parallel instances gives the bytes of one."""
    src = moving(vs.YUV420P8, length=6)
    before = torch.get_num_threads()
    try:
        ref = [frame_bytes(f) for f in vs_vgan.interpolate(src, factor="5/2", model=tiny_flow, device="cpu",
                                                           num_streams=1).frames()]
        lanes = {}
        original = nodes.in_lanes
        monkeypatch.setattr(nodes, "in_lanes", lambda *a, **k: lanes.setdefault("n", a[3]) and original(*a, **k))
        clip = vs_vgan.interpolate(src, factor="5/2", model=tiny_flow, device="cpu", num_streams=streams)
        assert lanes.get("n", 1) == streams
        for k, data in fetch_in_random_order(clip, seed=3):
            assert data == ref[k], k
    finally:
        torch.set_num_threads(before)


def test_stream_helpers_are_no_ops_on_the_cpu():
    cpu = torch.device("cpu")
    with devices.thread_stream(cpu):
        pass
    devices.finish_stream(cpu)
    assert devices.memory_stats(cpu) == {}
    assert devices.device_name(cpu)


# ---------------------------------------------------------------------- compile
class _Net(torch.nn.Module):
    """A stand-in network with one compiled method and one plain attribute."""
    modulo = 4

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def prepare(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        self.calls += 1
        if x.shape[-1] == 0:
            raise ValueError("empty frame")
        return x * 2


def _failing_compiler(fn, **kw):
    def compiled(*args, **kwargs):
        raise RuntimeError("backend compiler failed\nwith details")
    return compiled


def test_compile_falls_back_to_eager_and_warns_once(caplog):
    net = _Net()
    wrapped = CompiledNetwork(net, func="interpolate", compiler=_failing_compiler)
    assert wrapped.modulo == 4 and wrapped.network is net  # everything else is the network's
    x = torch.ones(1, 3, 4, 4)
    with caplog.at_level(logging.WARNING, logger="vs_vgan"):
        assert torch.equal(wrapped.prepare(x), x * 2)
        assert torch.equal(wrapped.prepare(x, scale=0.5), x * 2)
    assert wrapped.failed == "RuntimeError: backend compiler failed"
    warnings = [r.getMessage() for r in caplog.records if "compile=True failed" in r.getMessage()]
    assert warnings == ["vs_vgan.interpolate: compile=True failed in prepare (RuntimeError: backend compiler "
                        "failed); running without torch.compile"]


def test_compile_does_not_hide_a_genuine_error():
    wrapped = CompiledNetwork(_Net(), func="interpolate", compiler=_failing_compiler)
    with pytest.raises(ValueError, match="empty frame"):
        wrapped.prepare(torch.ones(1, 3, 4, 0))


def test_compile_fallback_gives_the_eager_frames(tiny_flow, monkeypatch):
    src = moving(vs.RGB24, length=4)
    ref = [frame_bytes(f) for f in vs_vgan.interpolate(src, model=tiny_flow, device="cpu").frames()]
    monkeypatch.setattr(torch, "compile", _failing_compiler)
    clip = vs_vgan.interpolate(src, model=tiny_flow, device="cpu", compile=True)
    assert [frame_bytes(f) for f in clip.frames()] == ref


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="TorchInductor needs a C++ compiler on the CPU")
def test_compile_on_the_cpu_matches_eager(tiny_flow, monkeypatch):
    """compile=True really compiles (no fallback) and gives eager's frames within one
    code value, from several threads at once."""
    made = []
    real = CompiledNetwork.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        made.append(self)

    monkeypatch.setattr(CompiledNetwork, "__init__", spy)
    src = moving(vs.YUV420P8, length=3, width=32, height=24)
    ref = list(vs_vgan.interpolate(src, model=tiny_flow, device="cpu").frames())
    clip = vs_vgan.interpolate(src, model=tiny_flow, device="cpu", compile=True, num_streams=2)
    got = [clip.get_frame(k) for k in range(clip.num_frames)]
    assert len(made) == 1 and made[0].failed is None
    assert max(_code_diff(a, b) for a, b in zip(ref, got)) <= 1


# ---------------------------------------------------------------------- CUDA
@cuda
@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.RGB24])
def test_cuda_streams_give_the_frames_of_one_stream(tiny_flow, fmt):
    """Several VapourSynth threads, each with its own stream, sharing frame and pair
    states across streams: the bytes of a single stream, in any request order."""
    src = moving(fmt, length=9, width=96, height=64)
    one = vs_vgan.interpolate(src, fps="60000/1001", model=tiny_flow, device="cuda", num_streams=1)
    ref = [frame_bytes(one.get_frame(k)) for k in range(one.num_frames)]
    many = vs_vgan.interpolate(src, fps="60000/1001", model=tiny_flow, device="cuda", num_streams=4)
    for k, data in fetch_in_random_order(many, seed=4):
        assert data == ref[k], k


@cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precision_is_close_to_fp32(precision):
    """The shipped model in half precision stays within a few code values of fp32."""
    src = moving(vs.YUV420P8, length=4, width=256, height=144)
    ref = vs_vgan.interpolate(src, device="cuda", precision="fp32")
    half = vs_vgan.interpolate(src, device="cuda", precision=precision)
    diffs = [np.abs(p.astype(int) - q.astype(int)) for k in range(1, ref.num_frames, 2)
             for p, q in zip(planes(ref.get_frame(k)), planes(half.get_frame(k)))]
    assert max(float(d.mean()) for d in diffs) < 0.5
    assert max(int(d.max()) for d in diffs) <= (6 if precision == "fp16" else 12)


@cuda
def test_cuda_compile_matches_eager(tiny_flow):
    src = moving(vs.YUV420P8, length=3, width=96, height=64)
    ref = list(vs_vgan.interpolate(src, model=tiny_flow, device="cuda").frames())
    got = list(vs_vgan.interpolate(src, model=tiny_flow, device="cuda", compile=True).frames())
    assert max(_code_diff(a, b) for a, b in zip(ref, got)) <= 1


@cuda
def test_cuda_memory_is_flat_over_a_long_run(tiny_flow):
    """After the caches fill, rendering more frames holds no more GPU memory."""
    src = moving(vs.YUV420P8, length=160, width=96, height=64)
    dev = torch.device("cuda")
    clip = vs_vgan.interpolate(src, model=tiny_flow, device="cuda", num_streams=2)
    frames = clip.frames()
    for _ in range(40):
        next(frames)
    torch.cuda.synchronize()
    start = devices.memory_stats(dev)["allocated"]
    for _ in frames:
        pass
    torch.cuda.synchronize()
    assert devices.memory_stats(dev)["allocated"] <= start + (1 << 20)


@cuda
def test_cuda_stream_helpers():
    dev = torch.device("cuda")
    with devices.thread_stream(dev):
        inner = torch.cuda.current_stream(dev)
        assert inner != torch.cuda.default_stream(dev)
        x = torch.ones(1 << 20, device=dev) * 2
        devices.finish_stream(dev)
        assert inner.query()
    seen = []
    t = threading.Thread(target=lambda: seen.append(_stream_of_thread(dev)))
    t.start()
    t.join()
    assert seen[0] != _stream_of_thread(dev)  # one stream per thread
    assert float(x.sum()) == 2 * (1 << 20)
    stats = devices.memory_stats(dev)
    assert stats["peak_allocated"] >= stats["allocated"] > 0


def _stream_of_thread(dev: torch.device):
    with devices.thread_stream(dev):
        return torch.cuda.current_stream(dev).cuda_stream


@cuda
def test_cuda_default_streams_follow_the_core(tiny_flow, monkeypatch):
    seen = {}
    original = nodes.in_lanes
    monkeypatch.setattr(nodes, "in_lanes", lambda *a, **k: seen.setdefault("lanes", a[3]) and original(*a, **k))
    vs_vgan.interpolate(moving(length=4), model=tiny_flow, device="cuda")
    assert seen.get("lanes", 1) == min(core.num_threads, engine.CUDA_STREAMS)


# ---------------------------------------------------------------------- host memory
def test_heap_trimmer_trims_every_nth_tick(monkeypatch):
    calls = []
    monkeypatch.setattr(devices, "_malloc_trim", lambda pad: calls.append(pad) or 1)
    trimmer = devices.HeapTrimmer(every=3)
    for _ in range(10):
        trimmer.tick()
    assert calls == [0, 0, 0]
    monkeypatch.setattr(devices, "_malloc_trim", None)  # no glibc: nothing to call
    trimmer.tick()


def test_interpolate_trims_the_heap_as_it_writes(tiny_flow, monkeypatch):
    calls = []
    monkeypatch.setattr(devices, "_malloc_trim", lambda pad: calls.append(pad) or 1)
    clip = vs_vgan.interpolate(moving(vs.YUV420P8, length=70), model=tiny_flow, device="cpu")
    for _ in clip.frames():
        pass
    synthesized = clip.num_frames // 2
    assert len(calls) == synthesized // devices.HeapTrimmer().every > 0


_HEAP_PROBE = r"""
import ctypes, os, re, tempfile
from vs_vgan import devices
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]

def mmapped():  # blocks glibc has mapped on their own (malloc_info's totals)
    path = os.path.join(tempfile.mkdtemp(), "info.xml")
    fp = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    return int(re.search(r'<total type="mmap" count="(\d+)"', open(path).read()).group(1))

tuned = devices.keep_heap()
before = mmapped()
blocks = [libc.malloc(6 << 20) for _ in range(4)]  # frame-sized
during = mmapped()
for b in blocks:
    libc.free(b)
print(tuned, devices.keep_heap(), during - before)
"""


def _heap_probe(env: dict) -> list[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE], env={**full, **env}, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(devices._mallopt is None, reason="needs glibc")
def test_keep_heap_serves_frame_sized_blocks_from_the_heap():
    """Once kept, 6 MB blocks come from glibc's heap, not from mappings of their own
    (which the kernel pages in, zero-filled, on every use)."""
    assert _heap_probe({}) == ["True", "True", "0"]


@pytest.mark.skipif(devices._mallopt is None, reason="needs glibc")
@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}])
def test_keep_heap_leaves_the_users_malloc_settings(env):
    assert _heap_probe(env) == ["False", "False", "4"]


def test_cpu_nodes_keep_the_heap(tiny_flow, monkeypatch):
    calls = []
    monkeypatch.setattr(devices, "keep_heap", lambda: calls.append(1) or True)
    monkeypatch.setattr(devices, "_policy_applied", False)  # as in a fresh process
    vs_vgan.interpolate(moving(length=4), model=tiny_flow, device="cpu")
    assert calls


# ---------------------------------------------------------------------- precision
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_network_keeps_the_frames_in_fp32(tiny_flow, precision, monkeypatch):
    """The network runs in half precision; frames, warps and blends stay fp32 (a 10-bit
    clip keeps its codes: bf16 has 8 significant bits), so the output is close to fp32's."""
    from vs_vgan.models.flownet import FlowInterpolator

    seen = []
    real = FlowInterpolator.render

    def spy(self, flows_t, fine, t, scale, img0, img1, **kw):
        out = real(self, flows_t, fine, t, scale, img0, img1, **kw)
        seen.append((self.synth_out.weight.dtype, img0.dtype, out.dtype))
        return out

    monkeypatch.setattr(FlowInterpolator, "render", spy)
    src = moving(vs.YUV420P10, length=4)
    ref = vs_vgan.interpolate(src, model=tiny_flow, device="cpu")
    half = vs_vgan.interpolate(src, model=tiny_flow, device="cpu", precision=precision)
    diffs = [np.abs(p.astype(int) - q.astype(int)) for k in range(ref.num_frames)
             for p, q in zip(planes(ref.get_frame(k)), planes(half.get_frame(k)))]
    dtype = getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[precision])
    assert (dtype, torch.float32, torch.float32) in seen
    assert all(int(d.max()) == 0 for d in diffs[0:3])  # frame 0 is a source frame
    assert max(float(d.mean()) for d in diffs) < 1.0 and max(int(d.max()) for d in diffs) <= 8, \
        [(float(d.mean()), int(d.max())) for d in diffs]


def test_auto_precision_is_fp16_on_cuda_and_fp32_on_the_cpu():
    """Resolution only (no GPU needed): the network's precision."""
    assert devices.resolve_dtype("auto", device=torch.device("cuda", 0), func="interpolate") == torch.float16
    assert devices.resolve_dtype("auto", device=torch.device("cpu"), func="interpolate") == torch.float32
    assert devices.resolve_dtype(" BF16 ", device=torch.device("cpu"), func="interpolate") == torch.bfloat16


def test_compile_runs_a_network_called_as_itself(rife_pkl, monkeypatch):
    """RIFE (no pair state) is called as the network: compile=True compiles its forward,
    and falls back to it with the same frames."""
    compiled_names = []

    def recording_compiler(fn, **kw):
        compiled_names.append(getattr(fn, "__name__", type(fn).__name__))
        return fn

    src = moving(vs.RGB24, length=3, width=64, height=64)
    ref = [frame_bytes(f) for f in vs_vgan.interpolate(src, model=str(rife_pkl), device="cpu").frames()]
    monkeypatch.setattr(torch, "compile", recording_compiler)
    clip = vs_vgan.interpolate(src, model=str(rife_pkl), device="cpu", compile=True)
    assert [frame_bytes(f) for f in clip.frames()] == ref and "forward" in compiled_names
    monkeypatch.setattr(torch, "compile", _failing_compiler)
    clip = vs_vgan.interpolate(src, model=str(rife_pkl), device="cpu", compile=True)
    assert [frame_bytes(f) for f in clip.frames()] == ref
