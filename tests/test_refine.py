"""Lucas-Kanade refinement of the flows from t (FlowInterpolator's ``refine``): it recovers
a known motion at every analysis scale, changes nothing when off, and the nodes run it in
the planes of YUV and GRAY clips as the RGB path does."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import vapoursynth as vs

import vs_vgan
from conftest import TINY_FLOW_KWARGS, planes, seeded_state_dict
from vs_vgan.models import ModelSpec
from vs_vgan.models.flownet import FlowInterpolator, guide_pyramid, luma_guide, warp

core = vs.core


def _texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random texture (1, 1, h, w) in 0..1, with detail down to a few pixels."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 1, h // 6, w // 6, generator=g), size=(h, w), mode="bicubic",
                         align_corners=False).clamp(0, 1)


def _shifted_pair(h: int, w: int, dx: float, dy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame 0 and frame 1 = frame 0 moved by (dx, dy) pixels (cut from a larger texture, so
    no edge comes into view)."""
    m = 8
    big = _texture(h + 2 * m, w + 2 * m)
    shift = torch.zeros(1, 2, h + 2 * m, w + 2 * m)
    shift[:, 0], shift[:, 1] = -dx, -dy
    moved = warp(big, shift)  # moved(p) = big(p - d): the content moves by d
    return big[..., m:m + h, m:m + w], moved[..., m:m + h, m:m + w]


