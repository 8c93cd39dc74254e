"""The shipped default interpolation model: registered, verified, small, and better than a blend."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import vapoursynth as vs

import vs_vgan
from conftest import painted
from vs_vgan.models import DEFAULT_INTERPOLATION_MODEL, REGISTRY, load_model
from vs_vgan.models.loader import file_sha256, weights_path

CPU = torch.device("cpu")


def texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random colour texture in [0, 1], (3, h, w)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h // 4, w // 4, generator=g)
    x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
    return x[0].clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / torch.mean((a - b) ** 2)))


def test_default_model_is_the_trained_one():
    spec = REGISTRY[DEFAULT_INTERPOLATION_MODEL]
    assert spec.name != "blend" and spec.arch == "flow" and spec.task == "interpolate"
    path = weights_path(spec.weights)
    assert path.is_file() and path.stat().st_size <= 40 * 1024 * 1024
    assert file_sha256(path) == spec.sha256
    card = path.with_suffix(".md")
    assert card.is_file() and spec.name in card.read_text()


@pytest.mark.parametrize("t", [0.5, 0.25])
def test_default_model_follows_motion_better_than_a_blend(t):
    net = load_model(REGISTRY[DEFAULT_INTERPOLATION_MODEL], CPU, torch.float32)
    tex = texture(128, 192)
    shift = 8  # pixels per frame, to the right
    img0 = tex[:, :, 0:128 - 8][None]
    img1 = tex[:, :, shift:shift + 120][None]
    exact = tex[:, :, round(shift * t):round(shift * t) + 120][None]
    pad = (0, 8, 0, 0)  # 128x120 -> 128x128 (modulo 64)
    a, b = F.pad(img0, pad, mode="replicate"), F.pad(img1, pad, mode="replicate")
    with torch.inference_mode():
        out = net(a, b, torch.full((1, 1, 1, 1), t))[..., :120]
    inner = (slice(None), slice(None), slice(16, -16), slice(16, -16))
    ours = psnr(out[inner], exact[inner])
    blend = psnr(torch.lerp(img0, img1, t)[inner], exact[inner])
    assert ours > blend + 6, (ours, blend)


def test_default_model_runs_through_the_node_at_both_scales():
    tex = (texture(72, 136) * 255).round().to(torch.uint8).numpy()
    frames = [np.roll(tex, 4 * i, axis=2) for i in range(3)]

    def paint(n: int, planes: list[np.ndarray]) -> None:
        for p, dst in enumerate(planes):
            np.copyto(dst, frames[n][p, :, :128])

    clip = painted(vs.RGB24, 3, 128, 72, Fraction(24), paint)
    for scale in (1.0, 0.5):
        out = vs_vgan.interpolate(clip, factor=2, scale=scale, scene_detect=False)
        assert out.num_frames == 6 and (out.width, out.height) == (128, 72)
        mid = np.stack([np.asarray(out.get_frame(1)[p]) for p in range(3)]).astype(np.float64)
        want = np.roll(tex, 2, axis=2)[:, :, :128].astype(np.float64)
        err = np.abs(mid - want)[:, 8:-8, 16:-16].mean()
        blend_err = np.abs((frames[0][:, :, :128].astype(np.float64) + frames[1][:, :, :128]) / 2 - want)[:, 8:-8, 16:-16].mean()
        assert err < blend_err / 2, (scale, err, blend_err)


def test_default_predictor_is_the_trained_one():
    from vs_vgan.models import DEFAULT_PREDICTION_MODEL

    spec = REGISTRY[DEFAULT_PREDICTION_MODEL]
    assert spec.task == "predict" and spec.arch == "flow-predict"
    path = weights_path(spec.weights)
    assert path.is_file() and path.stat().st_size <= 40 * 1024 * 1024
    assert file_sha256(path) == spec.sha256
    card = path.with_suffix(".md")
    assert card.is_file() and spec.name in card.read_text()


def test_default_predictor_continues_motion_better_than_repeating():
    from vs_vgan.models import DEFAULT_PREDICTION_MODEL

    net = load_model(REGISTRY[DEFAULT_PREDICTION_MODEL], CPU, torch.float32)
    tex = texture(128, 224, seed=3)
    shift = 6  # pixels per frame, to the right
    frames = [tex[:, :, shift * k:shift * k + 192][None] for k in range(3)]
    with torch.inference_mode():
        out = net.predict(frames[0], frames[1])
    inner = (slice(None), slice(None), slice(16, -16), slice(16, -32))
    ours = psnr(out[inner], frames[2][inner])
    repeat = psnr(frames[1][inner], frames[2][inner])
    assert ours > repeat + 6, (ours, repeat)
