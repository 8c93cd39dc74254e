"""Shared fixtures: a real VapourSynth core, synthetic clips and tiny seeded networks."""
from __future__ import annotations

import functools
import random
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import vapoursynth as vs

from vs_vgan.ffmpeg import find_ffmpeg
from vs_vgan.models import ModelSpec
from vs_vgan.models.loader import file_sha256

TINY_FLOW_KWARGS = {"channels": (4, 8), "radius": (0, 1), "stem": 2, "synth": 4}


@functools.cache
def ffmpeg_exe() -> str:
    """The ffmpeg the tests run: ``vs_vgan.ffmpeg.find_ffmpeg()``'s (``VS_VGAN_FFMPEG``, PATH,
    else imageio-ffmpeg's static one, a dependency), so that no test needs a system ffmpeg;
    where there is none at all the calling test fails rather than skips."""
    found = find_ffmpeg()
    if found is None:
        pytest.fail("no ffmpeg: none on PATH and no imageio-ffmpeg (a dependency of vs_vgan: "
                    "pip install imageio-ffmpeg)", pytrace=False)
    return found.path


def packets(path: Path | str) -> list[tuple[str, Fraction, Fraction]]:
    """Every packet of ``path`` in file order as ``(media type, pts, duration)``, both in
    seconds, exact: what ``ffprobe -show_packets`` lists, read without ffprobe through
    ffmpeg's framemd5 muxer on a stream copy (``-copyts``: the timestamps as stored)."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-copyts", "-i", str(path), "-map", "0",
                          "-c", "copy", "-f", "framemd5", "-"], check=True, capture_output=True, text=True).stdout
    time_base: dict[int, Fraction] = {}
    kind: dict[int, str] = {}
    found = []
    for line in out.splitlines():
        if line.startswith(("#tb ", "#media_type ")):  # "#tb 0: 1/1000", "#media_type 0: video"
            key, _, rest = line[1:].partition(" ")
            index, _, value = rest.partition(":")
            if key == "tb":
                time_base[int(index)] = Fraction(value.strip())
            else:
                kind[int(index)] = value.strip()
        elif line and not line.startswith("#"):  # stream, dts, pts, duration, size, hash[, side data]
            stream, _, pts, duration = (int(field) for field in line.split(",")[:4])
            found.append((kind[stream], pts * time_base[stream], duration * time_base[stream]))
    return found


def frame_rate(path: Path | str) -> Fraction:
    """The frame rate of the first video stream of ``path`` as ffmpeg reads it (ffprobe's
    ``r_frame_rate``), exact: the F field of the y4m header ffmpeg writes for its first frame."""
    y4m = subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-i", str(path), "-map", "0:v:0",
                          "-frames:v", "1", "-f", "yuv4mpegpipe", "-"], check=True, capture_output=True).stdout
    header = y4m.split(b"\n", 1)[0].decode()  # "YUV4MPEG2 W640 H480 F26777:500 Ip ..."
    num, den = next(field[1:] for field in header.split() if field.startswith("F")).split(":")
    return Fraction(int(num), int(den))


@pytest.fixture
def core() -> vs.Core:
    return vs.core


@pytest.fixture
def threads():
    """Set core.num_threads for one test and put it back afterwards."""
    original = vs.core.num_threads

    def set_threads(n: int) -> None:
        vs.core.num_threads = n

    yield set_threads
    vs.core.num_threads = original


def neutral(fmt: vs.VideoFormat) -> float:
    return 0.0 if fmt.sample_type == vs.FLOAT else float(1 << (fmt.bits_per_sample - 1))


def ramp(fmt: int | vs.VideoFormat = vs.RGB24, length: int = 8, width: int = 32, height: int = 16,
         fps: Fraction = Fraction(24), step: float = 1.0) -> vs.VideoNode:
    """Frame n has value n * step in every plane (YUV: in luma, chroma neutral)."""
    fmt = vs.core.get_video_format(fmt)
    frames = []
    for n in range(length):
        v = n * step
        color = [v] * fmt.num_planes if fmt.color_family != vs.YUV else [v, neutral(fmt), neutral(fmt)]
        frames.append(vs.core.std.BlankClip(format=fmt.id, width=width, height=height, length=1,
                                            fpsnum=fps.numerator, fpsden=fps.denominator, color=color))
    return vs.core.std.Splice(frames)


def painted(fmt: int | vs.VideoFormat, length: int, width: int, height: int, fps: Fraction,
            paint: Callable[[int, list[np.ndarray]], None]) -> vs.VideoNode:
    """A clip whose frame n is written by ``paint(n, planes)`` into its writable plane arrays."""
    fmt = vs.core.get_video_format(fmt)
    blank = vs.core.std.BlankClip(format=fmt.id, width=width, height=height, length=length,
                                  fpsnum=fps.numerator, fpsden=fps.denominator, keep=False)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        fout = f.copy()
        paint(n, [np.asarray(fout[p]) for p in range(fmt.num_planes)])
        return fout

    return vs.core.std.ModifyFrame(blank, clips=blank, selector=fill)


def noise(fmt: int | vs.VideoFormat = vs.RGB24, length: int = 8, width: int = 32, height: int = 16,
          fps: Fraction = Fraction(24), seed: int = 0) -> vs.VideoNode:
    """Seeded random frames: frame n's content depends only on (seed, n)."""
    fmt = vs.core.get_video_format(fmt)

    def paint(n: int, planes: list[np.ndarray]) -> None:
        rng = np.random.default_rng((seed, n))
        for p, dst in enumerate(planes):
            if fmt.sample_type == vs.FLOAT:
                lo = -0.5 if (fmt.color_family == vs.YUV and p > 0) else 0.0
                dst[...] = rng.random(dst.shape) + lo
            else:
                dst[...] = rng.integers(0, 1 << fmt.bits_per_sample, dst.shape)

    return painted(fmt, length, width, height, fps, paint)


