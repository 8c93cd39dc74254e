"""Frame prediction nodes: ``predict``, ``extend`` and ``repair``.

Frame ``n`` is predicted from the ``K = 2`` frames before it
(:mod:`vs_vgan.models.prednet`).  Both nodes share the interpolation node's machinery
(:class:`vs_vgan.engine.Runner`: the frame bridge, planar synthesis of YUV/GRAY,
per-frame and per-pair caches, CPU lanes and slots) and its rules: same format and props
out as in, byte-identical frames whatever the request order or thread count, and nothing
reaches across a scene cut.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Literal, cast

import numpy as np
import torch
import vapoursynth as vs

from . import devices
from .devices import Precision
from .engine import (CUT_PROP, DEFAULT_SCENE_THRESHOLD, ComputeCache, Runner, check_scene_args, in_lanes, is_cut,
                     lagged, load_network, scene_cuts, shift)
from .errors import type_error, value_error
from .frames import FrameBridge, check_format
from .models import DEFAULT_INTERPOLATION_MODEL, DEFAULT_PREDICTION_MODEL, ModelSpec
from .models.contract import CONTEXT
from .models.registry import Task

__all__ = ["predict", "extend", "repair", "DEFAULT_PREDICTION_MODEL", "DEFAULT_DUPLICATE_THRESHOLD", "RepairPlan",
           "plan_repair", "Side"]

log = logging.getLogger("vs_vgan")

#: Where :func:`extend` adds its frames.
Side = Literal["end", "start", "both"]


def _runner(func: str, clip: vs.VideoNode, model: object, device: object, precision: object,
            scale: object, cpu_policy: object, task: Task = "predict") -> Runner:
    """The engine's runner of a prediction (or, for repair's gaps, interpolation) node."""
    fmt = check_format(clip, func=func)
    default = DEFAULT_PREDICTION_MODEL if task == "predict" else DEFAULT_INTERPOLATION_MODEL
    network = load_network(func, clip, model, task, default, device, precision, scale, cpu_policy)
    if task == "predict" and network.spec.capabilities.context != CONTEXT:
        raise value_error(func, "model", f"a prediction model (task 'predict', {CONTEXT} context frames)",
                          network.spec.name)
    return Runner(network, FrameBridge(fmt, clip.width, clip.height, device=network.device),  # frames in fp32
                  cache_size=min(8, vs.core.num_threads + 2) + 2)


def _lanes(runner: Runner) -> int:
    """Lanes of a prediction node: frames side by side on the CPU's cores, one at a time on
    CUDA."""
    return devices.cpu_plan(vs.core.num_threads)[0] if runner.device.type == "cpu" else 1


def predict(
    clip: vs.VideoNode,
    /,
    *,
    model: str | ModelSpec | None = None,
    device: str = "auto",
    precision: Precision = "auto",
    scene_detect: bool = True,
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    scale: float | None = None,
    cpu_policy: bool | None = None,
) -> vs.VideoNode:
    """Each frame predicted from the two before it (a building block, and for measuring).

    Frame ``n >= 2`` is the prediction from frames ``n - 2`` and ``n - 1``; frames 0 and 1
    pass through.  When a scene cut lies between ``n - 2`` and ``n - 1`` (props or the
    detector, as in :func:`vs_vgan.interpolate`) the context holds no motion of the new
    scene and frame ``n - 1`` is repeated.  Same length, rate, format and props (each
    frame keeps its own) as ``clip``.  ``model``: a registered prediction model or a
    :class:`~vs_vgan.models.ModelSpec`; the other arguments (``cpu_policy`` too) are
    those of :func:`vs_vgan.interpolate`.
    """
    func = "predict"
    if not isinstance(clip, vs.VideoNode):
        raise type_error(func, "clip", "a vapoursynth.VideoNode", clip)
    check_scene_args(func, scene_detect, scene_threshold)
    runner = _runner(func, clip, model, device, precision, scale, cpu_policy)
    if clip.num_frames <= CONTEXT:
        return clip
    t = runner.caps.t
    assert t is not None  # a predictor's (_runner checked it is one)
    clips = [lagged(clip, 2), lagged(clip, 1)]
    if scene_detect:
        clips.append(lagged(scene_cuts(clip, float(scene_threshold)), 2))  # cut between n-2 and n-1

    def select(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        own, prev2, prev1 = f[0], f[1], f[2]
        if n < CONTEXT:
            return own.copy()
        fout = own.copy()
        if is_cut(prev2, prev1, f[3] if scene_detect else None):
            for p in range(prev1.format.num_planes):  # repeat frame n - 1 (with this frame's props)
                np.asarray(fout[p])[...] = np.asarray(prev1[p])
            return fout
        with runner.frame_context():
            runner.synthesize(n - 2, n - 1, t, prev2, prev1, fout)
        return fout

    return in_lanes(clip, [clip, *clips], select, _lanes(runner), block=1)


class _Rollout:
    """Predictions fed back: the ``k``-th frame past the clip's edge from the two before it
    (source frames first, then earlier predictions), computed in order.  ``keys``: the
    runner's frame-cache keys of the two context frames.

    Memory stays bounded however far it runs: only the two newest states (the context
    of the next prediction), the last :attr:`keep` outputs, and at most
    :data:`_CHECKPOINTS` checkpoints (the context at every ``spacing``-th step; the
    spacing doubles when they would be more) are kept.  An output no longer kept is
    computed again from the checkpoint before it, to the same bytes: played in order
    (vspipe) nothing is computed twice; played backwards (``side="start"`` in display
    order) each checkpoint's stretch is computed again, once while it is shorter than
    :attr:`keep`."""

    def __init__(self, runner: Runner, keys: tuple[int, int] = (-2, -1), keep: int | None = None) -> None:
        self.runner = runner
        self.keys = keys
        self.keep = keep if keep is not None else _ROLLOUT_KEEP + vs.core.num_threads
        self.lock = threading.Lock()
        self.outputs = ComputeCache(self.keep)  # step -> output, the last `keep` used
        self.context: tuple[Any, Any] | None = None  # the states of steps next - 2 and next - 1
        self.next = 0  # the step the context predicts
        self.checkpoints: dict[int, tuple[Any, Any]] = {}  # step -> the context that predicts it
        self.spacing = 1

    def get(self, k: int, context: list[vs.VideoFrame], still: bool) -> Any:
        """Output ``k`` (0-based away from the clip); ``context`` = [second-nearest, nearest]
        source frames; ``still``: a cut separates them, so the nearest is repeated."""
        r = self.runner
        with self.lock:
            kept = self.outputs.peek(k)
            if kept is not None:
                return kept
            if self.context is None:
                self.context = (r.frame_state(self.keys[0], context[0]), r.frame_state(self.keys[1], context[1]))
                self.checkpoints[0] = self.context
            # onwards from the newest prediction, or an earlier output no longer kept: again
            # from the checkpoint before it
            start = self.next if k >= self.next else max(c for c in self.checkpoints if c <= k)
            ctx = self.context if k >= self.next else self.checkpoints[start]
            for j in range(start, k + 1):
                onwards = j == self.next
                if onwards and j % self.spacing == 0:
                    self._checkpoint(j, ctx)
                out, state = self._step(ctx, context[1], still)
                self.outputs.put(j, out)
                ctx = (ctx[1], state)
                if onwards:
                    self.context, self.next = ctx, j + 1
            return out

    def _step(self, ctx: tuple[Any, Any], nearest: vs.VideoFrame, still: bool) -> tuple[Any, Any]:
        """The output predicted from a context, and its state (the next context's newer half)."""
        r = self.runner
        t = r.caps.t
        assert t is not None  # a predictor's
        with torch.inference_mode(), r.slot:
            if still:
                out = r.frame_data(nearest)
            else:
                out = r.render(r.pair_states(*ctx), t, nearest.props)
            state = r.state_of_output(out, nearest.props)
        devices.finish_stream(r.device)  # complete before another thread's stream reads it
        return out, state

    def _checkpoint(self, step: int, ctx: tuple[Any, Any]) -> None:
        self.checkpoints[step] = ctx
        if len(self.checkpoints) > _CHECKPOINTS:
            self.spacing *= 2
            self.checkpoints = {c: v for c, v in self.checkpoints.items() if c % self.spacing == 0}


#: Outputs a roll-out keeps besides ``core.num_threads`` (frames in flight at once).
_ROLLOUT_KEEP = 8
#: Checkpoints a roll-out keeps at most.
_CHECKPOINTS = 32


def extend(
    clip: vs.VideoNode,
    /,
    *,
    frames: int,
    side: Side = "end",
    model: str | ModelSpec | None = None,
    device: str = "auto",
    precision: Precision = "auto",
    scene_detect: bool = True,
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    scale: float | None = None,
    cpu_policy: bool | None = None,
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
    check_scene_args(func, scene_detect, scene_threshold)
    runner = _runner(func, clip, model, device, precision, scale, cpu_policy)
    if frames == 0:
        return clip
    out = clip
    if side in ("end", "both"):
        out = out + _predicted(clip, runner, frames, forward=True, scene_detect=scene_detect,
                               threshold=float(scene_threshold))
    if side in ("start", "both"):
        out = _predicted(clip, _runner(func, clip, model, device, precision, scale, cpu_policy), frames, forward=False,
                         scene_detect=scene_detect, threshold=float(scene_threshold)) + out
    return out


def _predicted(clip: vs.VideoNode, runner: Runner, frames: int, *, forward: bool, scene_detect: bool,
               threshold: float) -> vs.VideoNode:
    """``frames`` predicted frames past the end (``forward``) or before the start (in
    display order), as a clip."""
    core: Any = vs.core  # its plugin namespaces (std) are untyped
    near, far = (clip[-1], clip[-2]) if forward else (clip[0], clip[1])
    clips = [far * frames, near * frames]
    if scene_detect:
        pair = (far + near) if forward else (near + far)
        cuts = scene_cuts(pair, threshold)[0]  # frame 0: a cut between the two context frames?
        clips.append(cuts * frames)
    rollout = _Rollout(runner)
    fps = Fraction(clip.fps.numerator, clip.fps.denominator)

    def select(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        k = n if forward else frames - 1 - n  # steps away from the clip
        far_f, near_f = f[0], f[1]
        earlier, later = (far_f, near_f) if forward else (near_f, far_f)
        still = is_cut(earlier, later, f[2] if scene_detect else None)
        out = rollout.get(k, [far_f, near_f], still)
        fout = near_f.copy()
        with torch.inference_mode(), runner.slot:
            runner.write(out, fout)
        d = 1 / fps if fps else Fraction(int(cast(int, near_f.props["_DurationNum"])),
                                         int(cast(int, near_f.props["_DurationDen"])))
        fout.props["_DurationNum"], fout.props["_DurationDen"] = d.numerator, d.denominator
        for key in ("_SceneChangeNext", "_SceneChangePrev"):
            if key in fout.props:
                del fout.props[key]
        return fout

    return core.std.ModifyFrame(clips[1], clips=clips, selector=select)


# ---------------------------------------------------------------------- repair
#: Default of ``repair(threshold=)``: mean absolute luma difference (0..1) to the previous
#: frame at or below which a frame may be a repeat of it.
DEFAULT_DUPLICATE_THRESHOLD = 0.002
#: ... and it is one when that difference is also at most this share of the larger of the
#: differences around it (a still scene, where every difference is small, is left alone).
_DUP_RATIO = 0.25
#: Roll-outs ``repair`` keeps besides ``core.num_threads`` (one per bad run near the frames in flight).
_REPAIR_ROLLOUTS = 4
_DIFF_PROP = "PlaneStatsDiff"  # on the annotated copies only; the output keeps the source's props


def _annotated(clip: vs.VideoNode, scene_detect: bool, scene_threshold: float) -> vs.VideoNode:
    """``clip`` with ``PlaneStatsDiff`` (mean absolute luma difference to the previous
    frame, 0 for frame 0) and, when detecting, ``_VsVganCut`` (a cut after this frame) props."""
    core: Any = vs.core  # its plugin namespaces (std, resize) are untyped
    fam = clip.format.color_family
    if fam == vs.YUV:
        luma = core.std.ShufflePlanes(clip, 0, vs.GRAY)
    elif fam == vs.RGB:
        luma = core.resize.Point(clip, format=vs.GRAYS, matrix_s="709")
    else:
        luma = clip
    stats = core.std.PlaneStats(luma, lagged(luma, 1))
    out = core.std.CopyFrameProps(clip, stats, props=["PlaneStatsDiff"])
    if scene_detect:
        out = core.std.CopyFrameProps(out, scene_cuts(clip, scene_threshold), props=[CUT_PROP])
    return out


def _shifted(clip: vs.VideoNode, j: int) -> vs.VideoNode:
    """Frame i is frame clamp(i + j) of ``clip``."""
    return lagged(clip, -j) if j < 0 else shift(clip, j)


def repair(
    clip: vs.VideoNode,
    /,
    *,
    frames: Iterable[int] | None = None,
    duplicates: bool = False,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    max_run: int = 4,
    model: str | ModelSpec | os.PathLike[str] | None = None,
    predict_model: str | ModelSpec | None = None,
    device: str = "auto",
    precision: Precision = "auto",
    scene_detect: bool = True,
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    scale: float | None = None,
    cpu_policy: bool | None = None,
) -> vs.VideoNode:
    """``clip`` with bad frames rebuilt at their own time position; length, rate, props
    and durations unchanged.

    Bad frames: the ``frames`` listed, and with ``duplicates=True`` every frame that
    repeats its predecessor, as in captures with dropped frames (its mean absolute luma
    difference to the previous frame is at most ``threshold`` and at most a quarter of the
    differences around it, so that a still scene is not taken for repeats).  A run of
    consecutive bad frames (at most ``max_run`` long; longer runs are left as they are and
    logged) is rebuilt from the nearest good frames around it: interpolated between them
    (``model``, an interpolation model) at ``t = 1/(k+1) ... k/(k+1)`` for ``k`` bad frames
    (1/3 and 2/3 for two); predicted forward from the two good frames before it
    (``predict_model``) where no good frame follows in the same scene (the end of the
    clip, or a scene cut after the run), and backwards from the two after it where no
    good frame precedes it in the same scene (the start of the clip, or a cut before the
    run).  Nothing reaches across a scene cut: a bad frame is rebuilt only from good
    frames of its own scene (with a cut inside a run, each side from its own), and left
    as it is when its scene has no good frame within reach.
    """
    func = "repair"
    if not isinstance(clip, vs.VideoNode):
        raise type_error(func, "clip", "a vapoursynth.VideoNode", clip)
    n_frames = clip.num_frames
    listed = _check_frames(func, frames, n_frames)
    if not isinstance(duplicates, bool):
        raise type_error(func, "duplicates", "True or False", duplicates)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise type_error(func, "threshold", "a number in [0, 1)", threshold)
    if not 0 <= threshold < 1:
        raise value_error(func, "threshold", "a number in [0, 1)", threshold)
    if isinstance(max_run, bool) or not isinstance(max_run, int):
        raise type_error(func, "max_run", "an int >= 1", max_run)
    if max_run < 1:
        raise value_error(func, "max_run", "an int >= 1", max_run)
    check_scene_args(func, scene_detect, scene_threshold)
    if n_frames < 2:
        raise value_error(func, "clip", "at least 2 frames long", clip)
    interp = _runner(func, clip, model, device, precision, scale, cpu_policy, task="interpolate")
    pred = _runner(func, clip, predict_model, device, precision, scale, cpu_policy)
    if not listed and not duplicates:
        return clip
    width = max_run + 2
    annotated = _annotated(clip, scene_detect, float(scene_threshold))
    window = [_shifted(annotated, j) for j in range(-width, width + 1)]
    # (anchor, forward) -> its roll-out: a few runs' (a run is rebuilt in one go), older ones dropped
    rollouts = ComputeCache(_REPAIR_ROLLOUTS + vs.core.num_threads)
    warned: list[int] = []

    def select(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        def frame(i: int) -> vs.VideoFrame:
            return f[1 + width + i - n]

        def diff(i: int) -> float:
            return float(cast(float, frame(i).props[_DIFF_PROP])) if 1 <= i < n_frames else 0.0

        def bad(i: int) -> bool:
            if not 0 <= i < n_frames:
                return False
            if i in listed:
                return True
            if not duplicates or i == 0:
                return False
            d = diff(i)
            return d <= threshold and d <= _DUP_RATIO * max(diff(i - 1), diff(i + 1))

        def cut_after(i: int) -> bool:  # the annotated frame i carries the detector's verdict
            return is_cut(frame(i), frame(i + 1), frame(i) if scene_detect else None)

        fout = f[0].copy()  # the source frame, with its own props
        plan = plan_repair(n, n_frames, bad, cut_after, max_run)
        if plan.how == "too-long" and not warned:
            warned.append(n)
            log.warning("repair: more than %d bad frames in a row around frame %d; left as they are "
                        "(raise max_run)", max_run, n)
        if plan.how == "interpolate":
            left, right = plan.keys
            with interp.frame_context():
                interp.synthesize(left, right, plan.t, frame(left), frame(right), fout)
            return fout
        if plan.how not in ("forward", "backward"):
            return fout
        rollout = rollouts.get((plan.keys[1], plan.how == "forward"), lambda: _Rollout(pred, plan.keys, keep=max_run))
        out = rollout.get(plan.step, [frame(i) for i in plan.keys], plan.still)
        with torch.inference_mode(), pred.slot:
            pred.write(out, fout)
        return fout

    # the caches and roll-outs are shared by the lanes, and locked where they are filled
    return in_lanes(clip, [clip, *window], select, _lanes(pred), block=1)


@dataclass(frozen=True)
class RepairPlan:
    """How :func:`repair` rebuilds one frame (:func:`plan_repair`).

    ``how``: ``"keep"`` (not bad), ``"too-long"`` (its run is longer than ``max_run``: left
    as it is), ``"alone"`` (no good frame of its scene within reach: left as it is),
    ``"interpolate"`` between ``keys`` = (left, right) at ``t``, or ``"forward"`` /
    ``"backward"``: step ``step`` (0-based away from the context) of the roll-out from
    ``keys`` = (second-nearest, nearest) good frames, with ``still`` when there is no motion
    to extend (the second-nearest is bad, beyond the clip or across a cut: the nearest
    is repeated)."""

    how: Literal["keep", "too-long", "alone", "interpolate", "forward", "backward"]
    keys: tuple[int, int] = (0, 0)
    t: Fraction = Fraction(0)
    step: int = 0
    still: bool = False


def plan_repair(n: int, n_frames: int, bad: Callable[[int], bool], cut_after: Callable[[int], bool],
                max_run: int) -> RepairPlan:
    """What :func:`repair` does for frame ``n`` of ``n_frames``, given which frames are bad
    (``bad(i)``, False outside the clip) and where scenes are cut (``cut_after(i)``: a cut
    between ``i`` and ``i + 1``).  Pure: no frames, no network."""
    if not bad(n):
        return RepairPlan("keep")
    first = last = n
    while first - 1 >= 0 and bad(first - 1) and last - first + 1 <= max_run:
        first -= 1
    while last + 1 < n_frames and bad(last + 1) and last - first + 1 <= max_run:
        last += 1
    if last - first + 1 > max_run:
        return RepairPlan("too-long")
    left, right = first - 1, last + 1
    # the good frames around the run that lie in frame n's scene (no cut between)
    left_ok = left >= 0 and not any(cut_after(i) for i in range(left, n))
    right_ok = right < n_frames and not any(cut_after(i) for i in range(n, right))
    if left_ok and right_ok:
        return RepairPlan("interpolate", (left, right), t=Fraction(n - left, right - left))
    if left_ok:  # predict forward from (left - 1, left)
        far = left - 1
        return RepairPlan("forward", (max(far, 0), left), step=n - left - 1,
                          still=far < 0 or bad(far) or cut_after(far))
    if right_ok:  # the run starts its scene (or the clip): predict backwards from (right + 1, right)
        far = right + 1
        return RepairPlan("backward", (min(far, n_frames - 1), right), step=right - n - 1,
                          still=far >= n_frames or bad(far) or cut_after(right))
    return RepairPlan("alone")


def _check_frames(func: str, frames: object, n_frames: int) -> frozenset[int]:
    if frames is None:
        return frozenset()
    if isinstance(frames, (str, bytes)) or not isinstance(frames, Iterable):
        raise type_error(func, "frames", "a list of frame numbers", frames)
    out = set()
    for x in frames:
        if isinstance(x, bool) or not isinstance(x, int):
            raise type_error(func, "frames", "a list of frame numbers (ints)", frames)
        if not 0 <= x < n_frames:
            raise value_error(func, "frames", f"frame numbers in [0, {n_frames - 1}]", x)
        out.add(x)
    return frozenset(out)
