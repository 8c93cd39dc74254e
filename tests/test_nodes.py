"""The interpolate node on a real VapourSynth core."""
from __future__ import annotations

import dataclasses
import logging
import threading
from fractions import Fraction

import numpy as np
import pytest
import torch
import vapoursynth as vs

import vs_vgan
from conftest import fetch_in_random_order, frame_bytes, moving, noise, numbered, planes, ramp
from vs_vgan.models import ModelSpec, load_model
from vs_vgan.engine import ComputeCache

core = vs.core


def durations(clip):
    return [Fraction(f.props["_DurationNum"], f.props["_DurationDen"]) for f in clip.frames()]


def tag_frames(clip):
    """Give frame n a prop Src = n."""
    def tag(n, f):
        fout = f.copy()
        fout.props["Src"] = n
        return fout
    return core.std.ModifyFrame(clip, clips=clip, selector=tag)


@pytest.mark.parametrize("kw, length, fps", [
    ({}, 16, Fraction(48)),
    ({"factor": 2}, 16, Fraction(48)),
    ({"factor": "5/2"}, 20, Fraction(60)),
    ({"fps": "60000/1001"}, 20, Fraction(60000, 1001)),
    ({"fps": Fraction(12)}, 4, Fraction(12)),
    ({"factor": 1}, 8, Fraction(24)),
])
def test_length_rate_and_durations(kw, length, fps):
    src = ramp(vs.RGB24, length=8, fps=Fraction(24))
    out = vs_vgan.interpolate(src, model="blend", **kw)
    assert out.num_frames == length and out.fps == fps
    d = durations(out)
    assert sum(d) == Fraction(8, 24)
    assert all(x == 1 / fps for x in d[:-1])


def test_blend_values_on_a_ramp():
    src = ramp(vs.RGB24, length=5, step=4)
    out = vs_vgan.interpolate(src, factor=4, model="blend")
    got = [int(planes(f)[0][0, 0]) for f in out.frames()]
    # positions k/4: values 4 * k/4 = k until the last source frame, which is then held
    assert got == list(range(17)) + [16, 16, 16]


@pytest.mark.parametrize("fmt", [vs.RGB24, vs.YUV420P10, vs.GRAY16, vs.RGBS, vs.YUV444PH])
def test_source_frames_pass_through_byte_identical(fmt, tiny_flow):
    src = moving(fmt, length=6)
    out = vs_vgan.interpolate(src, factor=3, model=tiny_flow, scene_detect=False)
    assert out.format.id == src.format.id and (out.width, out.height) == (src.width, src.height)
    for i in range(src.num_frames):
        assert frame_bytes(out.get_frame(3 * i)) == frame_bytes(src.get_frame(i))
    # and the synthesized ones are really synthesized
    assert frame_bytes(out.get_frame(1)) != frame_bytes(src.get_frame(0))


def test_props_of_the_left_frame_are_kept():
    src = tag_frames(ramp(vs.RGB24, length=6)).std.SetFrameProps(Custom="kept")
    out = vs_vgan.interpolate(src, fps="60000/1001", model="blend")
    for k, f in enumerate(out.frames()):
        p = Fraction(k) * 24 * 1001 / 60000
        assert f.props["Src"] == min(int(p), 5)
        assert f.props["Custom"] == "kept"


def test_scene_change_props_are_honoured():
    src = ramp(vs.RGB24, length=6, step=4)
    src = core.std.Splice([src[:3].std.SetFrameProps(_SceneChangeNext=0), src[3].std.SetFrameProps(_SceneChangeNext=1),
                           src[4:]])
    out = vs_vgan.interpolate(src, factor=4, model="blend", scene_detect=False)
    got = [int(planes(f)[0][0, 0]) for f in out.frames()]
    # between frames 3 (value 12) and 4 (value 16): nearest frame, never a morph
    assert got[12:17] == [12, 12, 16, 16, 16]
    assert got[11] == 11 and got[17] == 17  # the other pairs are still interpolated
    # _SceneChangePrev on the right frame works too
    src2 = core.std.Splice([ramp(vs.RGB24, length=2, step=4), ramp(vs.RGB24, length=2, step=4)[1].std.SetFrameProps(_SceneChangePrev=1)])
    got2 = [int(planes(f)[0][0, 0]) for f in vs_vgan.interpolate(src2, factor=4, model="blend").frames()]
    assert got2[4:8] == [4, 4, 4, 4]


