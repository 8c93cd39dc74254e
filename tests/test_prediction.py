"""vs_vgan.predict and vs_vgan.extend with a tiny seeded predictor."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import vapoursynth as vs

import vs_vgan
from conftest import fetch_in_random_order, frame_bytes, moving, planes

core = vs.core


@pytest.mark.parametrize("fmt", [vs.RGB24, vs.YUV420P8, vs.GRAY16, vs.YUV444PS])
def test_predict_keeps_length_format_and_passes_the_context_through(tiny_predictor, fmt):
    src = moving(fmt, length=6)
    out = vs_vgan.predict(src, model=tiny_predictor, device="cpu")
    assert (out.num_frames, out.format.id, out.fps, out.width, out.height) == \
        (src.num_frames, src.format.id, src.fps, src.width, src.height)
    for n in range(2):
        assert frame_bytes(out.get_frame(n)) == frame_bytes(src.get_frame(n))
    assert any(frame_bytes(out.get_frame(n)) != frame_bytes(src.get_frame(n)) for n in range(2, 6))


def test_predict_is_deterministic_under_random_access(tiny_predictor):
    src = moving(vs.YUV420P8, length=9)
    out = vs_vgan.predict(src, model=tiny_predictor, device="cpu")
    expected = [frame_bytes(f) for f in out.frames()]
    again = vs_vgan.predict(src, model=tiny_predictor, device="cpu")
    for k, data in fetch_in_random_order(again, seed=1):
        assert data == expected[k], k


def test_predict_repeats_the_last_frame_across_a_cut(tiny_predictor):
    src = moving(vs.RGB24, length=5)
    marked = src.std.SetFrameProps(_SceneChangeNext=0)
    cut = core.std.Splice([marked[:2], marked[2].std.SetFrameProps(_SceneChangeNext=1), marked[3:]])
    out = vs_vgan.predict(cut, model=tiny_predictor, device="cpu")
    # frame 4 is predicted from (2, 3), and a cut lies between 2 and 3: frame 3 is repeated
    assert [p.tobytes() for p in planes(out.get_frame(4))] == [p.tobytes() for p in planes(src.get_frame(3))]


@pytest.mark.parametrize("side", ["end", "start", "both"])
def test_extend_adds_frames_with_the_clip_format_and_durations(tiny_predictor, side):
    src = moving(vs.YUV420P10, length=4, fps=Fraction(25))
    out = vs_vgan.extend(src, frames=3, side=side, model=tiny_predictor, device="cpu")
    added = 6 if side == "both" else 3
    assert out.num_frames == 4 + added and out.format.id == src.format.id and out.fps == src.fps
    first = 3 if side in ("start", "both") else 0
    for n in range(4):  # the source frames are untouched
        assert frame_bytes(out.get_frame(first + n)) == frame_bytes(src.get_frame(n))
    for f in out.frames():
        assert Fraction(f.props["_DurationNum"], f.props["_DurationDen"]) == Fraction(1, 25)


def test_extend_is_autoregressive_and_order_independent(tiny_predictor):
    src = moving(vs.RGB24, length=4)
    out = vs_vgan.extend(src, frames=4, model=tiny_predictor, device="cpu")
    backwards = vs_vgan.extend(src, frames=4, model=tiny_predictor, device="cpu")
    forward = [frame_bytes(out.get_frame(n)) for n in range(out.num_frames)]
    reverse = [frame_bytes(backwards.get_frame(n)) for n in reversed(range(out.num_frames))][::-1]
    assert forward == reverse
    # the first new frame is predict()'s frame for that position
    longer = src + src[-1]
    assert forward[4] == frame_bytes(vs_vgan.predict(longer, model=tiny_predictor, device="cpu").get_frame(4))


def test_prediction_errors_are_clear(tiny_predictor, tiny_flow):
    src = moving(vs.RGB24, length=4)
    with pytest.raises(ValueError, match="extend: frames must be an int >= 0"):
        vs_vgan.extend(src, frames=-1, model=tiny_predictor)
    with pytest.raises(TypeError, match="extend: frames must be an int >= 0"):
        vs_vgan.extend(src, frames=2.0, model=tiny_predictor)
    with pytest.raises(ValueError, match="side must be 'end', 'start' or 'both'"):
        vs_vgan.extend(src, frames=2, side="middle", model=tiny_predictor)
    with pytest.raises(ValueError, match="at least 2 frames"):
        vs_vgan.extend(src[:1], frames=2, model=tiny_predictor)
    with pytest.raises(ValueError, match="for the 'predict' task"):
        vs_vgan.predict(src, model=tiny_flow)
    assert vs_vgan.extend(src, frames=0, model=tiny_predictor) is src


def with_repeats(src: vs.VideoNode, every: int = 5) -> vs.VideoNode:
    """Every ``every``-th frame replaced by a copy of its predecessor (a dropped frame)."""
    parts = []
    for n in range(src.num_frames):
        parts.append(src[n - 1] if n % every == every - 1 and n > 0 else src[n])
    return core.std.Splice(parts)


def test_repair_finds_every_repeat_and_nothing_on_the_clean_clip(tiny_flow, tiny_predictor):
    src = moving(vs.YUV420P8, length=16)
    damaged = with_repeats(src)
    kw = dict(model=tiny_flow, predict_model=tiny_predictor, device="cpu")
    fixed = vs_vgan.repair(damaged, duplicates=True, **kw)
    clean = vs_vgan.repair(src, duplicates=True, **kw)
    assert fixed.num_frames == src.num_frames and fixed.fps == src.fps
    changed = [n for n in range(src.num_frames) if frame_bytes(fixed.get_frame(n)) != frame_bytes(damaged.get_frame(n))]
    assert changed == [4, 9, 14]
    assert all(frame_bytes(clean.get_frame(n)) == frame_bytes(src.get_frame(n)) for n in range(src.num_frames))
    # the rebuilt frame is interpolate()'s frame between its good neighbours at t = 1/2
    mid = vs_vgan.interpolate(core.std.Splice([src[3], src[5]]), factor=2, model=tiny_flow, device="cpu",
                              scene_detect=False)
    assert frame_bytes(fixed.get_frame(4)) == frame_bytes(mid.get_frame(1))


def test_repair_listed_frames_uses_thirds_and_predicts_at_the_end(tiny_flow, tiny_predictor):
    src = moving(vs.RGB24, length=8)
    kw = dict(model=tiny_flow, predict_model=tiny_predictor, device="cpu", scene_detect=False)
    fixed = vs_vgan.repair(src, frames=[3, 4, 7], **kw)
    quad = vs_vgan.interpolate(core.std.Splice([src[2], src[5]]), factor=3, model=tiny_flow, device="cpu",
                               scene_detect=False)
    assert frame_bytes(fixed.get_frame(3)) == frame_bytes(quad.get_frame(1))  # t = 1/3
    assert frame_bytes(fixed.get_frame(4)) == frame_bytes(quad.get_frame(2))  # t = 2/3
    # no good frame after 7: predicted from (5, 6)
    predicted = vs_vgan.predict(src, model=tiny_predictor, device="cpu", scene_detect=False)
    assert frame_bytes(fixed.get_frame(7)) == frame_bytes(predicted.get_frame(7))
    for n in (0, 1, 2, 5, 6):
        assert frame_bytes(fixed.get_frame(n)) == frame_bytes(src.get_frame(n))
    # durations and props stay the source's
    assert dict(fixed.get_frame(3).props) == dict(src.get_frame(3).props)


def test_repair_arguments_are_checked(tiny_flow, tiny_predictor):
    src = moving(vs.RGB24, length=4)
    kw = dict(model=tiny_flow, predict_model=tiny_predictor)
    with pytest.raises(ValueError, match=r"frame numbers in \[0, 3\]"):
        vs_vgan.repair(src, frames=[4], **kw)
    with pytest.raises(TypeError, match="a list of frame numbers"):
        vs_vgan.repair(src, frames="3", **kw)
    with pytest.raises(ValueError, match="threshold must be a number in"):
        vs_vgan.repair(src, duplicates=True, threshold=1.5, **kw)
    with pytest.raises(ValueError, match="max_run must be an int >= 1"):
        vs_vgan.repair(src, duplicates=True, max_run=0, **kw)
    assert vs_vgan.repair(src, **kw) is src


def test_repair_and_extend_are_deterministic_under_random_concurrent_access(tiny_flow, tiny_predictor, threads):
    """Byte-identical frames whatever the order and the thread count (and so torch's
    intra-op threads): predictions fed back are never rounded in place by a write."""
    src = with_repeats(moving(vs.YUV420P8, length=12), every=4)
    kw = dict(predict_model=tiny_predictor, model=tiny_flow, device="cpu")
    builders = [lambda: vs_vgan.repair(src, duplicates=True, frames=[11], **kw),
                lambda: vs_vgan.extend(src, frames=5, side="both", model=tiny_predictor, device="cpu")]
    for build in builders:
        threads(1)
        expected = [frame_bytes(f) for f in build().frames()]
        for n_threads in (2, 4):
            threads(n_threads)
            out = build()
            for k, data in fetch_in_random_order(out, seed=n_threads):
                assert data == expected[k], (k, n_threads)


# ---------------------------------------------------------------------- robustness (issue 13)
def _render(clip: vs.VideoNode) -> list[bytes]:
    return [frame_bytes(f) for f in clip.frames()]


# ---------------------------------------------------------------------- repair across cuts
def _cut_to_inverse(props: bool) -> vs.VideoNode:
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
    clip = _cut_to_inverse(props)
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


# ---------------------------------------------------------------------- repair's plan (pure)
@pytest.mark.parametrize("bad_frames, cuts, n, expected", [
    ({5}, set(), 4, ("keep",)),
    ({5}, set(), 5, ("interpolate", (4, 6), Fraction(1, 2))),
    ({5, 6}, set(), 6, ("interpolate", (4, 7), Fraction(2, 3))),
    ({5, 6, 7}, set(), 5, ("too-long",)),  # max_run 2
    ({9}, set(), 9, ("forward", (7, 8), 0, False)),  # the clip's last frame
    ({0, 1}, set(), 1, ("backward", (3, 2), 0, False)),  # the clip starts with a run
    ({0, 1}, set(), 0, ("backward", (3, 2), 1, False)),
    ({5}, {4}, 5, ("backward", (7, 6), 0, False)),  # a cut between 4 and 5: 5 starts its scene
    ({5}, {5}, 5, ("forward", (3, 4), 0, False)),  # a cut after 5
    ({5}, {3}, 5, ("interpolate", (4, 6), Fraction(1, 2))),
    ({5}, {3, 5}, 5, ("forward", (3, 4), 0, True)),  # 4 alone before 5 in its scene: no motion
    ({5}, {4, 5}, 5, ("alone",)),
    ({4, 6}, {5}, 6, ("backward", (8, 7), 0, False)),
])
def test_plan_repair_decides_from_bad_frames_and_cuts_only(bad_frames, cuts, n, expected):
    """The decision table of repair: interpolate inside a scene, predict away from a cut or
    the clip's edge, leave a run that is too long or a frame alone in its scene."""
    from vs_vgan.prediction import plan_repair

    plan = plan_repair(n, 10, lambda i: i in bad_frames, lambda i: i in cuts, max_run=2)
    got = {"keep": ("keep",), "too-long": ("too-long",), "alone": ("alone",),
           "interpolate": ("interpolate", plan.keys, plan.t)}.get(plan.how, (plan.how, plan.keys, plan.step, plan.still))
    assert got == expected
