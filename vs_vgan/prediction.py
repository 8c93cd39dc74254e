"""Frame prediction nodes: ``predict`` and ``extend`` (``repair`` follows).

Frame ``n`` is predicted from the ``K = 2`` frames before it
(:mod:`vs_vgan.models.prednet`).  Both nodes share the interpolation node's machinery
(:class:`vs_vgan.nodes._Interpolator`: the frame bridge, planar synthesis of YUV/GRAY,
per-frame and per-pair caches, CPU lanes and slots) and its rules: same format and props
out as in, byte-identical frames whatever the request order or thread count, and nothing
reaches across a scene cut.
"""
from __future__ import annotations

import threading
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np
import torch
import vapoursynth as vs

from . import devices
from .errors import type_error, value_error
from .frames import FrameBridge, check_format
from .models.prednet import CONTEXT
from .nodes import (DEFAULT_SCENE_THRESHOLD, _check_scene_args, _Interpolator, _in_lanes, _network, _scene_cuts,
                    _CUT_PROP)

__all__ = ["predict", "extend", "DEFAULT_PREDICTION_MODEL"]

#: The registered prediction model used when ``model`` is None.
DEFAULT_PREDICTION_MODEL = "vgan-predict-v1"

#: Where a predicted frame lies on its context pair's time axis (n-2 at 0, n-1 at 1).
_T = 2.0


class _Step(NamedTuple):
    """What :meth:`_Interpolator._synthesize` needs of a sample: the pair and ``t``."""
    left: int
    right: int
    t: float


def _runner(func: str, clip: vs.VideoNode, model: object, device: object, precision: object,
            scale: object) -> _Interpolator:
    fmt = check_format(clip, func=func)
    spec, dev, dtype, net = _network(func, fmt, model, "predict", DEFAULT_PREDICTION_MODEL, device, precision, scale)
    if not hasattr(net, "predict_state"):
        raise value_error(func, "model", "a prediction model (task 'predict')", spec.name)
    core = vs.core
    return _Interpolator(net=net, spec=spec, timeline=None, device=dev, dtype=dtype,
                         bridge=FrameBridge(fmt, clip.width, clip.height, device=dev, dtype=dtype),
                         cache_size=min(8, core.num_threads + 2) + 2, has_cut_clip=False, variable_rate=False,
                         scale=float(scale))


def _lagged(clip: vs.VideoNode, j: int) -> vs.VideoNode:
    """Frame i is source frame max(i - j, 0)."""
    return clip[0] * j + clip[:-j] if j < clip.num_frames else clip[0] * clip.num_frames


