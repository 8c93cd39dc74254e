"""Graph wiring of the public nodes: validation, aligned neighbour clips, callbacks, props."""
from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import OrderedDict
from fractions import Fraction
from typing import Any, Callable, Sequence

import torch
import vapoursynth as vs

from . import devices
from .errors import type_error, value_error
from .frames import FrameBridge, check_format, pad_to_modulo
from .models import DEFAULT_INTERPOLATION_MODEL, ModelSpec, get_spec, load_model
from .models.compiled import CompiledNetwork
from .timing import Timeline, resolve_ratio

__all__ = ["interpolate", "DEFAULT_SCENE_THRESHOLD"]

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
_CUDA_STREAMS = 2
_CUT_PROP = "_VsVganCut"
#: The most consecutive output frames dealt to one lane (about a source pair's frames:
#: each lane then gets synthesized frames, not only copied ones).  Bounded, as the lanes'
#: graph has a node per frame of a block.
_MAX_BLOCK = 8
#: ``_remap`` of a conversion by ``p/q`` picks one cycle of ``p`` output frames per ``q``
#: source frames for ``p`` up to this (one SelectEvery), each frame by itself beyond.
_PERIOD_MAX = 1 << 16


def interpolate(
    clip: vs.VideoNode,
    /,
    *,
    factor: int | Fraction | str | None = None,
    fps: int | Fraction | str | None = None,
    model: str | ModelSpec | None = None,
    device: str = "auto",
    precision: str = "auto",
    scene_detect: bool = True,
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    scale: float = 1.0,
    num_streams: int | None = None,
    compile: bool = False,
    cpu_policy: bool | None = None,
) -> vs.VideoNode:
    """Frame-rate conversion with synthesized in-between frames.

    Args:
        clip: constant format and size, GRAY/RGB/YUV, 8-16 bit integer or 16/32 bit float;
            at least 2 frames.  Constant or variable (fps 0/1) frame rate.
        factor: output rate / input rate, any positive rational (int, Fraction or
            ``"num/den"``), up or down.  Works on variable-rate clips, from each frame's
            duration.
        fps: target output rate instead of ``factor`` (e.g. ``"60000/1001"``); constant-rate
            clips only.  Neither given: ``factor=2``.
        model: a registered interpolation model name (``vs_vgan.models.list_models()`` lists them) or a
            :class:`vs_vgan.models.ModelSpec`; None is the default model.
        device: ``"auto"`` (CUDA when usable, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: of the network (frames stay fp32): ``"auto"`` (fp16 on CUDA, fp32 on
            the CPU), ``"fp32"``,
            ``"fp16"`` or ``"bf16"``.
        scene_detect: detect scene cuts where the frames carry no ``_SceneChangeNext`` /
            ``_SceneChangePrev`` props (props, when present, are always honoured).
        scene_threshold: detector sensitivity in (0, 1]: the mean absolute luma difference
            of two neighbours' thumbnails above which they may be a cut (it is one when
            that difference is also twice those of the surrounding pairs, or three times
            the threshold).  Lower finds more cuts.
        scale: analysis scale of motion-compensating models: ``1.0``, ``0.5`` or ``0.25``.
            Below 1 the motion is estimated on frames downscaled by it (about 1/scale^2
            less network work; output size and sharpness stay, as the full-size frames
            are warped); the faster settings for large frames or slow CPUs (0.25 is the
            one that runs a little faster than MVTools FlowFPS at 720p on two CPU
            cores).  Models without motion analysis (``"blend"``) accept only 1.0.
        num_streams: output frames computed at once (``>= 1``; more than
            ``core.num_threads`` gains nothing).  None: on the CPU
            ``min(core.num_threads, cores)``; on CUDA ``min(core.num_threads, 2)``, each
            with its own CUDA stream, so that one frame's upload and download overlap
            another's compute.  More streams hold more frames' activations in GPU memory.
        compile: run the network through ``torch.compile`` (TorchInductor, no CUDA
            graphs).  The first frames of each size are slow while it compiles (tens of
            seconds); where it can't compile (no C++ compiler or Triton), a warning is
            logged and the network runs as without it.
        cpu_policy: on the CPU, apply vs_vgan's process-wide settings
            (:func:`vs_vgan.devices.apply_cpu_policy`: one torch thread per frame, so that
            the bytes don't depend on the thread count, and glibc keeping freed memory for
            reuse), logged once at INFO.  None: on unless the environment variable
            ``VS_VGAN_CPU_POLICY`` is ``0``/``off``; False leaves torch's threads and
            glibc's malloc as they are (frames may then depend on the thread count).

    Work is spread over the cores (or the GPU's streams) as VapourSynth allows: one
    ModifyFrame instance's Python callback never runs on two threads at once, so the
    output frames are dealt out, a source pair's frames at a time, to ``num_streams``
    parallel instances.  On the CPU each frame is computed on one torch thread (the CPU
    policy), so that the bytes do not depend on the thread or core count.  YUV and GRAY clips are warped and
    blended in their own planes, each at its resolution; RGB clips as RGB.

    Returns:
        A clip with ``ceil(num_frames * ratio)`` frames (``ratio = factor`` or
        ``fps / clip.fps``) at ``clip.fps * ratio`` (0/1 for a variable-rate input).
        Output frame ``k`` sits at source position ``k / ratio``: exactly on a source
        frame it is that frame; between frames ``i`` and ``i + 1`` it is synthesized at
        ``t = k / ratio - i``; past the last source frame it repeats it.  Across a scene
        cut nothing is synthesized: the nearer source frame is shown.  Each frame keeps
        the props of the source frame it shows (the left one for synthesized frames) with
        ``_DurationNum``/``_DurationDen`` rewritten; durations add up to the source's
        duration (the last frame is cut short to make them).
    """
    func = "interpolate"
    if not isinstance(clip, vs.VideoNode):
        raise type_error(func, "clip", "a vapoursynth.VideoNode", clip)
    fmt = check_format(clip, func=func)
    if clip.num_frames < 2:
        raise value_error(func, "clip", "at least 2 frames long (there is nothing to interpolate between)", clip)
    src_fps = Fraction(clip.fps.numerator, clip.fps.denominator)
    ratio, out_fps = resolve_ratio(src_fps, factor=factor, fps=fps, func=func, num_frames=clip.num_frames)
    _check_scene_args(func, scene_detect, scene_threshold)
    if num_streams is not None and (isinstance(num_streams, bool) or not isinstance(num_streams, int)):
        raise type_error(func, "num_streams", "None or an int >= 1", num_streams)
    if num_streams is not None and num_streams < 1:
        raise value_error(func, "num_streams", "None or an int >= 1", num_streams)
    if not isinstance(compile, bool):
        raise type_error(func, "compile", "True or False", compile)
    core = vs.core
    calls = min(core.num_threads, num_streams or core.num_threads)  # callbacks that can run at once
    spec, dev, dtype, net, policy = _network(func, clip, model, "interpolate", DEFAULT_INTERPOLATION_MODEL,
                                             device, precision, scale, cpu_policy, compile=compile)

    timeline = Timeline(clip.num_frames, ratio, src_fps)
    # Aligned neighbours: [left, right] and, for a variable-rate clip whose output frames
    # span more than two source frames (factor < 1), the further ones for the durations.
    neighbours = max(2, timeline.max_overlap()) if src_fps == 0 else 2
    aligned = [_remap(_shift(clip, j), timeline) for j in range(neighbours)]
    cut_clip = _remap(_scene_cuts(clip, float(scene_threshold)), timeline) if scene_detect else None

    base = aligned[0]
    if src_fps != 0:
        base = core.std.AssumeFPS(base, fpsnum=out_fps.numerator, fpsden=out_fps.denominator)
    if num_streams is not None:
        lanes = num_streams
    else:
        lanes = devices.cpu_plan(calls)[0] if dev.type == "cpu" else min(calls, _CUDA_STREAMS)
    runner = _Interpolator(
        net=net, spec=spec, timeline=timeline, device=dev, dtype=dtype,
        bridge=FrameBridge(fmt, clip.width, clip.height, device=dev),  # frames in fp32; the network in dtype
        cache_size=min(8, core.num_threads + 2) + 2 * lanes, has_cut_clip=cut_clip is not None,
        variable_rate=src_fps == 0, scale=float(scale), cpu_policy=policy,
    )
    clips = aligned[:2] + ([cut_clip] if cut_clip is not None else []) + aligned[2:]
    log.debug("interpolate: %r, model %s on %s (%s), %d lane(s)", timeline, spec.name, dev, dtype, lanes)
    if lanes == 1:
        return core.std.ModifyFrame(base, clips=clips, selector=runner)
    return _in_lanes(base, clips, runner, lanes, block=min(max(1, round(ratio)), _MAX_BLOCK))


