"""Frame bridge: round trips for every accepted format, YUV against zimg, padding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import vapoursynth as vs

from conftest import noise, planes
from vs_vgan.frames import FrameBridge, check_format, default_matrix, pad_to_modulo

core = vs.core


def range_props(full: bool) -> dict:
    """Range props as this VapourSynth spells them (R81 renamed _ColorRange to _Range)."""
    probe = core.std.BlankClip(length=1).std.SetFrameProps(_Range=1).get_frame(0).props
    if "_Range" in probe and not hasattr(probe["_Range"], "__len__"):
        return {"_Range": 1 if full else 0}
    return {"_ColorRange": 0 if full else 1}


def _formats():
    out = []
    for family in (vs.GRAY, vs.RGB, vs.YUV):
        subs = [(0, 0)] if family != vs.YUV else [(0, 0), (1, 0), (1, 1), (2, 0), (0, 1)]
        for st, bits in [(vs.INTEGER, 8), (vs.INTEGER, 10), (vs.INTEGER, 12), (vs.INTEGER, 16),
                         (vs.FLOAT, 16), (vs.FLOAT, 32)]:
            for ssw, ssh in subs:
                out.append(core.query_video_format(family, st, bits, ssw, ssh))
    return out


FORMATS = _formats()


def _round_trip(fmt, device="cpu", dtype=torch.float32, width=32, height=16):
    clip = noise(fmt, length=1, width=width, height=height)
    f = clip.get_frame(0)
    bridge = FrameBridge(fmt, width, height, device=torch.device(device), dtype=dtype)
    x = bridge.to_tensor([f])
    assert x.shape == (1, 3, height, width) and x.dtype == dtype and x.device.type == device
    fout = core.create_video_frame(fmt, width, height)
    for p in range(fmt.num_planes):
        np.asarray(fout[p])[...] = 0
    bridge.write(x[0], fout)
    return planes(f), planes(fout)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_round_trip_without_network(fmt):
    src, out = _round_trip(fmt)
    for a, b in zip(src, out):
        assert a.shape == b.shape and a.dtype == b.dtype
        if fmt.color_family != vs.YUV:
            # integer RGB/GRAY bit-exact, float RGB/GRAY exact
            np.testing.assert_array_equal(a, b)
        elif fmt.sample_type == vs.INTEGER:
            # documented tolerance: 1 code value (exact in practice)
            assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= 1
        else:
            tol = 1e-5 if fmt.bits_per_sample == 32 else float(np.finfo(np.float16).eps) * 2
            np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), atol=tol, rtol=tol)


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV422P10, vs.YUV444P16])
def test_integer_yuv_round_trip_is_exact_in_practice(fmt):
    src, out = _round_trip(core.get_video_format(fmt), width=64, height=32)
    for a, b in zip(src, out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("matrix", [1, 5, 6, 9])
@pytest.mark.parametrize("full", [False, True])
def test_yuv_to_rgb_matches_zimg(matrix, full):
    clip = noise(vs.YUV444P16, length=1, width=32, height=16)
    clip = clip.std.SetFrameProps(_Matrix=matrix, **range_props(full))
    f = clip.get_frame(0)
    bridge = FrameBridge(clip.format, 32, 16, device=torch.device("cpu"))
    ours = bridge.to_tensor([f])[0].numpy()
    ref = core.resize.Point(clip, format=vs.RGBS).get_frame(0)
    np.testing.assert_allclose(ours, np.stack(planes(ref)), atol=2e-5)


def test_yuv_defaults_when_props_are_absent():
    assert default_matrix(1920, 1080) == 1 and default_matrix(1280, 720) == 1
    assert default_matrix(720, 576) == 6 and default_matrix(640, 480) == 6
    # limited range 8-bit white and black without props -> 1 and 0
    white = core.std.BlankClip(format=vs.YUV420P8, width=16, height=16, color=[235, 128, 128], length=1)
    black = core.std.BlankClip(format=vs.YUV420P8, width=16, height=16, color=[16, 128, 128], length=1)
    bridge = FrameBridge(white.format, 16, 16, device=torch.device("cpu"))
    x = bridge.to_tensor([white.get_frame(0), black.get_frame(0)])
    torch.testing.assert_close(x[0], torch.ones(3, 16, 16))
    torch.testing.assert_close(x[1], torch.zeros(3, 16, 16))


def test_gray_is_repeated_and_averaged_back():
    clip = noise(vs.GRAY16, length=1)
    f = clip.get_frame(0)
    bridge = FrameBridge(clip.format, 32, 16, device=torch.device("cpu"))
    x = bridge.to_tensor([f])[0]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    fout = f.copy()
    bridge.write(torch.stack([x[0] * 0, x[1], x[2] * 2]), fout)  # mean of (0, v, 2v) = v
    assert np.abs(planes(fout)[0].astype(int) - planes(f)[0].astype(int)).max() <= 1


def test_writes_are_clipped_for_integers():
    clip = noise(vs.RGB24, length=1)
    f = clip.get_frame(0)
    bridge = FrameBridge(clip.format, 32, 16, device=torch.device("cpu"))
    fout = f.copy()
    bridge.write(torch.full((3, 16, 32), 1.7), fout)
    assert all((p == 255).all() for p in planes(fout))
    bridge.write(torch.full((3, 16, 32), -0.3), fout)
    assert all((p == 0).all() for p in planes(fout))


def test_unsupported_matrix_is_a_clear_error():
    clip = noise(vs.YUV444P8, length=1).std.SetFrameProps(_Matrix=14)
    bridge = FrameBridge(clip.format, 32, 16, device=torch.device("cpu"))
    with pytest.raises(ValueError, match=r"_Matrix must be one of .*; got 14"):
        bridge.to_tensor([clip.get_frame(0)])


def test_check_format_refuses_variable_format_and_size():
    a = core.std.BlankClip(format=vs.RGB24, width=32, height=16, length=2)
    b = core.std.BlankClip(format=vs.YUV420P8, width=32, height=16, length=2)
    c = core.std.BlankClip(format=vs.RGB24, width=64, height=16, length=2)
    with pytest.raises(ValueError, match=r"vs_vgan.interpolate: clip must be a clip of constant format; got a VideoNode \(variable format"):
        check_format(core.std.Splice([a, b], mismatch=True), func="interpolate")
    with pytest.raises(ValueError, match=r"vs_vgan.interpolate: clip must be a clip of constant size; got a VideoNode"):
        check_format(core.std.Splice([a, c], mismatch=True), func="interpolate")


@pytest.mark.parametrize("h, w, m", [(16, 32, 8), (17, 33, 8), (1, 1, 32), (720, 1280, 32), (1080, 1920, 64)])
def test_pad_to_modulo_pads_with_the_edges(h, w, m):
    x = torch.rand(2, 3, h, w)
    padded = pad_to_modulo(x, m)
    assert padded.shape[-2] % m == 0 and padded.shape[-1] % m == 0
    assert padded.shape[-2] - h < m and padded.shape[-1] - w < m
    assert torch.equal(padded[..., :h, :w], x)
    # replicate padding: the last column/row repeats
    assert torch.equal(padded[..., :h, -1], x[..., :, -1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fmt", [vs.RGB24, vs.RGB48, vs.YUV420P10, vs.YUV444PS, vs.GRAYH, vs.RGBH])
def test_round_trip_on_cuda_matches_cpu(fmt):
    fmt = core.get_video_format(fmt)
    src, out = _round_trip(fmt, device="cuda")
    _, out_cpu = _round_trip(fmt, device="cpu")
    for a, b, c in zip(src, out, out_cpu):
        if fmt.sample_type == vs.INTEGER:
            assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= 1
        np.testing.assert_allclose(b.astype(np.float64), c.astype(np.float64), atol=1e-3)


PLANAR_FORMATS = [f for f in FORMATS if f.color_family != vs.RGB]


@pytest.mark.parametrize("fmt", PLANAR_FORMATS, ids=lambda f: f.name)
def test_planes_round_trip_exactly_and_give_the_same_rgb(fmt):
    clip = noise(fmt, length=1, width=32, height=16)
    f = clip.get_frame(0)
    bridge = FrameBridge(fmt, 32, 16, device=torch.device("cpu"))
    groups = bridge.to_planes(f)
    # grouped by size, the full-size group first
    assert groups[0].shape[-2:] == (16, 32)
    assert sum(g.shape[1] for g in groups) == fmt.num_planes
    # at scale 1 the analysis RGB is exactly what to_tensor gives
    torch.testing.assert_close(bridge.planes_to_rgb(groups, f.props), bridge.to_tensor([f]), rtol=0, atol=1e-6)
    # sample values written back are the frame, bit for bit
    fout = core.create_video_frame(fmt, 32, 16)
    bridge.write_planes(groups, fout)
    for a, b in zip(planes(f), planes(fout)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV444P10, vs.YUV422P16])
def test_plane_mixes_map_an_rgb_difference_to_the_planes(fmt):
    """mix @ (rgb1 - rgb0) equals the planes' difference, for frames of one colour."""
    fmt = core.get_video_format(fmt)
    bridge = FrameBridge(fmt, 16, 8, device=torch.device("cpu"))
    props = {"_Matrix": 1, **range_props(False)}
    rgb = torch.tensor([[0.2, 0.5, 0.7], [0.6, 0.3, 0.1]])
    frames = []
    for colour in rgb:
        c = core.std.BlankClip(format=vs.RGBS, width=16, height=8, length=1, color=colour.tolist())
        c = core.resize.Point(c, format=fmt, matrix_s="709", range_s="limited").std.SetFrameProps(**props)
        frames.append(c.get_frame(0))
    values = [torch.cat([g.flatten(2).mean(-1) for g in bridge.to_planes(f)], 1)[0] for f in frames]
    mixes = bridge.plane_mixes(frames[0].props)
    mix = torch.cat([m for m, _ in mixes], 0)
    peak = (1 << fmt.bits_per_sample) - 1
    torch.testing.assert_close(mix @ (rgb[1] - rgb[0]), values[1] - values[0], atol=peak / 255, rtol=0)


def test_gray_plane_mix_is_the_channel_mean():
    bridge = FrameBridge(core.get_video_format(vs.GRAY16), 16, 8, device=torch.device("cpu"))
    ((mix, bounds),) = bridge.plane_mixes({})
    torch.testing.assert_close(mix, torch.full((1, 3), 65535 / 3))
    assert bounds == (0.0, 65535.0)
