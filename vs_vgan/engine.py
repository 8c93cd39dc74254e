"""The per-frame machinery every node shares: set-up, graph helpers, the runner, lanes.

A node (:mod:`vs_vgan.nodes`, :mod:`vs_vgan.prediction`) is graph wiring around these:

* :func:`load_network` checks the common arguments (``scale`` against the frame size,
  ``cpu_policy``), resolves model, device and precision, loads the network and applies
  the CPU policy; :func:`check_scene_args` checks the scene-cut arguments;
* graph helpers give ModifyFrame its aligned neighbour clips: :func:`shift`,
  :func:`remap` (the left neighbour of every output frame of a conversion) and
  :func:`scene_cuts` (the detector's verdicts); :func:`is_cut` is the scene-cut rule
  (props first, then the detector) and :func:`frame_duration` reads a frame's duration;
* :class:`Runner` turns frames into the network's output and writes it back: frames are
  converted and analysed once (:meth:`Runner.frame_state`), each pair's state is
  computed once (:meth:`Runner.pair_state`, keyed by the exact pair), outputs are
  rendered at any ``t`` (:meth:`Runner.render`) and written (:meth:`Runner.write`), all
  in bounded caches (:class:`ComputeCache`) and, on the CPU, in the process's CPU slots
  (:class:`CpuSlot`);
* :func:`in_lanes` deals a node's frames out to parallel ModifyFrame instances.

What a network can do is read from its declared capabilities
(:mod:`vs_vgan.models.contract`), never probed.
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import OrderedDict
from fractions import Fraction
from typing import Any, Callable, Iterator, Mapping, NamedTuple, cast

import torch
import vapoursynth as vs

from . import devices
from .errors import type_error, value_error
from .frames import FrameBridge, pad_to_modulo
from .models import ModelSpec, get_spec, load_model
from .models.registry import SCALES, Task
from .models.compiled import CompiledNetwork
from .models.contract import Capabilities, capabilities_of
from .timing import Timeline

__all__ = ["DEFAULT_SCENE_THRESHOLD", "CUDA_STREAMS", "CUT_PROP", "Network", "load_network", "check_scene_args",
           "shift", "lagged", "remap", "scene_cuts", "is_cut", "frame_duration", "in_lanes", "CpuSlot",
           "ComputeCache", "Runner"]

log = logging.getLogger("vs_vgan")

#: Default of ``scene_threshold``: mean absolute luma difference (0..1) of neighbouring
#: frames' thumbnails above which a pair is a scene-cut candidate.
DEFAULT_SCENE_THRESHOLD = 0.1
#: A candidate is a cut when its difference is also this many times the larger of the
#: differences of the pairs before and after it (fast pans stay pans) ...
_SCENE_RATIO = 2.0
#: ... or when it exceeds the threshold this many times over.
_SCENE_STRONG = 3.0
#: Default number of frames computed at once on CUDA (each on its own stream): two
#: overlap one frame's transfers and Python work with the other's compute.
CUDA_STREAMS = 2
#: The detector's verdict on a frame of :func:`scene_cuts`: a cut after this frame.
CUT_PROP = "_VsVganCut"
#: :func:`remap` of a conversion by ``p/q`` picks one cycle of ``p`` output frames per
#: ``q`` source frames for ``p`` up to this (one SelectEvery), each frame by itself beyond.
_PERIOD_MAX = 1 << 16


class Network(NamedTuple):
    """A node's loaded network and what goes with it (:func:`load_network`)."""

    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype
    net: Any  # the module, or its CompiledNetwork
    caps: Capabilities
    cpu_policy: bool  # its CPU work pins torch's threads (devices.pin_cpu_threads)
    scale: float


