"""What a demanding user does to the nodes: thread counts, non-finite samples, cuts next
to bad frames, long runs, absurd factors and tiny frames (issue 13's probe)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import vapoursynth as vs

import vs_vgan
from conftest import fetch_in_random_order, frame_bytes, moving

core = vs.core


def _render(clip: vs.VideoNode) -> list[bytes]:
    return [frame_bytes(f) for f in clip.frames()]


# ---------------------------------------------------------------------- determinism
@pytest.mark.parametrize("fmt, kind", [(vs.RGBS, "fps"), (vs.YUV420P8, "factor"), (vs.RGB24, "extend")])
def test_bytes_do_not_depend_on_thread_counts_or_later_nodes(tiny_flow, tiny_predictor, threads, fmt, kind):
    """core.num_threads 1, 2 and 8, and a node made later with other settings (which
    used to reset torch's process-wide thread count), give the same bytes."""
    src = moving(fmt, length=6, width=320, height=180, speed=2.5)

    def make() -> vs.VideoNode:
        if kind == "extend":
            return vs_vgan.extend(src, frames=4, model=tiny_predictor, device="cpu")
        conv = {"fps": "60000/1001"} if kind == "fps" else {"factor": "5/2"}
        return vs_vgan.interpolate(src, **conv, model=tiny_flow, device="cpu")

    before = torch.get_num_threads()
    try:
        threads(1)
        ref = _render(make())
        for n in (2, 8):
            threads(n)
            assert _render(make()) == ref, n
        threads(2)
        first = make()
        threads(1)
        vs_vgan.interpolate(src, factor=2, model=tiny_flow, device="cpu", num_streams=1)  # a later node
        threads(2)
        assert _render(first) == ref
        torch.set_num_threads(2)  # another plugin or the script changes torch's threads
        assert _render(make()) == ref
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------- repair across cuts
def _cut_clip(props: bool) -> vs.VideoNode:
    """A moving pattern cut to its inverse after frame 32 (``clip = S[:33] + Invert(S[33:])``),
    the cut found by the detector or marked by ``_SceneChangePrev`` on frame 33."""
    s = moving(vs.RGB24, length=45, width=64, height=48, speed=1.5)
    clip = s[:33] + core.std.Invert(s[33:])[:12]
    if props:
        clip = clip[:33] + core.std.SetFrameProps(clip[33], _SceneChangePrev=1) + clip[34:]
    return clip


@pytest.mark.parametrize("props", [False, True], ids=["detector", "props"])
def test_repair_after_a_cut_rebuilds_from_its_own_scene(tiny_flow, tiny_predictor, props):
    """A bad frame just after a cut is predicted backwards from the frames after it, as
    at the clip's start; a run spanning the cut rebuilds each side from its own scene."""
    clip = _cut_clip(props)
    kw = dict(model=tiny_flow, predict_model=tiny_predictor, device="cpu", scene_detect=not props)
    out = vs_vgan.repair(clip, frames=[33], **kw)
    at_start = vs_vgan.repair(clip[33:], frames=[0], **kw)
    assert frame_bytes(out.get_frame(33)) == frame_bytes(at_start.get_frame(0))
    a, b = (np.asarray(out.get_frame(33)[0], dtype=float), np.asarray(clip.get_frame(32)[0], dtype=float))
    assert np.abs(a - b).mean() > 40  # not the previous scene (the inverse pattern)

    run = vs_vgan.repair(clip, frames=[33, 34], **kw)  # both after the cut: backwards from 36, 35
    two_at_start = vs_vgan.repair(clip[33:], frames=[0, 1], **kw)
    for n in (33, 34):
        assert frame_bytes(run.get_frame(n)) == frame_bytes(two_at_start.get_frame(n - 33)), n

    span = vs_vgan.repair(clip, frames=[32, 33], **kw)  # 32 before the cut, 33 after it
    at_end = vs_vgan.repair(clip[:33], frames=[32], **kw)
    assert frame_bytes(span.get_frame(32)) == frame_bytes(at_end.get_frame(32))
    assert frame_bytes(span.get_frame(33)) == frame_bytes(at_start.get_frame(0))


def test_repair_of_a_frame_alone_in_its_scene_leaves_it(tiny_flow, tiny_predictor):
    s = moving(vs.RGB24, length=12, width=64, height=48)
    alone = core.std.SetFrameProps(core.std.Invert(s[5:6]), _SceneChangePrev=1, _SceneChangeNext=1)
    clip = s[:5] + alone + s[6:]  # frame 5 is a scene of its own
    out = vs_vgan.repair(clip, frames=[5], model=tiny_flow, predict_model=tiny_predictor, device="cpu")
    assert frame_bytes(out.get_frame(5)) == frame_bytes(clip.get_frame(5))


# ---------------------------------------------------------------------- bounded roll-outs
@pytest.fixture
def rollouts(monkeypatch):
    """The prediction roll-outs made during a test that are still alive (a weak set)."""
    import gc
    import weakref

    from vs_vgan import prediction

    made: weakref.WeakSet = weakref.WeakSet()

    class Tracked(prediction._Rollout):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.add(self)

    monkeypatch.setattr(prediction, "_Rollout", Tracked)

    def alive() -> list:
        gc.collect()
        return list(made)

    return alive


def test_extend_keeps_a_bounded_rollout_and_recomputes_the_same_bytes(tiny_predictor, monkeypatch, rollouts):
    """A long roll-out keeps the newest context, a few outputs and a bounded number of
    checkpoints; outputs no longer kept come back byte-identical, in any order."""
    from vs_vgan import prediction

    src = moving(vs.RGB24, length=4, width=64, height=48)
    kw = dict(frames=60, model=tiny_predictor, device="cpu")
    monkeypatch.setattr(prediction, "_ROLLOUT_KEEP", 1000)  # keep everything: the reference
    monkeypatch.setattr(prediction, "_CHECKPOINTS", 1000)
    ref_end = _render(vs_vgan.extend(src, side="end", **kw))
    ref_start = _render(vs_vgan.extend(src, side="start", **kw))
    monkeypatch.setattr(prediction, "_ROLLOUT_KEEP", 2)
    monkeypatch.setattr(prediction, "_CHECKPOINTS", 4)
    for side, ref in (("end", ref_end), ("start", ref_start)):
        clip = vs_vgan.extend(src, side=side, **kw)
        assert _render(clip) == ref, side  # in display order (backwards for "start")
        (rollout,) = rollouts()
        assert len(rollout.outputs) <= rollout.keep and len(rollout.checkpoints) <= 5
        assert rollout.next == 60 and rollout.spacing >= 16
        for k, data in fetch_in_random_order(clip, seed=1):
            assert data == ref[k], (side, k)
        del clip, rollout
        assert rollouts() == []


def test_repair_keeps_a_bounded_number_of_rollouts(tiny_flow, tiny_predictor, rollouts):
    """A cut every 10 frames with the frame before each listed as bad: every one is
    predicted, and only a few roll-outs stay alive (all 40 used to)."""
    s = moving(vs.RGB24, length=400, width=32, height=32)
    parts = [s[i:i + 10] if (i // 10) % 2 == 0 else core.std.Invert(s[i:i + 10]) for i in range(0, 400, 10)]
    clip = core.std.Splice(parts)
    bad = list(range(9, 400, 10))
    out = vs_vgan.repair(clip, frames=bad, model=tiny_flow, predict_model=tiny_predictor, device="cpu")
    for f in out.frames():
        pass
    alive = len(rollouts())
    assert 0 < alive <= 4 + core.num_threads


# ---------------------------------------------------------------------- non-finite samples
def _poked(fmt: int, value: float, width: int = 96, height: int = 64) -> vs.VideoNode:
    """A moving float clip with a 24x24 patch of ``value`` in frame 1's first plane."""
    src = moving(fmt, length=5, width=width, height=height, speed=2)

    def poke(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        fout = f.copy()
        if n == 1:
            np.asarray(fout[0])[20:44, 30:54] = value
        return fout

    return core.std.ModifyFrame(src, src, poke)


def _nonfinite_share(frame: vs.VideoFrame) -> float:
    return max(float((~np.isfinite(np.asarray(frame[p]))).mean()) for p in range(frame.format.num_planes))


@pytest.mark.parametrize("fmt", [vs.RGBS, vs.YUV420PS, vs.GRAYS])
@pytest.mark.parametrize("value, precision", [(np.nan, "fp32"), (np.inf, "fp32"), (-np.inf, "fp32"),
                                              (1e38, "fp32"), (1e30, "fp16")])
def test_a_non_finite_patch_stays_local(tiny_flow, tiny_predictor, fmt, value, precision):
    """NaN, Inf or a huge value in a patch of one frame leaves every other sample of the
    frames made from it finite (it used to make every synthesized sample NaN; 1e30 too
    in fp16, the CUDA default)."""
    src = _poked(fmt, value)
    patch = 24 * 24 / (96 * 64)
    out = vs_vgan.interpolate(src, factor=4, model=tiny_flow, device="cpu", scene_detect=False, precision=precision)
    for n in range(1, 8):  # the frames made from pairs (0, 1) and (1, 2)
        if n % 4:
            assert _nonfinite_share(out.get_frame(n)) <= 2 * patch, n
    clean = vs_vgan.interpolate(moving(fmt, length=5, width=96, height=64, speed=2), factor=4, model=tiny_flow, device="cpu", scene_detect=False, precision=precision)
    assert frame_bytes(clean.get_frame(13)) == frame_bytes(out.get_frame(13))  # pair (3, 4) untouched
    ext = vs_vgan.extend(src[:2], frames=3, model=tiny_predictor, device="cpu", scene_detect=False,
                         precision=precision)
    for n in range(2, 5):
        assert _nonfinite_share(ext.get_frame(n)) <= 3 * patch, n


def test_sanitize_keeps_ordinary_frames_and_bounds_the_rest():
    from vs_vgan.models.flownet import INPUT_RANGE, sanitize

    x = torch.linspace(-0.2, 1.2, 50).view(1, 1, 5, 10)
    assert torch.equal(sanitize(x), x)
    bad = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 0.25])
    assert sanitize(bad).tolist() == [0.5, INPUT_RANGE[1], INPUT_RANGE[0], INPUT_RANGE[1], INPUT_RANGE[0], 0.25]


# ---------------------------------------------------------------------- graph size and frame size
def _numbered(length: int) -> vs.VideoNode:
    blank = core.std.BlankClip(format=vs.GRAY8, width=8, height=8, length=length)
    return core.std.ModifyFrame(blank, blank, lambda n, f: _with_prop(f, n))


def _with_prop(f: vs.VideoFrame, n: int) -> vs.VideoFrame:
    fout = f.copy()
    fout.props["src"] = n
    return fout


@pytest.mark.parametrize("ratio", ["2", "5/2", "1/2", "5/3", "3/7", "1001/1000", "7", "2400/1001", "1"])
@pytest.mark.parametrize("periodic", [True, False])
def test_remap_picks_the_left_neighbour_of_every_output_frame(ratio, periodic, monkeypatch):
    """One SelectEvery cycle (or, for a long period, the lists of dropped and repeated
    frames) gives output frame k source frame floor(k / ratio), for the whole output."""
    from fractions import Fraction

    from vs_vgan import engine
    from vs_vgan.timing import Timeline

    if not periodic:
        monkeypatch.setattr(engine, "_PERIOD_MAX", 0)
    for length in (1, 2, 7, 23):
        timeline = Timeline(length, Fraction(ratio), Fraction(24))
        out = engine.remap(_numbered(length), timeline)
        assert out.num_frames == timeline.num_frames
        got = [f.props["src"] for f in out.frames()]
        assert got == [k * timeline.ratio.denominator // timeline.ratio.numerator for k in range(out.num_frames)]


def test_large_factors_build_a_small_graph_and_right_frames(tiny_flow, threads):
    """factor=1000 on a long clip builds at once (the lanes' blocks are bounded, the remap
    is one cycle): the first and last frames are right."""
    threads(2)
    src = moving(vs.RGB24, length=3, width=32, height=32)
    out = vs_vgan.interpolate(src * 2000, factor=1000, model=tiny_flow, device="cpu", scene_detect=False)
    assert out.num_frames == 6_000_000
    assert frame_bytes(out.get_frame(0)) == frame_bytes(src.get_frame(0))
    assert frame_bytes(out.get_frame(1000)) == frame_bytes(src.get_frame(1))
    assert frame_bytes(out.get_frame(out.num_frames - 1)) == frame_bytes(src.get_frame(2))


@pytest.mark.parametrize("size, scale, fits", [((3, 3), 0.25, "1.0 or 0.5"), ((8, 2), 0.25, "1.0 or 0.5"),
                                               ((1, 5), 0.5, "1.0")])
def test_scale_too_small_for_the_frames_is_refused_when_the_node_is_made(tiny_flow, size, scale, fits):
    clip = core.std.BlankClip(format=vs.RGB24, width=size[0], height=size[1], length=3)
    for make in (lambda: vs_vgan.interpolate(clip, model=tiny_flow, device="cpu", scale=scale),
                 lambda: vs_vgan.predict(clip, device="cpu", scale=scale)):
        with pytest.raises(ValueError, match=rf"scale must be {fits} for {size[0]}x{size[1]} frames .*; got {scale}"):
            make()
    ok = vs_vgan.interpolate(core.std.BlankClip(format=vs.RGB24, width=4, height=4, length=3), model=tiny_flow,
                             device="cpu", scale=0.25)
    ok.get_frame(1)


def test_huge_factors_build_at_once_or_are_refused_naming_the_limit(threads):
    """factor=10**9 used to build for minutes and take gigabytes (a list entry per output
    frame, a node per frame of a lane's block); now a 2-frame clip builds at once, and
    where the output would not fit VapourSynth the error names the limit."""
    threads(2)
    src = _numbered(2)
    out = vs_vgan.interpolate(src, factor=10**9, model="blend", device="cpu", scene_detect=False)
    assert out.num_frames == 2 * 10**9
    assert [out.get_frame(k).props["src"] for k in (0, 10**9 - 1, 10**9, out.num_frames - 1)] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"^vs_vgan.interpolate: factor must be at most 2147483647/6 for a 6-frame "
                                         r"clip \(VapourSynth's longest clip has 2147483647 frames\); got 1000000000"):
        vs_vgan.interpolate(_numbered(6), factor=10**9, model="blend", device="cpu")
