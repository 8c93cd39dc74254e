"""Graph wiring of the public nodes: validation, aligned neighbour clips, callbacks, props."""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from typing import Any

import vapoursynth as vs

from . import devices
from .devices import Precision
from .engine import (CUDA_STREAMS, DEFAULT_SCENE_THRESHOLD, Runner, check_scene_args, frame_duration, in_lanes,
                     is_cut, load_network, remap, scene_cuts, shift)
from .errors import type_error, value_error
from .frames import FrameBridge, check_format
from .models import DEFAULT_INTERPOLATION_MODEL, ModelSpec
from .timing import Timeline, resolve_ratio

__all__ = ["interpolate", "Interpolation", "DEFAULT_SCENE_THRESHOLD"]

log = logging.getLogger("vs_vgan")

#: The most consecutive output frames dealt to one lane (about a source pair's frames:
#: each lane then gets synthesized frames, not only copied ones).  Bounded, as the lanes'
#: graph has a node per frame of a block.
_MAX_BLOCK = 8


def interpolate(
    clip: vs.VideoNode,
    /,
    *,
    factor: int | Fraction | str | None = None,
    fps: int | Fraction | str | None = None,
    model: str | ModelSpec | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: Precision = "auto",
    scene_detect: bool = True,
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    scale: float | None = None,
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
        model: a registered interpolation model name (``vs_vgan.models.list_models()`` lists them), a
            :class:`vs_vgan.models.ModelSpec` or the path of a RIFE ``flownet.pkl``
            (:func:`vs_vgan.models.rife`); None is the default model.
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
        scale: analysis scale of motion-compensating models: ``1.0``, ``0.5`` or ``0.25``,
            or None, the model's choice for the frame size (a model trained to analyse a
            given area, :attr:`vs_vgan.models.ModelSpec.analysis_pixels`, takes the largest
            of the three at which the analysed frame has at most that area; others take
            1.0).  Below 1 the motion is estimated on frames downscaled by it (about
            1/scale^2 less network work; output size and sharpness stay, as the full-size
            frames are warped); the faster settings for large frames or slow CPUs (0.25 is
            the one that runs a little faster than MVTools FlowFPS at 720p on two CPU
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
    policy), so that the bytes do not depend on the thread or core count.  YUV and GRAY
    clips are warped and
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
    check_scene_args(func, scene_detect, scene_threshold)
    if num_streams is not None and (isinstance(num_streams, bool) or not isinstance(num_streams, int)):
        raise type_error(func, "num_streams", "None or an int >= 1", num_streams)
    if num_streams is not None and num_streams < 1:
        raise value_error(func, "num_streams", "None or an int >= 1", num_streams)
    if not isinstance(compile, bool):
        raise type_error(func, "compile", "True or False", compile)
    core: Any = vs.core  # its plugin namespaces (std) are untyped
    calls = min(core.num_threads, num_streams or core.num_threads)  # callbacks that can run at once
    network = load_network(func, clip, model, "interpolate", DEFAULT_INTERPOLATION_MODEL, device, precision, scale,
                           cpu_policy, compile=compile)

    timeline = Timeline(clip.num_frames, ratio, src_fps)
    # Aligned neighbours: [left, right] and, for a variable-rate clip whose output frames
    # span more than two source frames (factor < 1), the further ones for the durations.
    neighbours = max(2, timeline.max_overlap()) if src_fps == 0 else 2
    aligned = [remap(shift(clip, j), timeline) for j in range(neighbours)]
    cut_clip = remap(scene_cuts(clip, float(scene_threshold)), timeline) if scene_detect else None

    base = aligned[0]
    if src_fps != 0:
        base = core.std.AssumeFPS(base, fpsnum=out_fps.numerator, fpsden=out_fps.denominator)
    if num_streams is not None:
        lanes = num_streams
    else:
        lanes = devices.cpu_plan(calls)[0] if network.device.type == "cpu" else min(calls, CUDA_STREAMS)
    runner = Runner(network, FrameBridge(fmt, clip.width, clip.height, device=network.device),  # frames in fp32
                    cache_size=min(8, core.num_threads + 2) + 2 * lanes)
    selector = Interpolation(runner, timeline, has_cut_clip=cut_clip is not None, variable_rate=src_fps == 0)
    clips = aligned[:2] + ([cut_clip] if cut_clip is not None else []) + aligned[2:]
    log.debug("interpolate: %r, model %s on %s (%s), %d lane(s)", timeline, network.spec.name, network.device,
              network.dtype, lanes)
    return in_lanes(base, clips, selector, lanes, block=min(max(1, round(ratio)), _MAX_BLOCK))


class Interpolation:
    """``interpolate``'s ModifyFrame selector: ``f`` is ``[left, right, (cuts), further
    neighbours...]`` of output frame ``n``.  A source frame is copied; across a scene cut
    the nearer source frame is shown; otherwise the runner synthesizes the frame at ``t``.
    Each frame gets its duration (from the source frames' for a variable-rate clip)."""

    def __init__(self, runner: Runner, timeline: Timeline, *, has_cut_clip: bool, variable_rate: bool) -> None:
        self.runner, self.timeline = runner, timeline
        self.has_cut_clip, self.variable_rate = has_cut_clip, variable_rate

    def __call__(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        with self.runner.frame_context():
            sample = self.timeline.sample(n)
            left, right = f[0], f[1]
            if sample.is_source:
                fout = left.copy()
            elif is_cut(left, right, f[2] if self.has_cut_clip else None):
                fout = (left if sample.t < Fraction(1, 2) else right).copy()
            else:
                fout = left.copy()
                self.runner.synthesize(sample.left, sample.right, sample.t, left, right, fout)
        if self.variable_rate:
            rest = f[3:] if self.has_cut_clip else f[2:]
            d = self.timeline.duration(n, [frame_duration(x.props) for x in (left, right, *rest)])
        else:
            d = self.timeline.duration(n)
        fout.props["_DurationNum"] = d.numerator
        fout.props["_DurationDen"] = d.denominator
        return fout