@pytest.mark.parametrize("scale, steps", [(0.25, (4, 2)), (0.5, (2,)), (1.0, (2, 2, 2)), (0.25, (1, 1))])
def test_refinement_recovers_a_known_motion(scale, steps):
    """From flows that are off by about a pixel, the steps remove most of the error at every
    relation of the guides to the flows' grid (finer, equal, coarser); several steps land
    within a tenth of a pixel (a step moves the motion by one guide pixel at most)."""
    net = FlowInterpolator(**{**TINY_FLOW_KWARGS, "stem": 4, "refine": steps}).eval()
    h, w = 128, 192
    dx, dy = 2.6, -1.3  # frame pixels, frame 0 -> frame 1
    img0, img1 = _shifted_pair(h, w, dx, dy)
    t = torch.full((1, 1, 1, 1), 0.5)
    unit = net.stem / scale  # frame pixels per level-0 pixel (the flows' unit)
    hf, wf = int(h * scale), int(w * scale)  # the analysed grid (128 and 192 divide by the modulo here)
    truth = torch.tensor([-0.5 * dx, -0.5 * dy, 0.5 * dx, 0.5 * dy]).view(1, 4, 1, 1) / unit
    start = truth + torch.tensor([0.7, -0.6, -0.7, 0.6]).view(1, 4, 1, 1) / unit
    start = start.expand(1, 4, hf, wf)
    with torch.inference_mode():
        out = net.refine_flows(start, t, scale, net.refine_guides(img0), net.refine_guides(img1))
    inner = (slice(None), slice(None), slice(hf // 8, -hf // 8), slice(wf // 8, -wf // 8))
    before = float((start - truth)[inner].abs().mean() * unit)
    after = float((out - truth)[inner].abs().mean() * unit)
    assert before > 0.6
    assert after < 0.2 * before, (before, after)
    if len(steps) > 1:
        assert after < 0.1, (before, after)


def test_no_steps_change_nothing():
    """refine=() is the network as it was: same output, and refine_flows hands back its input."""
    a, b = _shifted_pair(64, 96, 1.5, 0.5)
    a, b = a.expand(1, 3, -1, -1) * 0.8 + 0.1, b.expand(1, 3, -1, -1) * 0.8 + 0.1
    plain = FlowInterpolator(**TINY_FLOW_KWARGS).eval()
    state = seeded_state_dict(plain, 3)
    plain.load_state_dict(state)
    off = FlowInterpolator(**TINY_FLOW_KWARGS, refine=()).eval()
    off.load_state_dict(state)
    on = FlowInterpolator(**TINY_FLOW_KWARGS, refine=(2,)).eval()
    on.load_state_dict(state)
    t = torch.full((1, 1, 1, 1), 0.5)
    with torch.inference_mode():
        want = plain(a, b, t, 0.5)
        assert torch.equal(off(a, b, t, 0.5), want)
        assert not torch.equal(on(a, b, t, 0.5), want)
        flows, _ = off.fields(off.encode(a, b, 0.5), t)
        assert off.refine_flows(flows, t, 0.5, {}, {}) is flows


@pytest.mark.parametrize("bad", [(3,), (0,), (True,), "42", 2])
def test_refine_refuses_bad_steps(bad):
    with pytest.raises(ValueError, match="refine must be a list of steps"):
        FlowInterpolator(**TINY_FLOW_KWARGS, refine=bad)


@pytest.mark.parametrize("kw, match", [({"refine_window": 0}, "refine_window"), ({"refine_lambda": 0.0}, "refine_lambda")])
def test_refine_refuses_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        FlowInterpolator(**TINY_FLOW_KWARGS, refine=(2,), **kw)


def test_guide_pyramid_is_block_means():
    x = torch.rand(1, 1, 37, 50, generator=torch.Generator().manual_seed(1))
    pyr = guide_pyramid(x, (4, 2, 1))
    assert sorted(pyr) == [1, 2, 4]
    assert pyr[1] is x
    torch.testing.assert_close(pyr[2], F.avg_pool2d(x, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(pyr[4], F.avg_pool2d(x, 4), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no level 1"):
        guide_pyramid(pyr[2], (1,), have=2)


def test_luma_guide_is_bt709():
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(luma_guide(rgb), torch.full((1, 1, 2, 2), 0.2126))


def _refining(spec: ModelSpec, steps: tuple[int, ...]) -> ModelSpec:
    return ModelSpec(name=f"{spec.name}-refine", task=spec.task, arch=spec.arch, kwargs={**spec.kwargs, "refine": steps},
                     weights=spec.weights, sha256=spec.sha256, modulo=spec.modulo)


def _moving_clip(fmt: int, n: int = 4, w: int = 96, h: int = 64) -> vs.VideoNode:
    """``n`` frames of a texture moving 3 pixels right per frame, in RGB24 then converted."""
    tex = (_texture(h, w + 3 * n, seed=2)[0, 0].numpy() * 200 + 20).astype(np.uint8)
    blank = core.std.BlankClip(format=vs.RGB24, width=w, height=h, length=n, fpsnum=24, fpsden=1)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), np.roll(tex, 3 * n, axis=1)[:, :w] if p != 1 else tex[:, 3 * n:3 * n + w])
        return out

    clip = core.std.ModifyFrame(blank, blank, fill)
    if fmt == vs.RGB24:
        return clip
    return core.resize.Bicubic(clip, format=fmt, matrix_s="709")


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.GRAY8, vs.RGB24])
def test_nodes_refine_in_every_format(tiny_flow, fmt):
    """A refining model runs through the nodes in planes (YUV, GRAY) and in RGB; the
    in-between frames differ from the same weights' without refinement, the source frames
    pass through, and the output is the same on a second request."""
    src = _moving_clip(fmt)
    plain = vs_vgan.interpolate(src, factor=2, model=tiny_flow, scene_detect=False, scale=0.5)
    refined = vs_vgan.interpolate(src, factor=2, model=_refining(tiny_flow, (2, 1)), scene_detect=False, scale=0.5)
    assert refined.num_frames == plain.num_frames == 2 * src.num_frames
    first = [planes(refined.get_frame(i)) for i in range(4)]
    np.testing.assert_array_equal(first[0][0], planes(src.get_frame(0))[0])
    assert any(not np.array_equal(p, q) for p, q in zip(first[1], planes(plain.get_frame(1))))
    again = vs_vgan.interpolate(src, factor=2, model=_refining(tiny_flow, (2, 1)), scene_detect=False, scale=0.5)
    for i in (3, 1):
        for p, q in zip(planes(again.get_frame(i)), first[i]):
            np.testing.assert_array_equal(p, q)


def test_tune_refine_scores_schedules_on_footage(tmp_path):
    """scripts/tune_refine.py scores each schedule on the clips' triplets (gap 2 and 4) and
    times it; a bad schedule is refused with one line."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import ffmpeg_exe, write_exported_flow

    root = Path(__file__).resolve().parent.parent
    clip = tmp_path / "moving.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=96x64:rate=24:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)],
                   check=True)
    weights = write_exported_flow(tmp_path / "cand.safetensors", dict(TINY_FLOW_KWARGS))
    out = tmp_path / "tune.json"
    script = [sys.executable, str(root / "scripts" / "tune_refine.py"), "--weights", str(weights), "--data", str(tmp_path),
              "--clips", clip.name, "--analysis-pixels", "2000"]
    r = subprocess.run(script + ["--schedules", "[[], [2, 1]]", "--json", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["refine"] for row in rows] == [[], [2, 1]]
    for row in rows:
        assert set(row["psnr_by_gap"]) == {"2", "4"} and all(10 < v < 99 for v in row["psnr_by_gap"].values())
    assert rows[0]["refine_ms_720p"] == 0 and rows[1]["refine_ms_720p"] > 0
    assert rows[0]["psnr_by_gap"] != rows[1]["psnr_by_gap"]
    bad = subprocess.run(script + ["--schedules", "[[3]]"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "refine must be a list of steps" in bad.stderr


def test_training_renders_through_the_steps():
    """With ``refine`` in the model, training's render (autograd path) is inference's
    (synthesize, the in-place fast path) within float rounding, and gradients reach the
    network through the steps."""
    from vs_vgan.train.loop import _generate

    net = FlowInterpolator(**{**TINY_FLOW_KWARGS, "stem": 4, "radius": (1, 1), "convex": True, "refine": (4, 2)})
    net.load_state_dict(seeded_state_dict(net, 4))
    a, b = _shifted_pair(64, 64, 2.0, 1.0)
    a, b = a.expand(2, 3, -1, -1) * 0.8 + 0.1, b.expand(2, 3, -1, -1) * 0.8 + 0.1
    batch = {"img0": a, "img1": b, "t": torch.tensor([0.3, 0.6]).view(2, 1, 1, 1)}
    pred, _, _ = _generate(net, batch, 0.25)
    pred.mean().backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.flow.parameters())
    with torch.inference_mode():
        want = net.synthesize(net.encode(a, b, 0.25), batch["t"])
    torch.testing.assert_close(pred.detach(), want, atol=1e-4, rtol=0)
