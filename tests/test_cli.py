"""The vs-vgan command, end to end on short generated clips with an audio track.  ffmpeg is
find_ffmpeg()'s (conftest.ffmpeg_exe: imageio-ffmpeg's where the system has none); no ffprobe."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import ffmpeg_exe, frame_rate, packets
from vs_vgan import cli


def make_clip(path: Path, seconds: float = 1.0, size: str = "96x64", rate: int = 24) -> Path:
    """A test pattern with a sine tone as PCM (exact length, unlike AAC's padded frames), in MKV."""
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", str(path)],
                   check=True)
    return path


def probe(path: Path) -> dict:
    """Frame count and rate of the video, and each stream's end time from its packets
    (conftest.packets and frame_rate: ffmpeg, no ffprobe)."""
    ends: dict[str, float] = {}
    frames = 0
    for kind, pts, duration in packets(path):
        ends[kind] = max(ends.get(kind, 0.0), float(pts + duration))
        frames += kind == "video"
    return dict(frames=frames, fps=frame_rate(path), ends=ends)


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vs_vgan", *args], capture_output=True, text=True, timeout=timeout)


def test_upconvert_writes_the_frames_at_the_rate_with_the_audio_in_sync(tmp_path):
    src = make_clip(tmp_path / "in.mkv")
    out = tmp_path / "out.mkv"
    r = run("upconvert", str(src), "-o", str(out), "--factor", "2", "--model", "blend")
    assert r.returncode == 0, r.stderr
    assert "48/48 frames" in r.stderr  # the progress bar's last state
    info = probe(out)
    assert info["frames"] == 48 and info["fps"] == 48
    video_end = info["frames"] / info["fps"]
    assert abs(info["ends"]["audio"] - float(video_end)) <= 1 / 48 + 1e-3
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_upconvert_to_a_target_rate_into_mp4(tmp_path):
    src = make_clip(tmp_path / "in.mkv")
    out = tmp_path / "ntsc.mp4"
    r = run("upconvert", str(src), "-o", str(out), "--fps", "60000/1001", "--model", "blend", "--quiet",
            "--audio-codec", "aac")  # PCM does not go into MP4
    assert r.returncode == 0 and r.stderr == "", r.stderr
    info = probe(out)
    assert info["fps"] == Fraction(60000, 1001) and info["frames"] == 60  # ceil(24 * 2.5025)
    assert "audio" in info["ends"]