def _in_lanes(base: vs.VideoNode, clips: list[vs.VideoNode], runner: "_Interpolator", lanes: int,
              block: int) -> vs.VideoNode:
    """``ModifyFrame(base, clips, runner)``, with the frames dealt out to ``lanes``
    ModifyFrame instances that VapourSynth runs side by side.

    VapourSynth never runs one ModifyFrame instance's Python callback on two threads at
    once, so a single node uses one core however many threads the core has.  Output
    frames go to the lanes in blocks of ``block`` (about one source pair's frames, so
    that each lane gets synthesized frames, not only the copied source ones): frame ``n``
    is in lane ``(n // block) % lanes``.  The lanes share ``runner`` (its caches and
    locks); interleaving their blocks back gives the frames in order.
    """
    core = vs.core
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
                                    selector=_Lane(runner, lane, block, cycle, n))
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

    def __init__(self, runner: "_Interpolator", lane: int, block: int, cycle: int, num_frames: int) -> None:
        self.runner, self.lane, self.block, self.cycle, self.num_frames = runner, lane, block, cycle, num_frames

    def __call__(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        k = (n // self.block) * self.cycle + self.lane * self.block + n % self.block
        return self.runner(k, f) if k < self.num_frames else f[0].copy()


# ---------------------------------------------------------------------- shared set-up
def _check_scene_args(func: str, scene_detect: object, scene_threshold: object) -> None:
    if not isinstance(scene_detect, bool):
        raise type_error(func, "scene_detect", "True or False", scene_detect)
    if isinstance(scene_threshold, bool) or not isinstance(scene_threshold, (int, float)):
        raise type_error(func, "scene_threshold", "a number in (0, 1]", scene_threshold)
    if not 0 < scene_threshold <= 1:
        raise value_error(func, "scene_threshold", "a number in (0, 1]", scene_threshold)


def _network(func: str, clip: vs.VideoNode, model: object, task: str, default: str, device: object,
             precision: object, scale: object, cpu_policy: object, *,
             compile: bool = False) -> tuple[ModelSpec, torch.device, torch.dtype, torch.nn.Module, bool]:
    """Check ``scale`` (against the clip's frame size too) and ``cpu_policy``, resolve
    model, device and precision, load the network (through ``torch.compile`` when
    ``compile``) and, on the CPU, apply the CPU policy where it is wanted
    (:func:`devices.apply_cpu_policy`).  The last item: whether the node's CPU work pins
    torch's threads."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise type_error(func, "scale", "1.0, 0.5 or 0.25", scale)
    if float(scale) not in (1.0, 0.5, 0.25):
        raise value_error(func, "scale", "1.0, 0.5 or 0.25", scale)
    side = min(clip.width, clip.height)
    if side * float(scale) < 1:  # the analysed frame would be under a pixel
        fits = " or ".join(str(s) for s in (1.0, 0.5) if side * s >= 1)
        raise value_error(func, "scale", f"{fits} for {clip.width}x{clip.height} frames (the motion analysis "
                          f"at {float(scale)} needs frames of at least {round(1 / float(scale))} pixels a side)", scale)
    policy = devices.cpu_policy_wanted(cpu_policy, func=func)
    spec = get_spec(default if model is None else model, task=task, func=func)
    dev = devices.resolve_device(device, func=func)
    dtype = devices.resolve_dtype(precision, device=dev, func=func)
    net = load_model(spec, dev, dtype, func=func)
    policy = policy and dev.type == "cpu"
    if policy:
        devices.apply_cpu_policy()
    if float(scale) != 1.0 and not hasattr(net, "modulo_for"):
        raise value_error(func, "scale", f"1.0 for model {spec.name!r} (it has no motion analysis to scale)", scale)
    if compile:
        net = CompiledNetwork(net, func=func)
    return spec, dev, dtype, net, policy


# ---------------------------------------------------------------------- graph helpers
def _shift(clip: vs.VideoNode, j: int) -> vs.VideoNode:
    """Frame i is source frame min(i + j, last): the j-th neighbour, clamped at the end."""
    if j == 0:
        return clip
    tail = clip[-1] * j
    return clip[j:] + tail if j < clip.num_frames else tail[: clip.num_frames]


def _remap(clip: vs.VideoNode, timeline: Timeline) -> vs.VideoNode:
    """Frame ``k`` of the result is source frame ``floor(k / ratio)`` of ``clip`` (the left
    neighbour of output frame ``k``), for the timeline's output frames.

    The map repeats every ``p`` output frames (``ratio = p/q``: they take ``q`` source
    frames), so for a ``p`` up to :data:`_PERIOD_MAX` one SelectEvery does it; beyond, a
    FrameEval picks each frame.  Either way the graph's size does not grow with the
    clip's length or the factor."""
    core = vs.core
    p, q = timeline.ratio.numerator, timeline.ratio.denominator
    if q == 1:  # SelectEvery's cycle is 2 or more: two periods in one
        p, q = 2 * p, 2
    n = clip.num_frames
    if p <= _PERIOD_MAX:
        total = -(-n // q) * q
        padded = clip + clip[-1] * (total - n) if total > n else clip
        picked = core.std.SelectEvery(padded, cycle=q, offsets=[j * q // p for j in range(p)], modify_duration=False)
        return picked[: timeline.num_frames]
    template = clip[0].std.Loop(times=timeline.num_frames)
    return core.std.FrameEval(template, lambda n: clip[n * q // p])


def _scene_cuts(clip: vs.VideoNode, threshold: float) -> vs.VideoNode:
    """A clip aligned with ``clip`` whose frame i says (prop ``_VsVganCut``) whether a
    scene cut lies between source frames i and i + 1.

    Detector: mean absolute difference of luma thumbnails (about 160 pixels wide, float
    0..1) of neighbouring frames, judged against ``threshold`` and against the
    differences of the pairs on either side.
    """
    core = vs.core
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
    diff = core.std.PlaneStats(small, _shift(small, 1))  # frame i: |thumb_i - thumb_{i+1}|
    prev = diff[0] + diff[:-1]  # frame i: diff of (i-1, i); ignored for i == 0
    nxt = _shift(diff, 1)  # frame i: diff of (i+1, i+2); ignored for i >= n - 2

    def judge(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        d = float(f[1].props["PlaneStatsDiff"]) if n < last else 0.0
        d_prev = float(f[0].props["PlaneStatsDiff"]) if n > 0 else 0.0
        d_next = float(f[2].props["PlaneStatsDiff"]) if n < last - 1 else 0.0
        cut = d > threshold and (d > _SCENE_RATIO * max(d_prev, d_next) or d > _SCENE_STRONG * threshold)
        out = f[1].copy()
        out.props[_CUT_PROP] = int(cut)
        return out

    return core.std.ModifyFrame(diff, clips=[prev, diff, nxt], selector=judge)


def _duration(props: Any) -> Fraction:
    try:
        return Fraction(int(props["_DurationNum"]), int(props["_DurationDen"]))
    except (KeyError, ZeroDivisionError):
        raise ValueError(
            "vs_vgan.interpolate: every frame of a variable-frame-rate clip must carry "
            "_DurationNum/_DurationDen props; got a frame without them"
        ) from None


def _is_cut(left: vs.VideoFrame, right: vs.VideoFrame, cuts: vs.VideoFrame | None) -> bool:
    """A scene cut between two neighbouring frames: their scene-change props when either
    carries one, else ``cuts``' ``_VsVganCut`` prop (the detector's; None: no detector)."""
    lp, rp = left.props, right.props
    if "_SceneChangeNext" in lp or "_SceneChangePrev" in rp:
        return bool(lp.get("_SceneChangeNext", 0)) or bool(rp.get("_SceneChangePrev", 0))
    return cuts is not None and bool(cuts.props[_CUT_PROP])


# ---------------------------------------------------------------------- the callback
_CPU_CORES = threading.BoundedSemaphore(devices.cpu_cores())


class _CpuSlot:
    """Held by CPU network work and frame conversions: one of the process's slots, one per
    core, shared by every node (with one torch thread per call that keeps the cores busy
    and never oversubscribed, however many threads VapourSynth runs and however many
    nodes a script has); with ``pin``, torch's threads pinned on the thread that holds it
    (:func:`devices.pin_cpu_threads`, the CPU policy)."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin

    def __enter__(self) -> "_CpuSlot":
        _CPU_CORES.acquire()
        if self.pin:
            devices.pin_cpu_threads()
        return self

    def __exit__(self, *exc: object) -> None:
        _CPU_CORES.release()


class _ComputeCache:
    """Bounded LRU of computed values (prepared frames, pair states) by source index.

    Concurrent requests for one key compute it once; the others wait for that result.
    A computation that fails is not cached (the next request tries again).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, maxsize)
        self._lock = threading.Lock()
        self._items: OrderedDict[int, Any] = OrderedDict()
        self._pending: dict[int, threading.Event] = {}

    def get(self, key: int, compute: Callable[[], Any]) -> Any:
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
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
            return value
        finally:
            with self._lock:
                del self._pending[key]
            event.set()

    def __len__(self) -> int:
        return len(self._items)


class _Interpolator:
    """ModifyFrame selector: ``f`` is ``[left, right, (cuts), further neighbours...]``.

    Work is shared at two levels: each source frame is converted (and, for models with
    ``prepare``/``pair``, analysed) once, though it belongs to two pairs; each pair's state
    is computed once, however many output frames it yields.  Computations are leaves that
    take a CPU slot only while they run, so waiting for another thread's result never
    holds one.
    """

    def __init__(self, *, net: torch.nn.Module, spec: ModelSpec, timeline: Timeline, device: torch.device,
                 dtype: torch.dtype, bridge: FrameBridge, cache_size: int, has_cut_clip: bool,
                 variable_rate: bool, scale: float = 1.0, cpu_policy: bool = True) -> None:
        self.net = net
        self.slot = _CpuSlot(pin=cpu_policy) if device.type == "cpu" else contextlib.nullcontext()
        self.cuda = device.type == "cuda"
        self.scale = scale
        # models with prepare/pair pad inside and take frames of any size; others are
        # padded here to the spec's and the net's modulo, and cropped back
        self.prepares = callable(getattr(net, "prepare", None)) and callable(getattr(net, "pair", None))
        self.modulo = 1 if self.prepares else math.lcm(spec.modulo, int(getattr(net, "modulo", 1)))
        # YUV and GRAY clips are warped and blended in their own planes (each at its own
        # resolution: 4:2:0 chroma at a quarter of the pixels), with no full-size RGB copy
        self.planar = self.prepares and bridge.planar and callable(getattr(net, "render", None))
        # only motion-analysing models take the scale; others are called as before
        self.encode_kw = {"scale": scale} if scale != 1.0 else {}
        self.timeline = timeline
        self.device = device
        self.dtype = dtype
        self.bridge = bridge
        self.frames = _ComputeCache(cache_size + 1)
        self.pairs = _ComputeCache(cache_size)
        self.has_cut_clip = has_cut_clip
        self.variable_rate = variable_rate
        self.heap = devices.HeapTrimmer()

    def __call__(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        if not self.cuda:
            return self._output(n, f)
        # each VapourSynth thread on its own stream; whatever happens, nothing it queued
        # is still running when the tensors it used are freed (and reused)
        with devices.thread_stream(self.device):
            try:
                return self._output(n, f)
            finally:
                devices.finish_stream(self.device)

    def _output(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        sample = self.timeline.sample(n)
        left, right = f[0], f[1]
        if sample.is_source:
            fout = left.copy()
        elif _is_cut(left, right, f[2] if self.has_cut_clip else None):
            fout = (left if sample.t < Fraction(1, 2) else right).copy()
        else:
            fout = left.copy()
            self._synthesize(sample, left, right, fout)
        if self.variable_rate:
            rest = f[3:] if self.has_cut_clip else f[2:]
            durations = [_duration(x.props) for x in (left, right, *rest)]
            d = self.timeline.duration(n, durations)
        else:
            d = self.timeline.duration(n)
        fout.props["_DurationNum"] = d.numerator
        fout.props["_DurationDen"] = d.denominator
        return fout

    def _synthesize(self, sample: Any, left: vs.VideoFrame, right: vs.VideoFrame, fout: vs.VideoFrame) -> None:
        state = self.pairs.get(sample.left, lambda: self._pair(sample, left, right))
        with torch.inference_mode(), self.slot:
            self.write(self.render(state, float(sample.t), fout.props), fout)

    def render(self, state: Any, t: float, props: Any) -> Any:
        """The network's output at ``t`` for a pair state: plane groups (planar path) or an
        RGB tensor ``(1, 3, H, W)``.  ``props`` (the output frame's) choose the YUV matrix."""
        tt = torch.full((1, 1, 1, 1), t, device=self.device, dtype=self.dtype)
        if self.planar:
            state, planes0, planes1 = state
            flows_t, fine = self.net.fields(state, tt)
            size = (self.bridge.height, self.bridge.width)
            return [self.net.render(flows_t, fine, tt, self.scale, p0, p1, size=size, mix=mix, bounds=bounds)
                    for p0, p1, (mix, bounds) in zip(planes0, planes1, self.bridge.plane_mixes(props))]
        out = self.net.synthesize(state, tt)
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

    def state_of_output(self, out: Any, props: Any) -> Any:
        """The frame state (what :meth:`pair_states` takes) of :meth:`render`'s output or
        of :meth:`frame_data`, so that a prediction can be the context of the next one."""
        if self.planar:
            rgb = self.bridge.planes_to_rgb(out, props, self.scale)
            return self.net.prepare(None, self.scale, analysed=rgb), out
        if self.prepares:
            return self.net.prepare(out, **self.encode_kw)
        return pad_to_modulo(out, self.modulo)[0]

    def pair_states(self, a: Any, b: Any) -> Any:
        """The pair state of two frame states."""
        if self.planar:
            return self.net.pair(a[0], b[0]), a[1], b[1]
        if self.prepares:
            return self.net.pair(a, b)
        return self.net.encode(a, b, **self.encode_kw)

    def frame_data(self, frame: vs.VideoFrame) -> Any:
        """A frame in :meth:`render`'s output form: plane groups or an RGB tensor."""
        return self.bridge.to_planes(frame) if self.planar else self.bridge.to_tensor([frame])

    def _frame(self, index: int, frame: vs.VideoFrame) -> Any:
        def compute() -> Any:
            with torch.inference_mode(), self.slot:
                state = self.state_of_output(self.frame_data(frame), frame.props)
            devices.finish_stream(self.device)  # complete before other threads' streams read it
            return state

        return self.frames.get(index, compute)

    def _pair(self, sample: Any, left: vs.VideoFrame, right: vs.VideoFrame) -> Any:
        a = self._frame(sample.left, left)
        b = self._frame(sample.right, right)
        with torch.inference_mode(), self.slot:
            state = self.pair_states(a, b)
        devices.finish_stream(self.device)
        return state
