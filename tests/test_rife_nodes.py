"""RIFE weights through every node feature (issue 15): a seeded random 4.25 flownet.pkl
stands in for a user's file; tests/test_ifnet.py checks the network against the
reference on the real weights."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs

import vs_vgan
from conftest import fetch_in_random_order, frame_bytes, moving
from vs_vgan.frames import pad_to_modulo
from vs_vgan.models import ModelSpec, get_spec, load_model, rife
from vs_vgan.timing import Timeline

core = vs.core


def _rgb(frame: vs.VideoFrame) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(frame[p]) for p in range(3)]))[None].float()


# ---------------------------------------------------------------------- the spec
def test_rife_spec_names_the_version_and_pins_the_file(rife_pkl, caplog, monkeypatch):
    import hashlib
    import logging

    from vs_vgan.models import loader

    # a file rife() has read before in this process is not read (nor logged) again: the
    # first read of this test's session, whatever ran earlier
    monkeypatch.setattr(loader, "_rife_layouts", {})
    with caplog.at_level(logging.INFO, logger="vs_vgan"):
        spec = rife(rife_pkl)
    sha = hashlib.sha256(Path(rife_pkl).read_bytes()).hexdigest()
    assert (spec.name, spec.task, spec.arch, dict(spec.kwargs), spec.sha256) == \
        ("rife-4.25", "interpolate", "rife", {"version": "4.25"}, sha)
    assert spec.weights == str(Path(rife_pkl).resolve()) and spec.modulo == 64
    assert sha in caplog.text
    assert rife(str(rife_pkl), version="4.26").name == "rife-4.26"  # 4.26: 4.25's layout
    assert get_spec(str(rife_pkl), task="interpolate", func="interpolate") == spec
    assert get_spec(Path(rife_pkl), task="interpolate", func="interpolate") == spec
    with pytest.raises(ValueError, match=r"^vs_vgan.rife: version must be None \(detected\) or one of '4.25', "
                                         r"'4.26'; got '4.22'$"):
        rife(rife_pkl, version="4.22")


def test_rife_weights_are_refused_where_they_dont_fit(rife_pkl, tmp_path):
    clip = moving(vs.RGB24, length=4, width=64, height=64)
    with pytest.raises(ValueError, match=r"^vs_vgan.predict: model must be a model for the 'predict' task .*"
                                         r"RIFE interpolates; it doesn't predict$"):
        vs_vgan.predict(clip, model=str(rife_pkl), device="cpu")
    with pytest.raises(FileNotFoundError, match=r"^vs_vgan.interpolate: the RIFE weights file must exist; got a "
                                                r"missing file .*nothere.pkl$"):
        vs_vgan.interpolate(clip, model=str(tmp_path / "nothere.pkl"), device="cpu")
    with pytest.raises(ValueError, match=r"^vs_vgan.interpolate: model must be one of 'vgan-flow-v1', 'blend', "
                                         r"a ModelSpec or the path of a RIFE flownet.pkl; got 'vgan-flow-v9'"):
        vs_vgan.interpolate(clip, model="vgan-flow-v9", device="cpu")
    state = torch.load(rife_pkl, weights_only=True)
    del state["module.block4.lastconv.0.weight"]
    broken = tmp_path / "four.pkl"
    torch.save(state, broken)
    with pytest.raises(ValueError, match=r"^vs_vgan.interpolate: the weights must be a RIFE state dict of a "
                                         r"supported version \(4.25: 5 flow blocks.*'block4.lastconv.0.weight' "
                                         r"is missing"):
        vs_vgan.interpolate(clip, model=broken, device="cpu")
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(Path(rife_pkl).read_bytes()[:100_000])
    with pytest.raises(ValueError, match=r"^vs_vgan.interpolate: the RIFE weights file .*cut.pkl must be a "
                                         r"torch.save'd state dict of tensors \(a flownet.pkl\); got a truncated file"):
        vs_vgan.interpolate(clip, model=str(truncated), device="cpu")


def test_a_rife_file_changed_after_its_spec_is_refused(rife_pkl, tmp_path):
    copy = tmp_path / "flownet.pkl"
    copy.write_bytes(Path(rife_pkl).read_bytes())
    spec = rife(copy)
    state = torch.load(copy, weights_only=True)
    state["module.block0.conv0.0.0.bias"] += 1
    torch.save(state, copy)
    with pytest.raises(ValueError, match=r"must have sha256 .*The file changed since its ModelSpec was made"):
        vs_vgan.interpolate(moving(vs.RGB24, length=3, width=64, height=64), model=spec, device="cpu")


# ---------------------------------------------------------------------- the nodes
def test_interpolate_runs_the_network_once_per_pair_and_t_on_padded_frames(rife_pkl):
    """RGBS in: every synthesized frame is RifeNet's output on the frames padded to 64 (as
    the engine pads) and cropped back, at its exact t; source frames pass through."""
    src = moving(vs.RGBS, length=3, width=70, height=46, speed=2)
    out = vs_vgan.interpolate(src, factor=3, model=str(rife_pkl), device="cpu", scene_detect=False)
    assert out.num_frames == 9
    net = load_model(rife(rife_pkl), torch.device("cpu"), torch.float32)
    for n in range(out.num_frames):
        left, k = divmod(n, 3)
        got = _rgb(out.get_frame(n))
        if k == 0 or left + 1 >= src.num_frames:
            assert torch.equal(got, _rgb(src.get_frame(min(left, 2)))), n
            continue
        a = pad_to_modulo(_rgb(src.get_frame(left)), 64)
        b = pad_to_modulo(_rgb(src.get_frame(left + 1)), 64)
        with torch.inference_mode():
            want = net(a, b, torch.full((1, 1, 1, 1), k / 3))[..., :46, :70]
        assert torch.equal(got, want), n


@pytest.mark.parametrize("fmt", [vs.RGB24, vs.YUV420P10, vs.YUV444P8, vs.GRAY8, vs.RGBH])
def test_every_format_and_exact_timing(rife_pkl, fmt):
    src = moving(fmt, length=5, width=48, height=40, speed=1.5)
    src = core.std.AssumeFPS(src, fpsnum=24000, fpsden=1001)
    out = vs_vgan.interpolate(src, fps=Fraction(60000, 1001), model=str(rife_pkl), device="cpu")
    assert (out.format.id, out.width, out.height) == (src.format.id, 48, 40)
    assert (out.fps.numerator, out.fps.denominator) == (60000, 1001)
    assert out.num_frames == Timeline(5, Fraction(5, 2), Fraction(24000, 1001)).num_frames == 13
    assert frame_bytes(out.get_frame(0)) == frame_bytes(src.get_frame(0))
    assert frame_bytes(out.get_frame(5)) == frame_bytes(src.get_frame(2))  # t = 0 on a source frame
    f = out.get_frame(1)
    assert (f.props["_DurationNum"], f.props["_DurationDen"]) == (1001, 60000)
    assert frame_bytes(f) != frame_bytes(src.get_frame(0))


def test_scene_cuts_random_access_lanes_and_scale(rife_pkl, threads):
    """A cut is not interpolated across; random access and the thread count give the same
    bytes; scale=0.5 is RIFE's own (another result, padding to 128)."""
    s = moving(vs.RGB24, length=6, width=64, height=48, speed=2)
    clip = s[:3] + core.std.Invert(s[3:])
    kw = dict(factor=2, model=str(rife_pkl), device="cpu")
    threads(1)
    ref = [frame_bytes(f) for f in vs_vgan.interpolate(clip, **kw).frames()]
    assert ref[5] == frame_bytes(clip.get_frame(3))  # the cut between 2 and 3: the nearer frame (t = 1/2: the later)
    threads(2)
    again = vs_vgan.interpolate(clip, **kw)
    for k, data in fetch_in_random_order(again, seed=4):
        assert data == ref[k], k
    half = vs_vgan.interpolate(clip, scale=0.5, **kw)
    assert frame_bytes(half.get_frame(1)) != ref[1]
    assert half.get_frame(1).width == 64


