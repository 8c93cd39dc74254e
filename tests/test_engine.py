"""vs_vgan.engine and the model contract: pair states keyed by the exact pair, networks
that say what they can do (a RIFE-like network with no reusable state, a predictor that
is not a flow interpolator), and refusals of false declarations."""
from __future__ import annotations

from fractions import Fraction
from types import MappingProxyType

import numpy as np
import pytest
import torch
import vapoursynth as vs
from torch import nn

import vs_vgan
from conftest import frame_bytes, moving, numbered, ramp
from vs_vgan import engine
from vs_vgan.frames import FrameBridge
from vs_vgan.models import ModelSpec, loader, registry
from vs_vgan.models.contract import Capabilities, capabilities_of

core = vs.core


class OncePerT(nn.Module):
    """RIFE's shape: one run per pair and t, nothing reusable; frames padded to 8."""

    capabilities = Capabilities(pair_state=False)
    modulo = 8
    runs: list[float] = []

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert img0.shape[-2] % 8 == 0 and img0.shape[-1] % 8 == 0
        OncePerT.runs.append(float(t))
        return torch.lerp(img0, img1, t.to(img0.dtype))


class LinearPredictor(nn.Module):
    """A predictor that is no flow interpolator: frame n = 2 f[n-1] - f[n-2] (the pair's
    line at t = 2), with a reusable pair state."""

    capabilities = Capabilities(pair_state=True, context=2, t=2.0)
    modulo = 1

    def encode(self, img0: torch.Tensor, img1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return img0, img1

    def synthesize(self, state: tuple[torch.Tensor, torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        return torch.lerp(state[0], state[1], t.to(state[0].dtype)).clamp(0, 1)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.synthesize(self.encode(img0, img1), t)


@pytest.fixture
def test_architectures(monkeypatch):
    """This module's networks registered as architectures for the test."""
    archs = MappingProxyType({**registry.ARCHITECTURES, "once-per-t": f"{__name__}:OncePerT",
                              "linear-predict": f"{__name__}:LinearPredictor"})
    monkeypatch.setattr(registry, "ARCHITECTURES", archs)
    monkeypatch.setattr(loader, "ARCHITECTURES", archs)
    return {"once": ModelSpec(name="once", task="interpolate", arch="once-per-t", modulo=8),
            "linear": ModelSpec(name="linear", task="predict", arch="linear-predict")}


def test_a_network_without_pair_state_runs_once_per_pair_and_t(test_architectures):
    src = moving(vs.RGB24, length=4, width=44, height=30)
    OncePerT.runs.clear()
    out = vs_vgan.interpolate(src, factor=4, model=test_architectures["once"], device="cpu", scene_detect=False)
    blend = vs_vgan.interpolate(src, factor=4, model="blend", device="cpu", scene_detect=False)
    for k in range(out.num_frames):  # padded to 8 and cropped back: the blend's bytes
        assert frame_bytes(out.get_frame(k)) == frame_bytes(blend.get_frame(k)), k
    assert sorted(OncePerT.runs) == sorted([0.25, 0.5, 0.75] * 3)  # every (pair, t) once, no state reused


def test_a_predictor_that_is_not_a_flow_interpolator(test_architectures):
    src = ramp(vs.GRAY8, length=8, width=16, height=16, step=10.0)
    out = vs_vgan.predict(src, model=test_architectures["linear"], device="cpu", scene_detect=False)
    ext = vs_vgan.extend(src[:3], frames=4, model=test_architectures["linear"], device="cpu", scene_detect=False)
    for n in range(2, 8):  # the line through the two frames before: exactly the ramp
        assert np.asarray(out.get_frame(n)[0])[0, 0] == 10 * n, n
    assert [int(np.asarray(ext.get_frame(n)[0])[0, 0]) for n in range(7)] == [0, 10, 20, 30, 40, 50, 60]


def test_prediction_nodes_refuse_a_network_without_context(test_architectures, tiny_flow):
    flow_as_predictor = ModelSpec(name="flow", task="predict", arch="flow", kwargs=tiny_flow.kwargs,
                                  weights=tiny_flow.weights, sha256=tiny_flow.sha256, modulo=tiny_flow.modulo)
    with pytest.raises(ValueError, match=r"^vs_vgan.predict: model must be a prediction model \(task 'predict', "
                                         r"2 context frames\); got 'flow'"):
        vs_vgan.predict(moving(length=4), model=flow_as_predictor, device="cpu")


def test_pair_states_are_keyed_by_the_exact_pair(tiny_flow):
    """(0, 1) and (0, 2) are two pairs (a cache keyed by the left frame alone mixed them up)."""
    clip = moving(vs.RGB24, length=3)
    network = engine.load_network("interpolate", clip, tiny_flow, "interpolate", "blend", "cpu", "fp32", 1.0, None)
    runner = engine.Runner(network, FrameBridge(clip.format, clip.width, clip.height, device=network.device), 4)
    f = [clip.get_frame(i) for i in range(3)]
    near, far = runner.pair_state(0, 1, f[0], f[1]), runner.pair_state(0, 2, f[0], f[2])
    assert near is not far and not torch.equal(near.flows, far.flows)
    assert runner.pair_state(0, 1, f[0], f[1]) is near  # cached
    assert len(runner.frames) == 3 and len(runner.pairs) == 2


def test_false_or_missing_declarations_are_refused():
    class Undeclared(nn.Module):
        modulo = 1

    class Boasting(OncePerT):
        capabilities = Capabilities(pair_state=True, frame_analysis=True, planar=True)

    with pytest.raises(TypeError, match="Undeclared declares no capabilities"):
        capabilities_of(Undeclared())
    with pytest.raises(TypeError, match="Boasting declares pair_state but lacks the methods of PairStateNetwork"):
        capabilities_of(Boasting())
    with pytest.raises(ValueError, match="planar needs frame_analysis"):
        Capabilities(planar=True)
    with pytest.raises(ValueError, match="a predictor has context > 0 and its t"):
        Capabilities(context=2)
    from vs_vgan.models.flownet import FlowInterpolator
    from vs_vgan.models.prednet import FlowPredictor

    assert capabilities_of(FlowInterpolator(channels=(4, 8), radius=(0, 1), stem=2, synth=4)).planar
    assert capabilities_of(FlowPredictor(channels=(4, 8), radius=(0, 1), stem=2, synth=4)).t == 2.0


def test_every_cache_is_bounded(tiny_flow, monkeypatch):
    """The runner's caches hold at most their size however many frames pass."""
    from vs_vgan import nodes

    made = []

    class Spy(engine.Runner):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(nodes, "Runner", Spy)
    out = vs_vgan.interpolate(moving(vs.RGB24, length=30), factor=2, model=tiny_flow, device="cpu", scene_detect=False)
    for f in out.frames():
        pass
    (runner,) = made
    assert 0 < len(runner.frames) <= runner.frames.maxsize < 30
    assert 0 < len(runner.pairs) <= runner.pairs.maxsize < 29
    cache = engine.ComputeCache(3)
    for i in range(50):
        cache.get(i, lambda i=i: i)
    assert len(cache) == 3


# ---------------------------------------------------------------------- robustness (issue 13)
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
        out = engine.remap(numbered(length), timeline)
        assert out.num_frames == timeline.num_frames
        got = [f.props["src"] for f in out.frames()]
        assert got == [k * timeline.ratio.denominator // timeline.ratio.numerator for k in range(out.num_frames)]


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