def load_network(func: str, clip: vs.VideoNode, model: object, task: Task, default: str, device: object,
                 precision: object, scale: object, cpu_policy: object, *, compile: bool = False) -> Network:
    """Check ``scale`` (against the clip's frame size too) and ``cpu_policy``, resolve
    model, device and precision, load the network (through ``torch.compile`` when
    ``compile``) and, on the CPU, apply the CPU policy where it is wanted
    (:func:`devices.apply_cpu_policy`)."""
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise type_error(func, "scale", "None, 1.0, 0.5 or 0.25", scale)
    if scale is not None and float(scale) not in SCALES:
        raise value_error(func, "scale", "None, 1.0, 0.5 or 0.25", scale)
    side = min(clip.width, clip.height)
    if scale is not None and side * float(scale) < 1:  # the analysed frame would be under a pixel
        fits = " or ".join(str(s) for s in (1.0, 0.5) if side * s >= 1)
        raise value_error(func, "scale", f"{fits} for {clip.width}x{clip.height} frames (the motion analysis "
                          f"at {float(scale)} needs frames of at least {round(1 / float(scale))} pixels a side)", scale)
    policy = devices.cpu_policy_wanted(cpu_policy, func=func)
    spec = get_spec(default if model is None else model, task=task, func=func)
    if scale is None:  # the model's choice for this frame size, never under a pixel a side
        scale = spec.default_scale(clip.width, clip.height)
        while side * scale < 1 and scale < 1.0:
            scale *= 2
        if scale != 1.0:
            log.info("%s: model %r analyses %dx%d frames at scale %g (scale=None: its choice for the size)",
                     func, spec.name, clip.width, clip.height, scale)
    dev = devices.resolve_device(device, func=func)
    dtype = devices.resolve_dtype(precision, device=dev, func=func)
    net = load_model(spec, dev, dtype, func=func)
    policy = policy and dev.type == "cpu"
    if policy:
        devices.apply_cpu_policy()
    caps = capabilities_of(net)  # the spec's (its architecture's), checked against the network's methods
    if float(scale) != 1.0 and not (caps.frame_analysis or caps.scales):
        raise value_error(func, "scale", f"1.0 for model {spec.name!r} (it has no motion analysis to scale)", scale)
    return Network(spec, dev, dtype, CompiledNetwork(net, func=func) if compile else net, caps, policy,
                   float(scale))


def check_scene_args(func: str, scene_detect: object, scene_threshold: object) -> None:
    if not isinstance(scene_detect, bool):
        raise type_error(func, "scene_detect", "True or False", scene_detect)
    if isinstance(scene_threshold, bool) or not isinstance(scene_threshold, (int, float)):
        raise type_error(func, "scene_threshold", "a number in (0, 1]", scene_threshold)
    if not 0 < scene_threshold <= 1:
        raise value_error(func, "scene_threshold", "a number in (0, 1]", scene_threshold)


def shift(clip: vs.VideoNode, j: int) -> vs.VideoNode:
    """Frame i is source frame min(i + j, last): the j-th neighbour, clamped at the end."""
    if j == 0:
        return clip
    tail = clip[-1] * j
    return clip[j:] + tail if j < clip.num_frames else tail[: clip.num_frames]