def test_repair_takes_rife_as_its_interpolation_model(rife_pkl, tiny_predictor):
    clip = moving(vs.RGB24, length=8, width=64, height=48)
    out = vs_vgan.repair(clip, frames=[4], model=str(rife_pkl), predict_model=tiny_predictor, device="cpu")
    direct = vs_vgan.interpolate(clip[3] + clip[5], factor=2, model=str(rife_pkl), device="cpu", scene_detect=False)
    assert frame_bytes(out.get_frame(4)) == frame_bytes(direct.get_frame(1))


def test_half_precision_module_warps_in_float32(rife_pkl):
    """fp16 (the CUDA default) on the CPU, where half convolutions run: a result close to fp32."""
    src = moving(vs.RGBS, length=2, width=64, height=64, speed=1)
    try:
        half = vs_vgan.interpolate(src, factor=2, model=str(rife_pkl), device="cpu", precision="fp16",
                                   scene_detect=False).get_frame(1)
    except (RuntimeError, vs.Error) as exc:  # pragma: no cover - an old CPU without half kernels
        pytest.skip(f"no half-precision convolution on this CPU: {exc}")
    full = vs_vgan.interpolate(src, factor=2, model=str(rife_pkl), device="cpu", scene_detect=False).get_frame(1)
    assert float((_rgb(half) - _rgb(full)).abs().max()) < 0.05
