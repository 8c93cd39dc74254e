"""Registry, the audited loader, and the flow generator's contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import vapoursynth as vs

import vs_vgan

from conftest import TINY_FLOW_KWARGS, assert_planar_luma_is_rgb_luma, frame_bytes, make_tiny_flow_spec, moving
from vs_vgan.models import DEFAULT_INTERPOLATION_MODEL, REGISTRY, ModelSpec, get_spec, list_models, load_model
from vs_vgan.models.flownet import FlowInterpolator, correlation, warp
from vs_vgan.models.loader import weights_path

core = vs.core

CPU = torch.device("cpu")


def test_default_model_is_registered_for_interpolation():
    spec = REGISTRY[DEFAULT_INTERPOLATION_MODEL]
    assert spec.task == "interpolate"
    assert spec in list_models("interpolate")
    assert get_spec(DEFAULT_INTERPOLATION_MODEL, task="interpolate", func="interpolate") is spec


def test_registered_weights_exist_and_match():
    for spec in REGISTRY.values():
        if spec.weights is not None:
            load_model(spec, CPU, torch.float32)  # raises on a missing file or a bad sha256


def test_unknown_model_name():
    with pytest.raises(ValueError) as info:
        get_spec("nope", task="interpolate", func="interpolate")
    assert str(info.value).startswith("vs_vgan.interpolate: model must be one of 'vgan-flow-v1', 'blend'")
    assert "a ModelSpec or the path of a RIFE flownet.pkl; got 'nope'" in str(info.value)


def test_model_of_wrong_type_or_task():
    with pytest.raises(TypeError, match=r"vs_vgan.interpolate: model must be one of .*; got 3"):
        get_spec(3, task="interpolate", func="interpolate")
    with pytest.raises(ValueError, match=r"model must be a model for the 'predict' task"):
        get_spec("blend", task="predict", func="predict")


def test_spec_validation():
    with pytest.raises(ValueError, match="arch must be one of"):
        ModelSpec(name="x", task="interpolate", arch="nope")
    with pytest.raises(ValueError, match="needs its sha256"):
        ModelSpec(name="x", task="interpolate", arch="flow", weights="x.safetensors")
    with pytest.raises(ValueError, match="task must be one of"):
        ModelSpec(name="x", task="upscale", arch="blend")


def test_missing_weights_file_names_the_file(tmp_path):
    path = tmp_path / "gone.safetensors"
    spec = ModelSpec(name="gone", task="interpolate", arch="flow", kwargs=TINY_FLOW_KWARGS,
                     weights=str(path), sha256="0" * 64, modulo=8)
    with pytest.raises(FileNotFoundError) as info:
        load_model(spec, CPU, torch.float32)
    assert "vs_vgan.interpolate: the weights file of model 'gone' must exist" in str(info.value)
    assert str(path) in str(info.value)


def test_sha256_mismatch_names_the_file(tmp_path, tiny_flow):
    bad = ModelSpec(name="bad", task="interpolate", arch="flow", kwargs=TINY_FLOW_KWARGS,
                    weights=tiny_flow.weights, sha256="f" * 64, modulo=8)
    with pytest.raises(ValueError) as info:
        load_model(bad, CPU, torch.float32)
    msg = str(info.value)
    assert tiny_flow.weights in msg and f"must have sha256 {'f' * 64}; got {tiny_flow.sha256}" in msg


def test_strict_loading_refuses_other_shapes(tmp_path):
    spec = make_tiny_flow_spec(tmp_path)
    other = ModelSpec(name="other", task="interpolate", arch="flow", kwargs={**TINY_FLOW_KWARGS, "channels": (4, 12)},
                      weights=spec.weights, sha256=spec.sha256, modulo=8)
    with pytest.raises(ValueError, match=r"encoder\.1\.0\.0\.weight is \[8, 4, 3, 3\] in the file but \[12, 4, 3, 3\] in the network"):
        load_model(other, CPU, torch.float32)


def test_loaded_model_is_eval_frozen_and_real(tiny_flow):
    net = load_model(tiny_flow, CPU, torch.float32)
    assert not net.training
    assert all(not p.requires_grad and p.device.type == "cpu" for p in net.parameters())
    assert all(b.device.type == "cpu" for b in net.buffers())
    assert load_model(tiny_flow, CPU, torch.float32) is net  # cached


def test_shipped_weights_resolve_inside_the_package():
    path = weights_path("x.safetensors")
    assert path.parent.name == "models" or path.parent.name == "weights"
    assert weights_path("/abs/x.safetensors").as_posix() == "/abs/x.safetensors"


def _inputs(h=16, w=24, seed=0):
    rng = np.random.default_rng(seed)
    a = torch.from_numpy(rng.random((1, 3, h, w), dtype=np.float32))
    b = torch.roll(a, shifts=2, dims=-1)
    return a, b


def test_tiny_flow_golden_output(tiny_flow):
    net = load_model(tiny_flow, CPU, torch.float32)
    a, b = _inputs()
    with torch.inference_mode():
        out = net(a, b, torch.full((1, 1, 1, 1), 0.5))
    assert out.shape == (1, 3, 16, 24)
    got = out[0, :, 5, 8:12].numpy()
    expected = np.array(GOLDEN, dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-4)


# Measured once from the seeded tiny network (weights from numpy's generator, so only
# the convolution/warp arithmetic can move these); a change here is a behaviour change.
GOLDEN = [[0.729603, 0.460108, 0.851513, 0.516227],
          [0.074167, 0.592790, 0.458338, 0.441303],
          [0.757811, 0.418597, 0.517529, 0.227661]]


def test_flow_synthesize_is_deterministic_and_reuses_the_pair(tiny_flow):
    net = load_model(tiny_flow, CPU, torch.float32)
    a, b = _inputs()
    with torch.inference_mode():
        state = net.encode(a, b)
        outs = [net.synthesize(state, torch.full((1, 1, 1, 1), t)) for t in (0.25, 0.5, 0.75)]
        again = net.synthesize(net.encode(a, b), torch.full((1, 1, 1, 1), 0.5))
    assert torch.equal(outs[1], again)
    assert not torch.equal(outs[0], outs[2])
    assert all(0 <= o.min() and o.max() <= 1 for o in outs)


def test_warp_by_zero_flow_is_identity_and_shifts_by_whole_pixels():
    x = torch.rand(1, 3, 8, 10)
    assert torch.allclose(warp(x, torch.zeros(1, 2, 8, 10)), x, atol=1e-6)
    flow = torch.zeros(1, 2, 8, 10)
    flow[:, 0] = 1.0
    shifted = warp(x, flow)
    assert torch.allclose(shifted[..., :-1], x[..., 1:], atol=1e-6)


def test_flow_modulo_follows_depth():
    assert FlowInterpolator(**TINY_FLOW_KWARGS).modulo == 8
    assert FlowInterpolator(channels=(4, 8), radius=(1, 1), stem=1).modulo == 4
    net = FlowInterpolator()
    assert net.modulo == 64 and net.modulo_for(0.5) == 128 and net.modulo_for(0.25) == 256


def test_flow_arguments_are_checked():
    with pytest.raises(ValueError, match="stem must be 1, 2 or 4; got 3"):
        FlowInterpolator(stem=3)
    with pytest.raises(ValueError, match="one radius per level"):
        FlowInterpolator(channels=(4, 8), radius=(0, 1, 2))
    with pytest.raises(ValueError, match="> 0 above level 0"):
        FlowInterpolator(channels=(4, 8), radius=(1, 0))
    net = FlowInterpolator(**TINY_FLOW_KWARGS)
    a = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="scale must be one of"):
        net.encode(a, a, scale=0.3)


def test_correlation_matches_a_direct_sum():
    g = torch.Generator().manual_seed(0)
    f0, f1 = torch.randn(2, 5, 6, 7, generator=g), torch.randn(2, 5, 6, 7, generator=g)
    out = correlation(f0, f1, 2)
    assert out.shape == (2, 25, 6, 7)
    for k, (dy, dx) in enumerate((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)):
        for y, x in ((0, 0), (3, 4), (5, 6), (2, 1)):
            yy, xx = y + dy, x + dx
            want = (f0[:, :, y, x] * f1[:, :, yy, xx]).mean(1) if 0 <= yy < 6 and 0 <= xx < 7 else torch.zeros(2)
            torch.testing.assert_close(out[:, k, y, x], want)


def test_analysis_scale_keeps_the_output_size(tiny_flow):
    net = load_model(tiny_flow, CPU, torch.float32)
    a, b = _inputs(32, 48)
    with torch.inference_mode():
        full = net(a, b, torch.full((1, 1, 1, 1), 0.5))
        half = net(a, b, torch.full((1, 1, 1, 1), 0.5), scale=0.5)
    assert full.shape == half.shape == (1, 3, 32, 48)
    assert not torch.equal(full, half)


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_lerp_enlargement_equals_bilinear_interpolate(factor):
    from vs_vgan.models.flownet import _upsample_lerp

    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(factor))
    ref = torch.nn.functional.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    torch.testing.assert_close(_upsample_lerp(x, factor), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor", [2, 4])
def test_grid_enlargement_is_identity_plus_enlarged_flow(factor):
    from vs_vgan.models.flownet import _grid_upsample, _upsample_lerp

    net = FlowInterpolator(**TINY_FLOW_KWARGS)
    h, w = 6, 9
    big_h, big_w = h * factor, w * factor
    dx, dy = 2.0 / (big_w - 1), 2.0 / (big_h - 1)
    flow = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(1)) * 0.05
    low = flow.permute(0, 2, 3, 1) + net._base_grid(h, w, CPU, torch.float32, stride=factor, step=(dx, dy))
    got = _grid_upsample(low, factor, (factor * dx, factor * dy))
    want = net._base_grid(big_h, big_w, CPU, torch.float32) + _upsample_lerp(flow, factor).permute(0, 2, 3, 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_planar_render_of_luma_is_the_luma_of_the_rgb_render(tiny_flow, scale):
    """Warp, blend and residual are linear in the image: rendering a luma plane with the
    luma row as the residual mix gives the luma of the RGB output (where nothing clips)."""
    net = load_model(tiny_flow, CPU, torch.float32)
    a, b = _inputs()
    assert_planar_luma_is_rgb_luma(net, 0.25 + 0.5 * a, 0.25 + 0.5 * b, scale)  # clear of the clamp


def test_prepare_and_pair_equal_encode(tiny_flow):
    net = load_model(tiny_flow, CPU, torch.float32)
    a, b = _inputs()
    t = torch.full((1, 1, 1, 1), 0.5)
    with torch.inference_mode():
        one = net.synthesize(net.encode(a, b), t)
        two = net.synthesize(net.pair(net.prepare(a), net.prepare(b)), t)
        odd = net.synthesize(net.encode(a[..., :13, :21], b[..., :13, :21]), t)  # padded inside
    torch.testing.assert_close(one, two, atol=1e-5, rtol=0)
    assert odd.shape[-2:] == (13, 21)


def test_the_spec_is_where_a_models_facts_are_read(tiny_flow):
    """Task, size (kwargs) and modulo are the spec's fields; context frames and t its
    architecture's declared capabilities, read through the spec; a modulo the network
    can't use is refused naming the model."""
    from vs_vgan.models import REGISTRY

    assert REGISTRY["vgan-predict-v1"].capabilities.context == 2 and REGISTRY["vgan-predict-v1"].capabilities.t == 2.0
    assert REGISTRY["vgan-flow-v1"].capabilities.context == 0 and REGISTRY["vgan-flow-v1"].capabilities.planar
    assert not REGISTRY["blend"].capabilities.frame_analysis
    odd = ModelSpec(name="odd", task="interpolate", arch="flow", kwargs=tiny_flow.kwargs, weights=tiny_flow.weights,
                    sha256=tiny_flow.sha256, modulo=12)
    with pytest.raises(ValueError, match=r"^vs_vgan.interpolate: the modulo of model 'odd' must be a multiple of 8"):
        load_model(odd, CPU, torch.float32)


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