def _cut_clip():
    """Frames 0-3 a slow ramp, frames 4-7 a different picture: one cut between 3 and 4."""
    a = ramp(vs.RGB24, length=4, step=2, width=64, height=32)
    b = core.std.BlankClip(a, color=[200, 40, 90], length=4)
    return a + b


def test_builtin_detector_finds_the_cut():
    src = _cut_clip()
    out = vs_vgan.interpolate(src, factor=2, model="blend")
    got = [int(planes(f)[0][0, 0]) for f in out.frames()]
    assert got[:7] == [0, 1, 2, 3, 4, 5, 6]  # interpolated inside the first shot
    assert got[7] == 200  # t = 1/2 across the cut: the right frame, not a morph
    off = vs_vgan.interpolate(src, factor=2, model="blend", scene_detect=False)
    assert int(planes(off.get_frame(7))[0][0, 0]) == round((6 + 200) / 2)


def test_detector_leaves_fast_motion_alone(tiny_flow):
    src = moving(vs.RGB24, length=6, speed=4.0)
    a = vs_vgan.interpolate(src, factor=2, model=tiny_flow)
    b = vs_vgan.interpolate(src, factor=2, model=tiny_flow, scene_detect=False)
    assert all(frame_bytes(x) == frame_bytes(y) for x, y in zip(a.frames(), b.frames()))


def test_random_order_and_threads_give_identical_bytes(tiny_flow, threads):
    src = moving(vs.YUV420P8, length=10, width=64, height=48)
    threads(1)
    ref = vs_vgan.interpolate(src, fps="60000/1001", model=tiny_flow)
    expected = [frame_bytes(f) for f in ref.frames()]
    for n_threads in (2, 4):
        threads(n_threads)
        out = vs_vgan.interpolate(src, fps="60000/1001", model=tiny_flow)
        for k, data in fetch_in_random_order(out, seed=n_threads):
            assert data == expected[k], f"frame {k} with {n_threads} threads"


def test_each_frame_is_prepared_once_and_each_pair_encoded_once(tiny_flow, monkeypatch):
    net = load_model(tiny_flow, torch.device("cpu"), torch.float32)
    prepared, paired = [], []
    prepare, pair = net.prepare, net.pair
    monkeypatch.setattr(net, "prepare", lambda x, **kw: prepared.append(1) or prepare(x, **kw))
    monkeypatch.setattr(net, "pair", lambda a, b: paired.append(1) or pair(a, b))
    src = moving(vs.RGB24, length=5)
    out = vs_vgan.interpolate(src, factor=4, model=tiny_flow, device="cpu", scene_detect=False)
    for f in out.frames():
        pass
    assert len(paired) == 4  # one per source pair, though each yields three frames
    assert len(prepared) == 5  # one per source frame, though the inner ones are in two pairs


def test_cpu_plan_fills_the_cores_with_one_thread_per_call():
    from vs_vgan.devices import CPU_CALL_THREADS, cpu_plan

    assert CPU_CALL_THREADS == 1  # the bytes must not depend on the core count
    assert cpu_plan(2, cores=2) == (2, 1)
    assert cpu_plan(8, cores=2) == (2, 1)
    assert cpu_plan(1, cores=2) == (1, 1)
    assert cpu_plan(4, cores=16) == (4, 1)
    for threads in range(1, 20):
        calls, per_call = cpu_plan(threads, cores=8)
        assert 1 <= calls <= min(threads, 8) and per_call == 1


def test_cpu_frames_are_computed_on_one_torch_thread(monkeypatch):
    """Whatever the script set (torch's count is per thread with OpenMP), each thread that
    computes frames pins it to one first."""
    from vs_vgan import devices

    seen = []
    pin = devices.pin_cpu_threads

    def spy() -> None:
        pin()
        seen.append(torch.get_num_threads())

    monkeypatch.setattr(devices, "pin_cpu_threads", spy)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # as another plugin might
        out = vs_vgan.interpolate(moving(vs.RGB24, length=4), model="blend", device="cpu")
        for f in out.frames():
            pass
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {devices.CPU_CALL_THREADS}


