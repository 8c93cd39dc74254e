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
_CUT_PROP = "_VsVganCut"


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
        precision: ``"auto"`` (fp16 for half-float clips on CUDA, else fp32), ``"fp32"``,
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
            are warped); the faster setting for large frames or slow CPUs.  Models without
            motion analysis (``"blend"``) accept only 1.0.

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
    ratio, out_fps = resolve_ratio(src_fps, factor=factor, fps=fps, func=func)
    if not isinstance(scene_detect, bool):
        raise type_error(func, "scene_detect", "True or False", scene_detect)
    if isinstance(scene_threshold, bool) or not isinstance(scene_threshold, (int, float)):
        raise type_error(func, "scene_threshold", "a number in (0, 1]", scene_threshold)
    if not 0 < scene_threshold <= 1:
        raise value_error(func, "scene_threshold", "a number in (0, 1]", scene_threshold)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise type_error(func, "scale", "1.0, 0.5 or 0.25", scale)
    if float(scale) not in (1.0, 0.5, 0.25):
        raise value_error(func, "scale", "1.0, 0.5 or 0.25", scale)
    spec = get_spec(DEFAULT_INTERPOLATION_MODEL if model is None else model, task="interpolate", func=func)
    dev = devices.resolve_device(device, func=func)
    dtype = devices.resolve_dtype(
        precision, device=dev, clip_is_half=(fmt.sample_type == vs.FLOAT and fmt.bits_per_sample == 16), func=func
    )
    net = load_model(spec, dev, dtype, func=func)
    if float(scale) != 1.0 and not hasattr(net, "modulo_for"):
        raise value_error(func, "scale", f"1.0 for model {spec.name!r} (it has no motion analysis to scale)", scale)

    core = vs.core
    timeline = Timeline(clip.num_frames, ratio, src_fps)
    counts = timeline.left_counts()
    # Aligned neighbours: [left, right] and, for a variable-rate clip whose output frames
    # span more than two source frames (factor < 1), the further ones for the durations.
    neighbours = max(2, timeline.max_overlap()) if src_fps == 0 else 2
    aligned = [_remap(_shift(clip, j), counts) for j in range(neighbours)]
    cut_clip = _remap(_scene_cuts(clip, float(scene_threshold)), counts) if scene_detect else None

    base = aligned[0]
    if src_fps != 0:
        base = core.std.AssumeFPS(base, fpsnum=out_fps.numerator, fpsden=out_fps.denominator)
    runner = _Interpolator(
        net=net, spec=spec, timeline=timeline, device=dev, dtype=dtype,
        bridge=FrameBridge(fmt, clip.width, clip.height, device=dev, dtype=dtype),
        cache_size=min(8, core.num_threads + 2), has_cut_clip=cut_clip is not None,
        variable_rate=src_fps == 0, scale=float(scale),
    )
    clips = aligned[:2] + ([cut_clip] if cut_clip is not None else []) + aligned[2:]
    log.debug("interpolate: %r, model %s on %s (%s)", timeline, spec.name, dev, dtype)
    return core.std.ModifyFrame(base, clips=clips, selector=runner)


# ---------------------------------------------------------------------- graph helpers
def _shift(clip: vs.VideoNode, j: int) -> vs.VideoNode:
    """Frame i is source frame min(i + j, last): the j-th neighbour, clamped at the end."""
    if j == 0:
        return clip
    tail = clip[-1] * j
    return clip[j:] + tail if j < clip.num_frames else tail[: clip.num_frames]


def _remap(clip: vs.VideoNode, counts: Sequence[int]) -> vs.VideoNode:
    """Frame k of the result is frame i of ``clip`` for the k-th of ``counts[i]`` repeats."""
    drop = [i for i, c in enumerate(counts) if c == 0]
    if drop:
        clip = clip.std.DeleteFrames(frames=drop)
    dup = [j for j, c in enumerate(c for c in counts if c) for _ in range(c - 1)]
    if dup:
        clip = clip.std.DuplicateFrames(frames=dup)
    return clip


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


