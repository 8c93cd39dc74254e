"""vspipe streams exactly the frames Python sees: nothing else reaches stdout."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs

from conftest import moving

VSPIPE = shutil.which("vspipe", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))

SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import logging
logging.basicConfig(level=logging.DEBUG)  # the package logs; logging goes to stderr, never stdout
import vapoursynth as vs
import vs_vgan
from conftest import moving
from vs_vgan.models import ModelSpec
spec = ModelSpec(name="tiny-flow", task="interpolate", arch="flow", kwargs={kwargs!r},
                 weights=weights, sha256=sha256, modulo=8)
clip = moving(vs.{fmt}, length=6, width=64, height=48)
vs_vgan.interpolate(clip, fps="60000/1001", model=spec).set_output()
"""


def parse_y4m(data: bytes, fmt: vs.VideoFormat, width: int, height: int) -> list[bytes]:
    header, _, rest = data.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 ") and f"W{width} H{height}".encode() in header
    bps = fmt.bytes_per_sample
    size = sum((width >> (fmt.subsampling_w if p else 0)) * (height >> (fmt.subsampling_h if p else 0)) * bps
               for p in range(fmt.num_planes))
    frames = []
    while rest:
        marker, _, rest = rest.partition(b"\n")
        assert marker.startswith(b"FRAME")
        frames.append(rest[:size])
        rest = rest[size:]
    return frames


@pytest.mark.skipif(VSPIPE is None, reason="vspipe not found")
@pytest.mark.parametrize("fmt", ["YUV420P8", "YUV420P10"])
def test_vspipe_y4m_matches_python_frames(tmp_path, tiny_flow, fmt):
    script = tmp_path / "interp.vpy"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), kwargs=dict(tiny_flow.kwargs), fmt=fmt))
    run = subprocess.run(
        [VSPIPE, "-c", "y4m", "-a", f"weights={tiny_flow.weights}", "-a", f"sha256={tiny_flow.sha256}",
         str(script), "-"], capture_output=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    import vs_vgan

    clip = vs_vgan.interpolate(moving(getattr(vs, fmt), length=6, width=64, height=48),
                               fps="60000/1001", model=tiny_flow)
    fmt_obj = clip.format
    streamed = parse_y4m(run.stdout, fmt_obj, 64, 48)
    assert len(streamed) == clip.num_frames == 15
    for k, f in enumerate(clip.frames()):
        expected = b"".join(np.ascontiguousarray(f[p]).tobytes() for p in range(fmt_obj.num_planes))
        assert streamed[k] == expected, f"frame {k} differs"


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.skipif(VSPIPE is None, reason="vspipe not found")
@pytest.mark.parametrize("script, frames", [("upconvert_2x.vpy", 132), ("to_59.94.vpy", 148),
                                            ("extend.vpy", 78), ("repair.vpy", 66)])
def test_examples_run_under_vspipe(script, frames):
    """Each example builds its graph with the default models and renders its first frames."""
    info = subprocess.run([VSPIPE, "--info", str(EXAMPLES / script)], capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stderr
    assert f"Frames: {frames}" in info.stdout
    out = subprocess.run([VSPIPE, "-c", "y4m", "--start", "0", "--end", "2", str(EXAMPLES / script), "-"],
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    assert out.stdout.startswith(b"YUV4MPEG2 ") and out.stdout.count(b"FRAME") == 3


@pytest.mark.skipif(VSPIPE is None, reason="vspipe not found")
@pytest.mark.parametrize("script", ["upconvert_2x.vpy", "to_59.94.vpy", "repair.vpy"])
def test_examples_take_rife_weights(script, rife_pkl):
    """-a model=PATH: the examples run a RIFE flownet.pkl (a seeded random one here)."""
    out = subprocess.run([VSPIPE, "-c", "y4m", "-a", f"model={rife_pkl}", "--start", "0", "--end", "1",
                          str(EXAMPLES / script), "-"], capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    assert out.stdout.count(b"FRAME") == 2