def test_variable_frame_rate_factor_uses_each_duration():
    parts = [ramp(vs.RGB24, length=2, fps=Fraction(fps)) for fps in (24, 30, 60)]
    src = core.std.Splice(parts, mismatch=True)
    assert src.fps == 0
    out = vs_vgan.interpolate(src, factor=2, model="blend")
    assert out.fps == 0 and out.num_frames == 12
    d = durations(out)
    assert d[:4] == [Fraction(1, 48)] * 4 and d[4:8] == [Fraction(1, 60)] * 4 and d[8:] == [Fraction(1, 120)] * 4
    assert sum(d) == sum(durations(src))
    down = vs_vgan.interpolate(src, factor="1/3", model="blend")
    assert down.num_frames == 2 and sum(durations(down)) == sum(durations(src))
    assert durations(down)[0] == Fraction(1, 24) * 2 + Fraction(1, 30)


def test_downconversion_60_to_50():
    src = ramp(vs.RGB24, length=12, fps=Fraction(60), step=10)
    out = vs_vgan.interpolate(src, fps=50, model="blend")
    assert out.num_frames == 10 and out.fps == 50
    got = [int(planes(f)[0][0, 0]) for f in out.frames()]
    assert got == [0, 12, 24, 36, 48, 60, 72, 84, 96, 108]