def predict(
    clip: vs.VideoNode,
    /,
    *,
    model: Any = None,
    device: str = "auto",
    precision: str = "auto",
    scene_detect: bool = True,
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    scale: float = 1.0,
) -> vs.VideoNode:
    """Each frame predicted from the two before it (a building block, and for measuring).

    Frame ``n >= 2`` is the prediction from frames ``n - 2`` and ``n - 1``; frames 0 and 1
    pass through.  When a scene cut lies between ``n - 2`` and ``n - 1`` (props or the
    detector, as in :func:`vs_vgan.interpolate`) the context holds no motion of the new
    scene and frame ``n - 1`` is repeated.  Same length, rate, format and props (each
    frame keeps its own) as ``clip``.  ``model``: a registered prediction model or a
    :class:`~vs_vgan.models.ModelSpec`; the other arguments are those of
    :func:`vs_vgan.interpolate`.
    """
    func = "predict"
    if not isinstance(clip, vs.VideoNode):
        raise type_error(func, "clip", "a vapoursynth.VideoNode", clip)
    _check_scene_args(func, scene_detect, scene_threshold)
    runner = _runner(func, clip, model, device, precision, scale)
    if clip.num_frames <= CONTEXT:
        return clip
    clips = [_lagged(clip, 2), _lagged(clip, 1)]
    if scene_detect:
        clips.append(_lagged(_scene_cuts(clip, float(scene_threshold)), 2))  # cut between n-2 and n-1

    def select(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        own, prev2, prev1 = f[0], f[1], f[2]
        if n < CONTEXT:
            return own.copy()
        fout = own.copy()
        if _cut(prev2, prev1, f[3] if scene_detect else None):
            for p in range(prev1.format.num_planes):  # repeat frame n - 1 (with this frame's props)
                np.asarray(fout[p])[...] = np.asarray(prev1[p])
            return fout
        runner._synthesize(_Step(n - 2, n - 1, _T), prev2, prev1, fout)
        return fout

    lanes = devices.cpu_plan(vs.core.num_threads)[0] if runner.device.type == "cpu" else 1
    if lanes == 1:
        return vs.core.std.ModifyFrame(clip, clips=[clip, *clips], selector=select)
    return _in_lanes(clip, [clip, *clips], select, lanes, block=1)


def _cut(prev2: vs.VideoFrame, prev1: vs.VideoFrame, cuts: vs.VideoFrame | None) -> bool:
    lp, rp = prev2.props, prev1.props
    if "_SceneChangeNext" in lp or "_SceneChangePrev" in rp:
        return bool(lp.get("_SceneChangeNext", 0)) or bool(rp.get("_SceneChangePrev", 0))
    return cuts is not None and bool(cuts.props[_CUT_PROP])


class _Rollout:
    """Predictions fed back: ``k``-th frame past the clip's edge from the two before it
    (source frames first, then earlier predictions), computed in order once and kept."""

    def __init__(self, runner: _Interpolator, frames: int) -> None:
        self.runner = runner
        self.frames = frames
        self.lock = threading.Lock()
        self.outputs: list[Any] = []
        self.states: list[Any] = []

    def get(self, k: int, context: list[vs.VideoFrame], still: bool) -> Any:
        """Output ``k`` (0-based away from the clip); ``context`` = [second-nearest, nearest]
        source frames; ``still``: a cut separates them, so the nearest is repeated."""
        r = self.runner
        with self.lock:
            if not self.states:
                self.states = [r._frame(-2, context[0]), r._frame(-1, context[1])]
            while len(self.outputs) <= k:
                j = len(self.outputs)
                with torch.inference_mode(), r.slot:
                    if still:
                        out = self._still(context[1])
                    else:
                        state = r.pair_states(self.states[j], self.states[j + 1])
                        out = r.render(state, _T, context[1].props)
                    self.outputs.append(out)
                    self.states.append(r.state_of_output(out, context[1].props))
            return self.outputs[k]

    def _still(self, frame: vs.VideoFrame) -> Any:
        r = self.runner
        if r.planar:
            return r.bridge.to_planes(frame)
        return r.bridge.to_tensor([frame])


def extend(
    clip: vs.VideoNode,
    /,
    *,
    frames: int,
    side: str = "end",
    model: Any = None,
    device: str = "auto",
    precision: str = "auto",
    scene_detect: bool = True,
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    scale: float = 1.0,
) -> vs.VideoNode:
    """``clip`` with ``frames`` predicted frames appended at the ``"end"``, the
    ``"start"`` (predicted backwards in time) or ``"both"``.

    Autoregressive: the first new frame is predicted from the clip's last two frames (first
    two, backwards), each further one from the two before it, predictions included.  The
    new frames have the clip's format and the props of the nearest source frame, with
    durations of ``1 / fps`` (the nearest frame's duration for a variable-rate clip).
    With a scene cut between the two context frames there is no motion to extend, and the
    nearest frame is repeated.  Needs at least 2 frames.
    """
    func = "extend"
    if not isinstance(clip, vs.VideoNode):
        raise type_error(func, "clip", "a vapoursynth.VideoNode", clip)
    if isinstance(frames, bool) or not isinstance(frames, int):
        raise type_error(func, "frames", "an int >= 0", frames)
    if frames < 0:
        raise value_error(func, "frames", "an int >= 0", frames)
    if side not in ("end", "start", "both"):
        raise value_error(func, "side", "'end', 'start' or 'both'", side)
    if clip.num_frames < CONTEXT:
        raise value_error(func, "clip", f"at least {CONTEXT} frames long (the context of a prediction)", clip)
    _check_scene_args(func, scene_detect, scene_threshold)
    runner = _runner(func, clip, model, device, precision, scale)
    if frames == 0:
        return clip
    out = clip
    if side in ("end", "both"):
        out = out + _predicted(clip, runner, frames, forward=True, scene_detect=scene_detect,
                               threshold=float(scene_threshold))
    if side in ("start", "both"):
        out = _predicted(clip, _runner(func, clip, model, device, precision, scale), frames, forward=False,
                         scene_detect=scene_detect, threshold=float(scene_threshold)) + out
    return out


def _predicted(clip: vs.VideoNode, runner: _Interpolator, frames: int, *, forward: bool, scene_detect: bool,
               threshold: float) -> vs.VideoNode:
    """``frames`` predicted frames past the end (``forward``) or before the start (in
    display order), as a clip."""
    core = vs.core
    near, far = (clip[-1], clip[-2]) if forward else (clip[0], clip[1])
    clips = [far * frames, near * frames]
    if scene_detect:
        pair = (far + near) if forward else (near + far)
        cuts = _scene_cuts(pair, threshold)[0]  # frame 0: a cut between the two context frames?
        clips.append(cuts * frames)
    rollout = _Rollout(runner, frames)
    fps = Fraction(clip.fps.numerator, clip.fps.denominator)

    def select(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        k = n if forward else frames - 1 - n  # steps away from the clip
        far_f, near_f = f[0], f[1]
        earlier, later = (far_f, near_f) if forward else (near_f, far_f)
        still = _cut(earlier, later, f[2] if scene_detect else None)
        out = rollout.get(k, [far_f, near_f], still)
        fout = near_f.copy()
        with torch.inference_mode(), runner.slot:
            runner.write(out, fout)
        d = 1 / fps if fps else Fraction(int(near_f.props["_DurationNum"]), int(near_f.props["_DurationDen"]))
        fout.props["_DurationNum"], fout.props["_DurationDen"] = d.numerator, d.denominator
        for key in ("_SceneChangeNext", "_SceneChangePrev"):
            if key in fout.props:
                del fout.props[key]
        return fout

    return core.std.ModifyFrame(clips[1], clips=clips, selector=select)