def seeded_state_dict(module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights drawn from numpy's seeded generator: independent of torch's init code."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, tensor in module.state_dict().items():
        scale = 0.5 / np.sqrt(np.prod(tensor.shape[1:])) if tensor.dim() > 1 else 0.02
        values = rng.standard_normal(tuple(tensor.shape)) * scale
        state[name] = torch.from_numpy(values.astype(np.float32)).contiguous()
    return state


def write_exported_flow(path, kwargs: dict, seed: int = 3):
    """A seeded flow generator of ``kwargs`` saved as ``train_interp.py --export`` writes one
    (the training config in its metadata), for the scripts' ``--weights``."""
    import json

    from safetensors.torch import save_file

    from vs_vgan.models.flownet import FlowInterpolator

    save_file(seeded_state_dict(FlowInterpolator(**kwargs), seed), str(path),
              metadata={"step": "1", "config": json.dumps({"task": "interpolate", "model": kwargs})})
    return path


def assert_planar_luma_is_rgb_luma(net, a: torch.Tensor, b: torch.Tensor,
                                   scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp, blend and residual are linear in the image: rendering a luma plane of frames
    ``a``, ``b`` (kept clear of the clamp) with the luma row as the residual mix gives the
    luma of the RGB output.  Returns the ``fields`` it rendered from."""
    row = torch.tensor([[0.2126, 0.7152, 0.0722]])
    luma = lambda x: (x * row.view(1, 3, 1, 1)).sum(1, keepdim=True)  # noqa: E731
    t = torch.full((1, 1, 1, 1), 0.3)
    with torch.inference_mode():
        state = net.encode(a, b, scale)
        rgb = net.synthesize(state, t)
        flows_t, fine = net.fields(state, t)
        y = net.render(flows_t, fine, t, scale, luma(a), luma(b), size=a.shape[-2:], mix=row, bounds=(-10.0, 10.0))
    torch.testing.assert_close(y, luma(rgb), atol=1e-4, rtol=0)
    return flows_t, fine


def make_tiny_flow_spec(directory, seed: int = 0, name: str = "tiny-flow", task: str = "interpolate") -> ModelSpec:
    from safetensors.torch import save_file

    from vs_vgan.models.flownet import FlowInterpolator

    net = FlowInterpolator(**TINY_FLOW_KWARGS)
    path = directory / f"{name}-{seed}.safetensors"
    save_file(seeded_state_dict(net, seed), str(path))
    arch = "flow-predict" if task == "predict" else "flow"
    return ModelSpec(name=name, task=task, arch=arch, kwargs=TINY_FLOW_KWARGS,
                     weights=str(path), sha256=file_sha256(path), modulo=net.modulo)


@pytest.fixture(scope="session")
def tiny_flow(tmp_path_factory) -> ModelSpec:
    """A tiny seeded flow interpolator, saved as safetensors with its sha256."""
    return make_tiny_flow_spec(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def tiny_predictor(tmp_path_factory) -> ModelSpec:
    """A tiny seeded flow predictor (the interpolator's network run at t = 2)."""
    return make_tiny_flow_spec(tmp_path_factory.mktemp("weights"), seed=5, name="tiny-predict", task="predict")


def planes(frame: vs.VideoFrame) -> list[np.ndarray]:
    return [np.array(frame[p]) for p in range(frame.format.num_planes)]


def frame_bytes(frame: vs.VideoFrame) -> bytes:
    return b"".join(np.ascontiguousarray(frame[p]).tobytes() for p in range(frame.format.num_planes))


def fetch_in_random_order(clip: vs.VideoNode, seed: int) -> list[tuple[int, bytes]]:
    """Every frame requested twice, in a seeded random order, all in flight at once (as a
    previewer seeking about does, on ``core.num_threads`` threads): ``(n, bytes)`` of each."""
    order = list(range(clip.num_frames)) * 2
    random.Random(seed).shuffle(order)
    futures = [(k, clip.get_frame_async(k)) for k in order]
    return [(k, frame_bytes(fut.result())) for k, fut in futures]


def moving(fmt: int | vs.VideoFormat = vs.RGB24, length: int = 8, width: int = 48, height: int = 32,
           fps: Fraction = Fraction(24), speed: float = 1.5) -> vs.VideoNode:
    """A smooth pattern sliding right by ``speed`` pixels a frame (a small, real motion)."""
    fmt = vs.core.get_video_format(fmt)

    def paint(n: int, planes: list[np.ndarray]) -> None:
        for p, dst in enumerate(planes):
            h, w = dst.shape
            sx, sy = width / w, height / h
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
            xx, yy = xx * sx - n * speed, yy * sy
            v = 0.5 + 0.25 * np.sin(xx / 5.0 + p) * np.cos(yy / 7.0) + 0.2 * np.sin((xx + yy) / 11.0)
            if fmt.sample_type == vs.FLOAT:
                dst[...] = v - (0.5 if (fmt.color_family == vs.YUV and p > 0) else 0.0)
            else:
                dst[...] = np.round(v * ((1 << fmt.bits_per_sample) - 1))

    return painted(fmt, length, width, height, fps, paint)


def moving_frames(count: int = 8, width: int = 48, height: int = 40) -> list[np.ndarray]:
    """HWC uint8 RGB frames of a smooth pattern sliding right by 2 pixels a frame."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for n in range(count):
        x = xx - 2 * n
        rgb = [0.5 + 0.3 * np.sin(x / 5.0 + c) * np.cos(yy / 7.0) + 0.15 * np.sin((x + yy) / 9.0)
               for c in range(3)]
        frames.append(np.round(np.stack(rgb, axis=-1) * 255).astype(np.uint8))
    return frames


def write_webp(path: Path, frames: list[np.ndarray]) -> Path:
    """Frames as a lossless WebP (animated when there are several)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    if len(images) == 1:
        images[0].save(path, lossless=True)
    else:
        images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0, lossless=True)
    return path


#: --set arguments of a tiny training run (both phases in 4 steps), for the script tests.
TINY_TRAIN_SETS = ["--set", 'disc={"channels": 4, "layers": 3, "scales": 1}',
                   "--set", "batch=2", "--set", "crop=32", "--set", "steps=4", "--set", "warmup_steps=2",
                   "--set", "lr_ramp=1", "--set", "adv_ramp=1", "--set", "log_every=1"]


def load_script(name: str):
    """A module of scripts/ (which import each other by plain name), loaded by path."""
    import importlib.util
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parent.parent / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(scripts))
    return module


def numbered(length: int) -> vs.VideoNode:
    """8x8 GRAY8 frames whose prop ``src`` is their index."""
    blank = vs.core.std.BlankClip(format=vs.GRAY8, width=8, height=8, length=length)
    return vs.core.std.ModifyFrame(blank, blank, lambda n, f: _numbered_frame(f, n))


def _numbered_frame(f: vs.VideoFrame, n: int) -> vs.VideoFrame:
    fout = f.copy()
    fout.props["src"] = n
    return fout


@pytest.fixture(scope="session")
def rife_pkl(tmp_path_factory) -> Path:
    """A seeded RIFE 4.25 ``flownet.pkl`` (random weights, torch.save'd as the published
    files are: ``module.``-prefixed names and a training-only ``teacher.`` tensor)."""
    from vs_vgan.models.ifnet import RifeNet

    with torch.device("meta"):
        net = RifeNet("4.25")
    state = {f"module.{k}": v for k, v in seeded_state_dict(net, seed=3).items()}
    state["module.teacher.conv0.weight"] = torch.zeros(2, 2)
    path = tmp_path_factory.mktemp("rife") / "flownet.pkl"
    torch.save(state, path)
    return path
