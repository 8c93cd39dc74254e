"""The flow generator's growth options: a level-0 cost volume and convex flow upsampling,
and growing a trained model into them (vs_vgan.models.flownet.grow_state, train --grow)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_FLOW_KWARGS, assert_planar_luma_is_rgb_luma, seeded_state_dict
from vs_vgan.models.flownet import FlowInterpolator, _bilinear_logits, convex_upsample, grow_state

GROWN_KWARGS = {**TINY_FLOW_KWARGS, "radius": (1, 1), "convex": True}


def _pair(h: int = 32, w: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(1, 3, h, w, generator=g)
    return a, torch.roll(a, shifts=(1, 3), dims=(-2, -1))


@pytest.mark.parametrize("s", [1, 2, 4])
def test_convex_upsampling_starts_as_bilinear(s):
    flow = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(s))
    logits = _bilinear_logits(s, floor=1e-12).view(1, -1, 1, 1).expand(2, -1, 5, 7)
    want = F.interpolate(flow, scale_factor=s, mode="bilinear", align_corners=False)
    torch.testing.assert_close(convex_upsample(flow, logits, s), want, atol=1e-5, rtol=0)


def test_convex_upsampling_takes_the_neighbour_its_weights_choose():
    """All weight on neighbour k (row-major in the 3x3) copies that neighbour to every
    output pixel of the input pixel, edges replicated: the layout of the logits."""
    s, h, w = 2, 3, 4
    flow = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    padded = F.pad(flow, (1, 1, 1, 1), mode="replicate")
    for k in range(9):
        logits = torch.full((1, 9, s, s, h, w), -50.0)
        logits[:, k] = 50.0
        up = convex_upsample(flow, logits.view(1, 9 * s * s, h, w), s)
        nb = padded[:, :, k // 3:k // 3 + h, k % 3:k % 3 + w]
        want = nb.repeat_interleave(s, -2).repeat_interleave(s, -1)
        torch.testing.assert_close(up, want, atol=1e-4, rtol=0)


def test_convex_upsampling_is_convex_in_the_neighbours():
    flow = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    logits = torch.randn(1, 9 * 16, 6, 6, generator=torch.Generator().manual_seed(4)) * 5
    up = convex_upsample(flow, logits, 4)
    padded = F.pad(flow, (1, 1, 1, 1), mode="replicate")
    lo = -F.max_pool2d(-padded, 3, 1).repeat_interleave(4, -2).repeat_interleave(4, -1)
    hi = F.max_pool2d(padded, 3, 1).repeat_interleave(4, -2).repeat_interleave(4, -1)
    assert bool(((up >= lo - 1e-5) & (up <= hi + 1e-5)).all())


def test_a_grown_network_starts_where_the_smaller_one_was():
    small = FlowInterpolator(**TINY_FLOW_KWARGS).eval()
    small.load_state_dict(seeded_state_dict(small, 7))
    big = FlowInterpolator(**GROWN_KWARGS).eval()
    new = grow_state(big, small.state_dict())
    assert {n.rsplit(".", 1)[0] for n in new} == {"flow.0.body.0.0", "flow.0.body.1.0", "flow.0.body.2.0",
                                                  "flow.0.head", "synth_up"}
    a, b = _pair()
    t = torch.full((1, 1, 1, 1), 0.4)
    with torch.inference_mode():
        for scale in (1.0, 0.5):
            before, after = small(a, b, t, scale), big(a, b, t, scale)
            # the convex weights start at bilinear's within their floor (1e-4 on unused neighbours)
            torch.testing.assert_close(after, before, atol=2e-3, rtol=0)
    # the grown parts are real: a change of the new flow head changes the output
    with torch.no_grad():
        big.flow[0].head.bias.fill_(0.5)
    with torch.inference_mode():
        assert (big(a, b, t) - small(a, b, t)).abs().max() > 1e-2


def test_growing_refuses_weights_that_do_not_fit():
    big = FlowInterpolator(**GROWN_KWARGS)
    small = FlowInterpolator(**TINY_FLOW_KWARGS)
    with pytest.raises(ValueError, match="unknown"):
        grow_state(small, big.state_dict())  # the larger into the smaller
    other = FlowInterpolator(**{**TINY_FLOW_KWARGS, "synth": 6})
    with pytest.raises(ValueError, match="other shapes"):
        grow_state(big, other.state_dict())


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_grown_planar_render_of_luma_is_the_luma_of_the_rgb_render(scale):
    """The convex flows sit at the analysed size: the planar (per-plane) render takes them
    as the RGB one does."""
    net = FlowInterpolator(**GROWN_KWARGS).eval()
    net.load_state_dict(seeded_state_dict(net, 2))
    a, b = _pair(16, 24)
    flows_t, fine = assert_planar_luma_is_rgb_luma(net, 0.25 + 0.5 * a, 0.25 + 0.5 * b, scale)
    assert flows_t.shape[-2:] == fine.shape[-2:]


def test_trainer_grows_from_smaller_weights_and_refuses_the_teacher(tmp_path):
    from safetensors.torch import save_file

    from vs_vgan.train.config import TrainConfig
    from vs_vgan.train.loop import Trainer

    small = FlowInterpolator(**TINY_FLOW_KWARGS)
    path = tmp_path / "small.safetensors"
    save_file(seeded_state_dict(small, 1), str(path))
    cfg = TrainConfig(model=GROWN_KWARGS, crop=32, batch=1)
    tr = Trainer(cfg)
    with pytest.raises(RuntimeError):  # without grow: strict
        tr.init_from(path)
    new = tr.init_from(path, grow=True)
    assert new and all(n.startswith(("flow.0.", "synth_up.")) for n in new)
    for (name, p), e in zip(tr.net.state_dict().items(), tr.ema.state_dict().values()):
        assert torch.equal(p, e), name
    with pytest.raises(ValueError, match="teacher"):
        Trainer(cfg.replace(teacher=str(tmp_path / "flownet.pkl")))


def test_grow_needs_init(capsys):
    from vs_vgan.train.command import main

    with pytest.raises(SystemExit) as exc:
        main(["--grow", "--init", "none", "--data", "nowhere"])
    assert exc.value.code == 2
    assert "--grow needs --init" in capsys.readouterr().err


def test_exported_spec_reads_the_config_and_refuses_files_without_one(tmp_path):
    from safetensors.torch import save_file

    from vs_vgan.models import load_model
    from vs_vgan.models.loader import exported_spec

    net = FlowInterpolator(**GROWN_KWARGS)
    state = seeded_state_dict(net, 4)
    good, bare = tmp_path / "grown.safetensors", tmp_path / "bare.safetensors"
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in GROWN_KWARGS.items()}
    save_file(state, str(good), metadata={"config": json.dumps({"task": "interpolate", "model": kwargs})})
    save_file(state, str(bare))
    spec = exported_spec(good, 4096)
    assert (spec.name, spec.arch, spec.modulo, spec.analysis_pixels) == ("grown", "flow", net.modulo, 4096)
    assert spec.default_scale(128, 128) == 0.5
    loaded = load_model(spec, torch.device("cpu"), torch.float32)
    assert loaded.convex and loaded.radius == (1, 1)
    with pytest.raises(ValueError, match="no training config"):
        exported_spec(bare)
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not a tensor file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        exported_spec(junk)