def test_pair_cache_is_bounded_and_computes_once_under_contention():
    cache = ComputeCache(3)
    computed = []
    barrier = threading.Barrier(8)

    def work(key):
        barrier.wait()
        return cache.get(key, lambda: computed.append(key) or key * 10)

    results = []
    ts = [threading.Thread(target=lambda: results.append(work(7))) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == [70] * 8 and computed == [7]
    for key in range(10):
        cache.get(key, lambda key=key: key)
    assert len(cache) == 3


def test_pair_cache_failure_is_not_cached():
    cache = ComputeCache(2)
    with pytest.raises(RuntimeError):
        cache.get(1, lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert cache.get(1, lambda: 5) == 5


# ------------------------------------------------------------------ bad input
def _msg(exc_type, **kw):
    clip = kw.pop("clip", None) or ramp(vs.RGB24, length=4)
    with pytest.raises(exc_type) as info:
        vs_vgan.interpolate(clip, **kw)
    return str(info.value)


def test_error_not_a_clip():
    with pytest.raises(TypeError, match=r"^vs_vgan.interpolate: clip must be a vapoursynth.VideoNode; got 'x'"):
        vs_vgan.interpolate("x")


def test_error_variable_format_and_size():
    a = ramp(vs.RGB24, length=2)
    b = ramp(vs.YUV444P8, length=2)
    c = ramp(vs.RGB24, length=2, width=64)
    msg = _msg(ValueError, clip=core.std.Splice([a, b], mismatch=True))
    assert msg.startswith("vs_vgan.interpolate: clip must be a clip of constant format; got a VideoNode (variable format")
    msg = _msg(ValueError, clip=core.std.Splice([a, c], mismatch=True))
    assert msg.startswith("vs_vgan.interpolate: clip must be a clip of constant size; got a VideoNode (RGB24, variable size")


@pytest.mark.parametrize("factor", [0, -1, "0/5", "-3/2"])
def test_error_factor_not_positive(factor):
    assert _msg(ValueError, factor=factor).startswith(
        'vs_vgan.interpolate: factor must be a positive int, Fraction or "num/den" string; got')


def test_error_factor_float_and_both_given():
    assert "got 2.5 (float)" not in _msg(TypeError, factor=2.5)
    assert 'Pass an exact value such as "5/2"' in _msg(TypeError, factor=2.5)
    assert _msg(ValueError, factor=2, fps=60).startswith(
        "vs_vgan.interpolate: factor must be omitted when fps is given (pass one of factor and fps); got 2")


def test_error_one_frame_clip():
    assert _msg(ValueError, clip=ramp(vs.RGB24, length=1)).startswith(
        "vs_vgan.interpolate: clip must be at least 2 frames long (there is nothing to interpolate between); got a VideoNode (RGB24, 32x16, 1 frames")


def test_error_unknown_model():
    assert _msg(ValueError, model="rife").startswith("vs_vgan.interpolate: model must be one of 'vgan-flow-v1', 'blend', a ModelSpec or the path of a RIFE flownet.pkl; got 'rife'")


def test_error_missing_and_corrupt_weights(tmp_path, tiny_flow):
    missing = ModelSpec(name="m", task="interpolate", arch="flow", kwargs=dict(tiny_flow.kwargs),
                        weights=str(tmp_path / "nope.safetensors"), sha256="0" * 64, modulo=8)
    with pytest.raises(FileNotFoundError) as info:
        vs_vgan.interpolate(ramp(vs.RGB24, length=4), model=missing)
    assert str(tmp_path / "nope.safetensors") in str(info.value)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(open(tiny_flow.weights, "rb").read()[:-1] + b"\0")
    corrupt = ModelSpec(name="c", task="interpolate", arch="flow", kwargs=dict(tiny_flow.kwargs),
                        weights=str(bad), sha256=tiny_flow.sha256, modulo=8)
    msg = _msg(ValueError, model=corrupt)
    assert msg.startswith(f"vs_vgan.interpolate: the weights file {bad} of model 'c' must have sha256 {tiny_flow.sha256}; got ")


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu0"])
def test_error_unknown_device(device):
    assert _msg(ValueError, device=device) == (
        f"vs_vgan.interpolate: device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got '{device}'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_error_cuda_without_gpu():
    assert "device='cpu' always works" in _msg(ValueError, device="cuda")


def test_error_fps_on_variable_rate_clip():
    src = core.std.Splice([ramp(vs.RGB24, length=2, fps=Fraction(24)), ramp(vs.RGB24, length=2, fps=Fraction(30))],
                          mismatch=True)
    assert _msg(ValueError, clip=src, fps=60).startswith(
        "vs_vgan.interpolate: fps must be omitted for a variable-frame-rate clip (fps 0/1); got 60")


def test_error_other_arguments():
    assert _msg(ValueError, precision="fp8").startswith("vs_vgan.interpolate: precision must be 'auto', 'fp32'")
    assert _msg(ValueError, scene_threshold=0).startswith("vs_vgan.interpolate: scene_threshold must be a number in (0, 1]; got 0")
    assert _msg(TypeError, scene_detect="yes").startswith("vs_vgan.interpolate: scene_detect must be True or False")
    assert _msg(ValueError, scale=0.3).startswith("vs_vgan.interpolate: scale must be None, 1.0, 0.5 or 0.25; got 0.3")
    assert _msg(TypeError, scale="half").startswith("vs_vgan.interpolate: scale must be None, 1.0, 0.5 or 0.25; got 'half'")
    assert _msg(ValueError, scale=0.5, model="blend").startswith(
        "vs_vgan.interpolate: scale must be 1.0 for model 'blend' (it has no motion analysis to scale); got 0.5")


def test_analysis_scale_runs_with_its_own_padding(tiny_flow):
    src = moving(vs.RGB24, length=4, width=40, height=24)  # padded to 64x64 at scale 0.5 (modulo 16)
    full = vs_vgan.interpolate(src, factor=2, model=tiny_flow, scene_detect=False)
    half = vs_vgan.interpolate(src, factor=2, model=tiny_flow, scene_detect=False, scale=0.5)
    assert half.num_frames == full.num_frames == 8 and (half.width, half.height) == (40, 24)
    assert frame_bytes(half.get_frame(0)) == frame_bytes(full.get_frame(0))  # source frames pass through
    assert frame_bytes(half.get_frame(1)) != frame_bytes(full.get_frame(1))


def test_scale_none_takes_the_models_choice_for_the_frame_size(tiny_flow, caplog):
    """A model with analysis_pixels analyses small frames at a larger scale than large
    ones; scale=None gives the frames of the scale it chose, and logs the choice."""
    auto = dataclasses.replace(tiny_flow, analysis_pixels=40 * 24 // 4)  # 40x24 at 0.5; 80x48 at 0.25
    assert (auto.default_scale(40, 24), auto.default_scale(80, 48), auto.default_scale(400, 240)) == (0.5, 0.25, 0.25)
    assert (tiny_flow.default_scale(40, 24), tiny_flow.default_scale(4000, 2000)) == (1.0, 1.0)  # without it
    for (w, h), chosen in (((40, 24), 0.5), ((80, 48), 0.25)):
        src = moving(vs.RGB24, length=3, width=w, height=h)
        with caplog.at_level(logging.INFO, logger="vs_vgan"):
            caplog.clear()
            got = vs_vgan.interpolate(src, factor=2, model=auto, scene_detect=False)
            assert f"analyses {w}x{h} frames at scale {chosen:g}" in caplog.text
        want = vs_vgan.interpolate(src, factor=2, model=auto, scene_detect=False, scale=chosen)
        other = vs_vgan.interpolate(src, factor=2, model=auto, scene_detect=False, scale=1.0)
        assert frame_bytes(got.get_frame(1)) == frame_bytes(want.get_frame(1))
        assert frame_bytes(got.get_frame(1)) != frame_bytes(other.get_frame(1))
    # without analysis_pixels, None is 1.0: the frames of scale=1.0
    src = moving(vs.RGB24, length=3, width=40, height=24)
    assert frame_bytes(vs_vgan.interpolate(src, model=tiny_flow, scene_detect=False).get_frame(1)) == \
        frame_bytes(vs_vgan.interpolate(src, model=tiny_flow, scene_detect=False, scale=1.0).get_frame(1))


def test_scale_none_never_analyses_under_a_pixel(tiny_flow):
    auto = dataclasses.replace(tiny_flow, analysis_pixels=1)  # would pick 0.25 for any frame
    src = moving(vs.RGB24, length=3, width=64, height=2)  # 0.25 and 0.5 would be under a pixel
    got = vs_vgan.interpolate(src, factor=2, model=auto, scene_detect=False)
    want = vs_vgan.interpolate(src, factor=2, model=auto, scene_detect=False, scale=0.5)
    assert frame_bytes(got.get_frame(1)) == frame_bytes(want.get_frame(1))


def test_model_spec_checks_analysis_pixels(tiny_flow):
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="analysis_pixels must be an int >= 0"):
            dataclasses.replace(tiny_flow, analysis_pixels=bad)
    assert hash(dataclasses.replace(tiny_flow, analysis_pixels=5)) != hash(tiny_flow)


def test_bad_input_leaves_the_core_working():
    with pytest.raises(ValueError):
        vs_vgan.interpolate(ramp(vs.RGB24, length=4), factor=0)
    assert vs_vgan.interpolate(ramp(vs.RGB24, length=4), model="blend").num_frames == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tiny_flow):
    src = moving(vs.RGB24, length=4)
    a = vs_vgan.interpolate(src, factor=2, model=tiny_flow, device="cpu")
    b = vs_vgan.interpolate(src, factor=2, model=tiny_flow, device="cuda")
    for x, y in zip(a.frames(), b.frames()):
        assert max(np.abs(p.astype(int) - q.astype(int)).max() for p, q in zip(planes(x), planes(y))) <= 2


@pytest.mark.parametrize("lanes, block", [(2, 1), (2, 2), (3, 2), (2, 3)])
def test_lanes_give_the_frames_of_a_single_node(tiny_flow, lanes, block):
    """Dealing the frames out to parallel ModifyFrame lanes changes nothing in them."""
    from vs_vgan import nodes

    src = moving(vs.YUV420P8, length=7)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nodes.devices, "cpu_plan", lambda threads, cores=None: (1, 1))
        single = vs_vgan.interpolate(src, fps="60000/1001", model=tiny_flow, device="cpu")
    seen = {}
    original = nodes.in_lanes

    def spy(base, clips, runner, lanes_, block=None):
        seen["called"] = True
        return original(base, clips, runner, lanes, block)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nodes.devices, "cpu_plan", lambda threads, cores=None: (lanes, 1))
        mp.setattr(nodes, "in_lanes", spy)
        dealt = vs_vgan.interpolate(src, fps="60000/1001", model=tiny_flow, device="cpu")
    assert seen and dealt.num_frames == single.num_frames and dealt.fps == single.fps
    for k in range(single.num_frames):
        a, b = single.get_frame(k), dealt.get_frame(k)
        assert frame_bytes(a) == frame_bytes(b), k
        assert (a.props["_DurationNum"], a.props["_DurationDen"]) == (b.props["_DurationNum"], b.props["_DurationDen"])


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


def test_huge_factors_build_at_once_or_are_refused_naming_the_limit(threads):
    """factor=10**9 used to build for minutes and take gigabytes (a list entry per output
    frame, a node per frame of a lane's block); now a 2-frame clip builds at once, and
    where the output would not fit VapourSynth the error names the limit."""
    threads(2)
    src = numbered(2)
    out = vs_vgan.interpolate(src, factor=10**9, model="blend", device="cpu", scene_detect=False)
    assert out.num_frames == 2 * 10**9
    assert [out.get_frame(k).props["src"] for k in (0, 10**9 - 1, 10**9, out.num_frames - 1)] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"^vs_vgan.interpolate: factor must be at most 2147483647/6 for a 6-frame "
                                         r"clip \(VapourSynth's longest clip has 2147483647 frames\); got 1000000000"):
        vs_vgan.interpolate(numbered(6), factor=10**9, model="blend", device="cpu")
