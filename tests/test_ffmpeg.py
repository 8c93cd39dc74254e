"""vs_vgan.ffmpeg: which ffmpeg runs (--ffmpeg, VS_VGAN_FFMPEG, PATH, imageio-ffmpeg), and
the command on a machine whose PATH has no ffmpeg (issue 17)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vs_vgan import ffmpeg as F

BUNDLED = F.bundled_ffmpeg()
needs_bundled = pytest.mark.skipif(BUNDLED is None, reason="imageio-ffmpeg (a dependency) is not installed")


def _fake(folder: Path, name: str = "ffmpeg") -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\necho 'ffmpeg version 0.fake Copyright (c) nobody'\n")
    path.chmod(0o755)
    return path


def test_the_order_is_explicit_then_environment_then_path_then_bundled(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    on_path = _fake(tmp_path / "bin")
    env_one = _fake(tmp_path, "env-ffmpeg")
    explicit = _fake(tmp_path, "my-ffmpeg")
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.setenv(F.FFMPEG_ENV, str(env_one))
    assert F.find_ffmpeg(str(explicit)) == F.FFmpeg(str(explicit.resolve()), "--ffmpeg")
    assert F.find_ffmpeg() == F.FFmpeg(str(env_one.resolve()), F.FFMPEG_ENV)
    monkeypatch.setenv(F.FFMPEG_ENV, "ffmpeg")  # a command name, looked up on PATH
    assert F.find_ffmpeg() == F.FFmpeg(str(on_path), F.FFMPEG_ENV)
    monkeypatch.delenv(F.FFMPEG_ENV)
    assert F.find_ffmpeg() == F.FFmpeg(str(on_path), "PATH")
    assert F.find_ffmpeg().version == "ffmpeg version 0.fake"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(F, "bundled_ffmpeg", lambda: "/opt/bundled/ffmpeg")
    assert F.find_ffmpeg() == F.FFmpeg("/opt/bundled/ffmpeg", "imageio-ffmpeg")
    monkeypatch.setattr(F, "bundled_ffmpeg", lambda: None)
    assert F.find_ffmpeg() is None


def test_a_named_ffmpeg_that_is_no_executable_is_an_error_not_replaced(tmp_path, monkeypatch):
    plain = tmp_path / "ffmpeg.txt"
    plain.write_text("not a program")
    with pytest.raises(ValueError, match=r"^vs_vgan.ffmpeg: --ffmpeg must name an executable ffmpeg .*; got '"):
        F.find_ffmpeg(str(plain))
    monkeypatch.setenv(F.FFMPEG_ENV, "no-such-ffmpeg-here")
    with pytest.raises(ValueError, match=r"VS_VGAN_FFMPEG must name an executable ffmpeg .*got 'no-such-ffmpeg-here'"):
        F.find_ffmpeg()


@needs_bundled
def test_the_command_encodes_with_the_bundled_ffmpeg_when_path_has_none(tmp_path):
    """A fresh machine: no ffmpeg on PATH; upconvert writes the .mkv with imageio-ffmpeg's,
    and `info` says so."""
    src = tmp_path / "in.mkv"
    subprocess.run([BUNDLED, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=96x64:rate=24:duration=0.5", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src)],
                   check=True)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # the venv's scripts, no ffmpeg
    env.pop(F.FFMPEG_ENV, None)
    out = tmp_path / "out.mkv"
    run = subprocess.run([sys.executable, "-m", "vs_vgan", "upconvert", str(src), "-o", str(out), "--model", "blend",
                          "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    frames = subprocess.run([BUNDLED, "-hide_banner", "-i", str(out), "-map", "0:v", "-f", "null", "-"],
                            capture_output=True, text=True).stderr
    assert "frame=   24" in frames or "frame=24" in frames.replace(" ", ""), frames[-400:]
    info = subprocess.run([sys.executable, "-m", "vs_vgan", "info", str(src)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert f"ffmpeg: {BUNDLED} (imageio-ffmpeg; ffmpeg version" in info.stdout, info.stdout
    bad = subprocess.run([sys.executable, "-m", "vs_vgan", "upconvert", str(src), "-o", str(tmp_path / "x.mkv"),
                          "--ffmpeg", str(tmp_path / "nope"), "--quiet"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 3 and bad.stderr.startswith("vs-vgan: vs_vgan.ffmpeg: --ffmpeg must name"), bad.stderr