# ---------------------------------------------------------------------- the callback
# On the CPU one network call at a time: each call already spreads over torch's intra-op
# threads, and VapourSynth runs callbacks on core.num_threads threads at once, so calls in
# parallel would put (VS threads x torch threads) busy threads on the cores.  The frame
# conversions around the calls still run in parallel.
_CPU_NET_LOCK = threading.Lock()


class _PairCache:
    """Bounded LRU of per-pair network states keyed by the left source index.

    Concurrent requests for one key compute it once; the others wait for that result.
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
    """ModifyFrame selector: ``f`` is ``[left, right, (cuts), further neighbours...]``."""

    def __init__(self, *, net: torch.nn.Module, spec: ModelSpec, timeline: Timeline, device: torch.device,
                 dtype: torch.dtype, bridge: FrameBridge, cache_size: int, has_cut_clip: bool,
                 variable_rate: bool, scale: float = 1.0) -> None:
        self.net = net
        self.net_lock = _CPU_NET_LOCK if device.type == "cpu" else contextlib.nullcontext()
        self.scale = scale
        net_modulo = net.modulo_for(scale) if hasattr(net, "modulo_for") else int(getattr(net, "modulo", 1))
        self.modulo = math.lcm(spec.modulo, int(net_modulo))
        # only motion-analysing models take the scale; others are called as before
        self.encode_kw = {"scale": scale} if scale != 1.0 else {}
        self.timeline = timeline
        self.device = device
        self.dtype = dtype
        self.bridge = bridge
        self.pairs = _PairCache(cache_size)
        self.has_cut_clip = has_cut_clip
        self.variable_rate = variable_rate

    def __call__(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        sample = self.timeline.sample(n)
        left, right = f[0], f[1]
        if sample.is_source:
            fout = left.copy()
        elif self._is_cut(left, right, f[2] if self.has_cut_clip else None):
            fout = (left if sample.t < Fraction(1, 2) else right).copy()
        else:
            fout = left.copy()
            self.bridge.write(self._synthesize(sample.left, left, right, sample.t), fout)
        if self.variable_rate:
            rest = f[3:] if self.has_cut_clip else f[2:]
            durations = [_duration(x.props) for x in (left, right, *rest)]
            d = self.timeline.duration(n, durations)
        else:
            d = self.timeline.duration(n)
        fout.props["_DurationNum"] = d.numerator
        fout.props["_DurationDen"] = d.denominator
        return fout

    @staticmethod
    def _is_cut(left: vs.VideoFrame, right: vs.VideoFrame, cuts: vs.VideoFrame | None) -> bool:
        lp, rp = left.props, right.props
        if "_SceneChangeNext" in lp or "_SceneChangePrev" in rp:
            return bool(lp.get("_SceneChangeNext", 0)) or bool(rp.get("_SceneChangePrev", 0))
        return cuts is not None and bool(cuts.props[_CUT_PROP])

    def _synthesize(self, key: int, left: vs.VideoFrame, right: vs.VideoFrame, t: Fraction) -> torch.Tensor:
        state, crop = self.pairs.get(key, lambda: self._encode(left, right))
        with torch.inference_mode():
            tt = torch.full((1, 1, 1, 1), float(t), device=self.device, dtype=self.dtype)
            with self.net_lock:
                out = self.net.synthesize(state, tt)
            return crop(out)[0]

    def _encode(self, left: vs.VideoFrame, right: vs.VideoFrame) -> tuple[Any, Callable]:
        with torch.inference_mode():
            pair, crop = pad_to_modulo(self.bridge.to_tensor([left, right]), self.modulo)
            with self.net_lock:
                state = self.net.encode(pair[0:1], pair[1:2], **self.encode_kw)
            return state, crop