def remap(clip: vs.VideoNode, timeline: Timeline) -> vs.VideoNode:
    """Frame ``k`` of the result is source frame ``floor(k / ratio)`` of ``clip`` (the left
    neighbour of output frame ``k``), for the timeline's output frames.

    The map repeats every ``p`` output frames (``ratio = p/q``: they take ``q`` source
    frames), so for a ``p`` up to :data:`_PERIOD_MAX` one SelectEvery does it; beyond, a
    FrameEval picks each frame.  Either way the graph's size does not grow with the
    clip's length or the factor."""
    core: Any = vs.core  # its plugin namespaces (std) are untyped
    p, q = timeline.ratio.numerator, timeline.ratio.denominator
    if q == 1:  # SelectEvery's cycle is 2 or more: two periods in one
        p, q = 2 * p, 2
    n = clip.num_frames
    if p <= _PERIOD_MAX:
        total = -(-n // q) * q
        padded = clip + clip[-1] * (total - n) if total > n else clip
        picked = core.std.SelectEvery(padded, cycle=q, offsets=[j * q // p for j in range(p)], modify_duration=False)
        return picked[: timeline.num_frames]
    template = core.std.Loop(clip[0], times=timeline.num_frames)
    return core.std.FrameEval(template, lambda n: clip[n * q // p])


def scene_cuts(clip: vs.VideoNode, threshold: float) -> vs.VideoNode:
    """A clip aligned with ``clip`` whose frame i says (prop ``_VsVganCut``) whether a
    scene cut lies between source frames i and i + 1.

    Detector: mean absolute difference of luma thumbnails (about 160 pixels wide, float
    0..1) of neighbouring frames, judged against ``threshold`` and against the
    differences of the pairs on either side.
    """
    core: Any = vs.core  # its plugin namespaces (std, resize) are untyped
    tw = max(16, min(clip.width, 160)) & ~1
    th = max(16, round(clip.height * tw / clip.width)) & ~1
    fam = clip.format.color_family
    if fam == vs.YUV:
        luma = core.std.ShufflePlanes(clip, 0, vs.GRAY)
        small = core.resize.Bilinear(luma, width=tw, height=th, format=vs.GRAYS)
    elif fam == vs.RGB:
        small = core.resize.Bilinear(clip, width=tw, height=th, format=vs.GRAYS, matrix_s="709")
    else:
        small = core.resize.Bilinear(clip, width=tw, height=th, format=vs.GRAYS)
    last = clip.num_frames - 1
    diff = core.std.PlaneStats(small, shift(small, 1))  # frame i: |thumb_i - thumb_{i+1}|
    prev = diff[0] + diff[:-1]  # frame i: diff of (i-1, i); ignored for i == 0
    nxt = shift(diff, 1)  # frame i: diff of (i+1, i+2); ignored for i >= n - 2

    def judge(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        d = float(cast(float, f[1].props["PlaneStatsDiff"])) if n < last else 0.0
        d_prev = float(cast(float, f[0].props["PlaneStatsDiff"])) if n > 0 else 0.0
        d_next = float(cast(float, f[2].props["PlaneStatsDiff"])) if n < last - 1 else 0.0
        cut = d > threshold and (d > _SCENE_RATIO * max(d_prev, d_next) or d > _SCENE_STRONG * threshold)
        out = f[1].copy()
        out.props[CUT_PROP] = int(cut)
        return out

    return core.std.ModifyFrame(diff, clips=[prev, diff, nxt], selector=judge)


def frame_duration(props: Mapping[str, Any]) -> Fraction:
    try:
        return Fraction(int(props["_DurationNum"]), int(props["_DurationDen"]))
    except (KeyError, ZeroDivisionError):
        raise ValueError(
            "vs_vgan.interpolate: every frame of a variable-frame-rate clip must carry "
            "_DurationNum/_DurationDen props; got a frame without them"
        ) from None


def lagged(clip: vs.VideoNode, j: int) -> vs.VideoNode:
    """Frame i is source frame max(i - j, 0) (``j`` >= 1)."""
    return clip[0] * j + clip[:-j] if j < clip.num_frames else clip[0] * clip.num_frames


def is_cut(left: vs.VideoFrame, right: vs.VideoFrame, cuts: vs.VideoFrame | None) -> bool:
    """A scene cut between two neighbouring frames: their scene-change props when either
    carries one, else ``cuts``' ``_VsVganCut`` prop (the detector's; None: no detector)."""
    lp, rp = left.props, right.props
    if "_SceneChangeNext" in lp or "_SceneChangePrev" in rp:
        return bool(lp.get("_SceneChangeNext", 0)) or bool(rp.get("_SceneChangePrev", 0))
    return cuts is not None and bool(cuts.props[CUT_PROP])


# ---------------------------------------------------------------------- lanes
Selector = Callable[[int, list[vs.VideoFrame]], vs.VideoFrame]


def in_lanes(base: vs.VideoNode, clips: list[vs.VideoNode], selector: Selector, lanes: int,
             block: int) -> vs.VideoNode:
    """``ModifyFrame(base, clips, selector)``, with the frames dealt out to ``lanes``
    ModifyFrame instances that VapourSynth runs side by side.

    VapourSynth never runs one ModifyFrame instance's Python callback on two threads at
    once, so a single node uses one core however many threads the core has.  Output
    frames go to the lanes in blocks of ``block`` (about one source pair's frames, so
    that each lane gets synthesized frames, not only the copied source ones): frame ``n``
    is in lane ``(n // block) % lanes``.  The lanes share ``selector`` (its caches and
    locks); interleaving their blocks back gives the frames in order.  One lane is a
    single ModifyFrame.
    """
    core: Any = vs.core  # its plugin namespaces (std) are untyped
    if lanes == 1:
        return core.std.ModifyFrame(base, clips=clips, selector=selector)
    n = base.num_frames
    cycle = block * lanes
    total = -(-n // cycle) * cycle  # every lane gets the same number of frames

    def padded(c: vs.VideoNode) -> vs.VideoNode:
        return c + c[-1] * (total - n) if total > n else c

    base, clips = padded(base), [padded(c) for c in clips]
    parts = []
    for lane in range(lanes):
        offsets = [lane * block + r for r in range(block)]

        def select(c: vs.VideoNode, offsets: list[int] = offsets) -> vs.VideoNode:
            return core.std.SelectEvery(c, cycle=cycle, offsets=offsets, modify_duration=False)

        node = core.std.ModifyFrame(select(base), clips=[select(c) for c in clips],
                                    selector=_Lane(selector, lane, block, cycle, n))
        parts += [node] if block == 1 else [
            core.std.SelectEvery(node, cycle=block, offsets=[r], modify_duration=False) for r in range(block)]
    # The rate comes back exactly (SelectEvery divides it by cycle, Interleave multiplies
    # it by the cycle's parts); AssumeFPS would also rewrite the frames' durations.
    out = core.std.Interleave(parts, modify_duration=False)[:n]
    assert out.fps == base.fps, (out.fps, base.fps)
    return out


class _Lane:
    """One lane's selector: its ``i``-th frame is output frame
    ``(i // block) * cycle + lane * block + i % block`` (past the end: padding, copied)."""

    def __init__(self, selector: Selector, lane: int, block: int, cycle: int, num_frames: int) -> None:
        self.selector, self.lane, self.block, self.cycle, self.num_frames = selector, lane, block, cycle, num_frames

    def __call__(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        k = (n // self.block) * self.cycle + self.lane * self.block + n % self.block
        return self.selector(k, f) if k < self.num_frames else f[0].copy()


# ---------------------------------------------------------------------- slots, caches, the runner
_CPU_CORES = threading.BoundedSemaphore(devices.cpu_cores())


class CpuSlot:
    """Held by CPU network work and frame conversions: one of the process's slots, one per
    core, shared by every node (with one torch thread per call that keeps the cores busy
    and never oversubscribed, however many threads VapourSynth runs and however many
    nodes a script has); with ``pin``, torch's threads pinned on the thread that holds it
    (:func:`devices.pin_cpu_threads`, the CPU policy)."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin

    def __enter__(self) -> "CpuSlot":
        _CPU_CORES.acquire()
        if self.pin:
            devices.pin_cpu_threads()
        return self

    def __exit__(self, *exc: object) -> None:
        _CPU_CORES.release()


class ComputeCache:
    """Bounded LRU of computed values by key (prepared frames, pair states, roll-outs and
    their outputs): every cache of the nodes is one, so none can grow without limit.

    Concurrent requests for one key compute it once; the others wait for that result.
    A computation that fails is not cached (the next request tries again).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, maxsize)
        self._lock = threading.Lock()
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._pending: dict[Any, threading.Event] = {}

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
                event = self._pending.get(key)
                if event is None:
                    event = self._pending[key] = threading.Event()
                    break
            event.wait()  # another thread computes it; look again (it may have failed)
        try:
            value = compute()
            self.put(key, value)
            return value
        finally:
            with self._lock:
                del self._pending[key]
            event.set()

    def peek(self, key: Any, default: Any = None) -> Any:
        """The value of ``key`` if it is cached (counts as a use), else ``default``."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return default

    def put(self, key: Any, value: Any) -> None:
        """Cache ``value`` under ``key`` (the least recently used go beyond ``maxsize``)."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class Runner:
    """A node's network at work on its frames: conversion, analysis, pair states, rendering
    and writing back, with bounded caches shared by the node's lanes.

    Work is shared at two levels: each source frame is converted (and, for networks with
    ``frame_analysis``, analysed) once, though it belongs to two pairs; each pair's state
    is computed once, however many output frames it yields.  Computations are leaves that
    take a CPU slot only while they run, so waiting for another thread's result never
    holds one.  Frames are identified by the caller's indices (source frame numbers, or
    any other hashable key it keeps consistent).

    Networks with ``pair_state`` keep a state per pair and render it at any ``t``;
    those without (RIFE: one run per pair and ``t``) are run on the pair's padded frames
    for each ``t``.  With ``frame_analysis`` a network pads inside and takes frames of any
    size; others are padded here to the spec's ``modulo`` and cropped back.  With
    ``planar`` (and a YUV or GRAY clip) frames are warped and blended in their own planes,
    each at its resolution (4:2:0 chroma at a quarter of the pixels), with no full-size RGB
    copy.
    """

    def __init__(self, network: Network, bridge: FrameBridge, cache_size: int) -> None:
        self.net, self.caps, self.device, self.dtype = network.net, network.caps, network.device, network.dtype
        self.scale = network.scale
        self.slot = CpuSlot(pin=network.cpu_policy) if network.device.type == "cpu" else contextlib.nullcontext()
        self.cuda = network.device.type == "cuda"
        self.bridge = bridge
        self.analyses = self.caps.frame_analysis
        self.modulo = 1 if self.analyses else network.spec.modulo
        if self.caps.scales:  # padded for the motion estimation at its scale
            self.modulo = math.lcm(self.modulo, int(self.net.modulo_for(self.scale)))
        self.planar = self.caps.planar and bridge.planar
        # Lucas-Kanade steps on the flows from t (FlowInterpolator.refine), guided by the luma
        self.refine = bool(self.net.refine) if self.planar else False
        # only networks that estimate motion at a scale take it; others are called as before
        self.encode_kw = {"scale": self.scale} if self.scale != 1.0 else {}
        self.frames = ComputeCache(cache_size + 1)
        self.pairs = ComputeCache(cache_size)
        self.heap = devices.HeapTrimmer()

    @contextlib.contextmanager
    def frame_context(self) -> Iterator[None]:
        """Around each output frame's work, on the thread that makes it: on CUDA that
        thread's own stream, and nothing it queued still running when it ends (so that the
        tensors it used may be freed and reused); nothing on the CPU."""
        if not self.cuda:
            yield
            return
        with devices.thread_stream(self.device):
            try:
                yield
            finally:
                devices.finish_stream(self.device)

    # ------------------------------------------------------------------ cached states
    def frame_state(self, index: Any, frame: vs.VideoFrame) -> Any:
        """The state of source frame ``index`` (:meth:`state_of_output` of its data),
        computed once while cached."""
        def compute() -> Any:
            with torch.inference_mode(), self.slot:
                state = self.state_of_output(self.frame_data(frame), frame.props)
            devices.finish_stream(self.device)  # complete before other threads' streams read it
            return state

        return self.frames.get(index, compute)

    def pair_state(self, left: Any, right: Any, left_frame: vs.VideoFrame, right_frame: vs.VideoFrame) -> Any:
        """The state of the pair of source frames ``(left, right)``, computed once while
        cached (keyed by both)."""
        def compute() -> Any:
            a = self.frame_state(left, left_frame)
            b = self.frame_state(right, right_frame)
            with torch.inference_mode(), self.slot:
                state = self.pair_states(a, b)
            devices.finish_stream(self.device)
            return state

        return self.pairs.get((left, right), compute)

    def synthesize(self, left: Any, right: Any, t: float | Fraction, left_frame: vs.VideoFrame,
                   right_frame: vs.VideoFrame, fout: vs.VideoFrame) -> None:
        """Write the output at ``t`` of the pair ``(left, right)`` into ``fout``."""
        state = self.pair_state(left, right, left_frame, right_frame)
        with torch.inference_mode(), self.slot:
            self.write(self.render(state, float(t), fout.props), fout)

    # ------------------------------------------------------------------ the steps
    def frame_data(self, frame: vs.VideoFrame) -> Any:
        """A frame in :meth:`render`'s output form: plane groups or an RGB tensor."""
        return self.bridge.to_planes(frame) if self.planar else self.bridge.to_tensor([frame])

    def state_of_output(self, out: Any, props: Mapping[str, Any]) -> Any:
        """The frame state (what :meth:`pair_states` takes) of :meth:`render`'s output or
        of :meth:`frame_data`, so that a prediction can be the context of the next one."""
        if self.planar:
            rgb = self.bridge.planes_to_rgb(out, props, self.scale)
            guide = self.net.refine_guides(self.bridge.planes_to_luma(out, props)) if self.refine else None
            return self.net.prepare(None, self.scale, analysed=rgb), out, guide
        if self.analyses:
            return self.net.prepare(out, **self.encode_kw)
        return pad_to_modulo(out, self.modulo)

    def pair_states(self, a: Any, b: Any) -> Any:
        """The pair state of two frame states (for a network without ``pair_state``, the
        two padded frames)."""
        if self.planar:
            return self.net.pair(a[0], b[0]), a[1], b[1], a[2], b[2]
        if self.analyses:
            return self.net.pair(a, b)
        if not self.caps.pair_state:
            return a, b
        return self.net.encode(a, b, **self.encode_kw)

    def render(self, state: Any, t: float, props: Mapping[str, Any]) -> Any:
        """The network's output at ``t`` for a pair state: plane groups (planar path) or an
        RGB tensor ``(1, 3, H, W)``.  ``props`` (the output frame's) choose the YUV matrix."""
        tt = torch.full((1, 1, 1, 1), t, device=self.device, dtype=self.dtype)
        if self.planar:
            state, planes0, planes1, guide0, guide1 = state
            flows_t, fine = self.net.fields(state, tt)
            if self.refine:
                flows_t = self.net.refine_flows(flows_t, tt, self.scale, guide0, guide1)
            size = (self.bridge.height, self.bridge.width)
            return [self.net.render(flows_t, fine, tt, self.scale, p0, p1, size=size, mix=mix, bounds=bounds)
                    for p0, p1, (mix, bounds) in zip(planes0, planes1, self.bridge.plane_mixes(props))]
        out = self.net.synthesize(state, tt) if self.caps.pair_state else self.net(*state, tt, **self.encode_kw)
        if self.modulo > 1:
            out = out[..., : self.bridge.height, : self.bridge.width]
        return out

    def write(self, out: Any, fout: vs.VideoFrame) -> None:
        """Write :meth:`render`'s output into a writable frame."""
        if self.planar:
            self.bridge.write_planes(out, fout)
        else:
            self.bridge.write(out[0], fout)
        self.heap.tick()  # host memory stays flat over a long run