def test_output_exists_missing_input_and_missing_ffmpeg_are_clear(tmp_path, monkeypatch, capsys):
    src = make_clip(tmp_path / "in.mkv")
    out = tmp_path / "out.mkv"
    out.write_bytes(b"keep me")
    assert cli.main(["upconvert", str(src), "-o", str(out), "--model", "blend", "--quiet"]) == cli.EXIT_EXISTS
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert cli.main(["upconvert", str(tmp_path / "nope.mkv"), "-o", str(out), "--quiet"]) == cli.EXIT_FAILED
    assert "does not exist" in capsys.readouterr().err
    from vs_vgan import ffmpeg

    monkeypatch.delenv(ffmpeg.FFMPEG_ENV, raising=False)
    monkeypatch.setattr(ffmpeg.shutil, "which", lambda name: None)  # none on PATH ...
    monkeypatch.setattr(ffmpeg, "bundled_ffmpeg", lambda: None)  # ... nor imageio-ffmpeg's
    code = cli.main(["upconvert", str(src), "-o", str(tmp_path / "new.mkv"), "--model", "blend", "--quiet"])
    assert code == cli.EXIT_MISSING and "no ffmpeg found" in capsys.readouterr().err
    assert not (tmp_path / "new.mkv").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_an_interrupted_run_leaves_no_output(tmp_path, sig):
    """SIGTERM, and SIGHUP (a closed terminal or ssh connection), clean up as Ctrl-C does."""
    src = make_clip(tmp_path / "long.mkv", seconds=20, size="320x240")
    out = tmp_path / "out.mkv"
    proc = subprocess.Popen([sys.executable, "-m", "vs_vgan", "upconvert", str(src), "-o", str(out),
                             "--device", "cpu"],  # the default network on the CPU: many seconds
                            stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.time() + 60
    while "frames" not in seen and time.time() < deadline:  # wait for the progress bar
        seen += proc.stderr.read(1)
    time.sleep(0.5)
    assert any("partial" in p.name for p in tmp_path.iterdir())  # the conversion is under way
    proc.send_signal(sig)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == cli.EXIT_INTERRUPTED, rest
    assert "interrupted; no output written" in rest
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["long.mkv"]


def test_info_and_models(tmp_path, capsys):
    src = make_clip(tmp_path / "in.mkv")
    assert cli.main(["info", str(src), "--fps", "60000/1001", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input"]["frames"] == 24 and info["input"]["fps"] == "24"
    assert info["output"] == {"frames": 60, "fps": "60000/1001", "ratio": "2500/1001"}
    assert cli.main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "vgan-flow-v1 (default)" in listed and "PATH/flownet.pkl  [interpolate, rife]" in listed
    with pytest.raises(SystemExit) as exc:
        cli.main(["upconvert", str(src), "-o", "x.mkv", "--fps", "0"])
    assert exc.value.code == cli.EXIT_USAGE


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "vs-vgan"
    assert script.exists(), "pip install -e . installs the vs-vgan command (setup.py entry_points)"
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "upconvert" in r.stdout and "Exit codes" in r.stdout


def test_extend_at_the_start_delays_the_audio_and_repair_keeps_the_length(tmp_path):
    src = make_clip(tmp_path / "in.mkv")
    out = tmp_path / "longer.mkv"
    r = run("extend", str(src), "-o", str(out), "--frames", "6", "--side", "start", "--quiet")
    assert r.returncode == 0, r.stderr
    first_audio = min(float(pts) for kind, pts, _ in packets(out) if kind == "audio")
    assert abs(first_audio - 6 / 24) <= 1 / 24  # the six new frames come before the old first one
    info = probe(out)
    assert info["frames"] == 30 and info["fps"] == 24
    fixed = tmp_path / "fixed.mkv"
    r = run("repair", str(src), "-o", str(fixed), "--duplicates", "--frames", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert probe(fixed)["frames"] == 24


def test_demo_is_the_main_job_through_vspipe(tmp_path):
    out = tmp_path / "demo.mkv"
    r = run("demo", "-o", str(out), "--model", "blend", "--quiet", timeout=300)
    assert r.returncode == 0, r.stderr
    info = probe(out)
    assert info["frames"] == 132 and info["fps"] == Fraction(26777, 500)  # the 66-frame sample at 2x
    raw = tmp_path / "demo.y4m"
    r = run("demo", "-o", str(raw), "--model", "blend", "--quiet", "--no-ffmpeg", timeout=300)
    assert r.returncode == 0, r.stderr
    data = raw.read_bytes()
    header = data.split(b"\n", 1)[0]
    assert header.startswith(b"YUV4MPEG2 ") and b"W640 H480 F26777:500" in header and b"XLENGTH=132" in header


def test_upconvert_passes_the_speed_options(tmp_path, monkeypatch):
    import vs_vgan

    seen = {}
    real = vs_vgan.interpolate

    def spy(clip, **kw):
        seen.update(kw)
        return real(clip, **kw)

    monkeypatch.setattr(vs_vgan, "interpolate", spy)
    src = make_clip(tmp_path / "in.mkv", seconds=0.5)
    out = tmp_path / "out.mkv"
    args = ["upconvert", str(src), "-o", str(out), "--model", "blend", "--quiet", "--num-streams", "1",
            "--precision", "fp32", "--compile", "--device", "cpu"]
    monkeypatch.setattr("torch.compile", lambda fn, **kw: fn)  # the option's plumbing, not the compiler
    assert cli.main(args) == cli.EXIT_OK
    assert seen["num_streams"] == 1 and seen["precision"] == "fp32" and seen["compile"] is True
    assert probe(out)["frames"] == 24


def test_upconvert_and_repair_take_rife_weights(tmp_path, rife_pkl):
    """--model PATH: a RIFE flownet.pkl (a seeded random one here) through the command,
    and a file of another layout refused in one line."""
    src = make_clip(tmp_path / "in.mkv", seconds=0.5)
    out = tmp_path / "out.mkv"
    r = run("upconvert", str(src), "-o", str(out), "--factor", "2", "--model", str(rife_pkl), "--quiet",
            "--device", "cpu", timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert probe(out)["frames"] == 24
    other = tmp_path / "other.pkl"
    import torch

    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, other)
    r = run("upconvert", str(src), "-o", str(tmp_path / "no.mkv"), "--model", str(other), "--quiet")
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        "vs-vgan: vs_vgan.interpolate: the weights must be a RIFE state dict of a supported version (4.25: 5 flow "
        "blocks of widths 192/128/96/64/32 and 4 encoder channels); got no 'block0.conv0.1.0.weight' (not a RIFE "
        "4.x flownet); first keys 'conv.weight'"], r.stderr
