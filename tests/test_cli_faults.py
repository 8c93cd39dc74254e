"""The vs-vgan command when things go wrong: a full disk, OUTPUT naming INPUT, a read-only
folder, a hangup, stale partial files, a truncated INPUT.  Each test reproduces one fault;
the ones that need a real mount (tmpfs) skip where this process may not mount."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ffmpeg_exe
from test_cli import make_clip, probe, run
from vs_vgan import cli
from vs_vgan.ffmpeg import FFMPEG_ENV


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "vs-vgan-partial" in p.name)


@pytest.fixture
def tmpfs():
    """Mount a tmpfs with the given options on a new folder (unmounted afterwards);
    skip where this process may not mount (not root, or a sandbox that forbids it)."""
    mounted: list[Path] = []

    def mount(path: Path, options: str) -> Path:
        path.mkdir()
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a tmpfs needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"can't mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def size_limited_ffmpeg(folder: Path, kib: int) -> dict[str, str]:
    """An environment whose ffmpeg (``VS_VGAN_FFMPEG``: a wrapper around conftest.ffmpeg_exe's)
    may write files of at most ``kib`` KiB and then gets EFBIG (SIGXFSZ ignored), as on a full
    disk: ffmpeg 5.1 then still exits 0, ffmpeg 9 (imageio-ffmpeg's) exits non-zero; the
    command says the same either way.  A wrapper, not a preexec_fn on the CLI's process:
    subprocess resets SIGXFSZ to its default in the ffmpeg the CLI starts, which the signal
    then kills (an exit the CLI already reports)."""
    folder.mkdir()
    wrapper = folder / "ffmpeg"
    real = ffmpeg_exe()
    wrapper.write_text(f"#!{sys.executable}\n"
                       "import os, resource, signal, sys\n"
                       "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                       f"resource.setrlimit(resource.RLIMIT_FSIZE, ({kib * 1024}, {kib * 1024}))\n"
                       f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n")
    wrapper.chmod(0o755)
    return {**os.environ, FFMPEG_ENV: str(wrapper)}


# ---------------------------------------------------------------------- 1. full disk
def test_a_full_disk_fails_with_no_output(tmp_path, tmpfs):
    src = make_clip(tmp_path / "in.mkv")  # 24 frames with PCM audio: about 100 kB as .mkv
    full = tmpfs(tmp_path / "full", "size=48k")
    r = run("upconvert", str(src), "-o", str(full / "b.mkv"), "--model", "blend", "--quiet")
    assert r.returncode == cli.EXIT_FAILED, r.stderr
    assert "of 48 frames" in r.stderr and "No space left on device" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert list(full.iterdir()) == []


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_file_size_limit_fails_with_no_output(tmp_path, suffix):
    """The same without a mount: ffmpeg's writes fail with EFBIG past 24 KiB."""
    src = make_clip(tmp_path / "in.mkv")
    env = size_limited_ffmpeg(tmp_path / "bin", 24)
    out = tmp_path / f"b{suffix}"
    r = subprocess.run([sys.executable, "-m", "vs_vgan", "upconvert", str(src), "-o", str(out), "--model", "blend",
                        "--quiet", "--audio-codec", "aac"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == cli.EXIT_FAILED, r.stderr
    assert "File too large" in r.stderr and "of 48 frames" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def test_which_ffmpeg_messages_are_fatal():
    fatal = ["Error writing trailer of out.mkv: No space left on device",
             "Error closing file out.mkv: File too large",
             "av_interleaved_write_frame(): Input/output error",
             "Error submitting a packet to the muxer: Disk quota exceeded",
             "[matroska @ 0x55d5] Error muxing a packet"]
    harmless = ["[matroska,webm @ 0x555b0e60e0c0] File ended prematurely",
                "[aac @ 0x5648287485c0] Queue input is backward in time",
                "[h264 @ 0x55f6bfa1c7c0] error while decoding MB 2 1"]
    assert cli.ffmpeg_fatal_lines("\n".join(fatal + harmless)) == fatal


# ---------------------------------------------------------------------- 2. OUTPUT is INPUT
def test_output_that_is_the_input_is_refused(tmp_path, monkeypatch, capsys):
    src = make_clip(tmp_path / "in.mkv", seconds=0.5)
    original = src.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.mkv").symlink_to(src)
    os.link(src, tmp_path / "hard.mkv")
    monkeypatch.chdir(tmp_path)
    for output in ["in.mkv", str(src), "sub/../in.mkv", "./in.mkv", "link.mkv", "hard.mkv"]:
        for overwrite in (["--overwrite"], []):
            code = cli.main(["upconvert", "in.mkv", "-o", output, "--model", "blend", "--quiet", *overwrite])
            err = capsys.readouterr().err
            assert code == cli.EXIT_FAILED, (output, overwrite, err)
            assert "is INPUT" in err and len(err.strip().splitlines()) == 1, (output, overwrite, err)
            assert src.read_bytes() == original
    assert (tmp_path / "link.mkv").is_symlink() and os.path.samefile(tmp_path / "hard.mkv", src)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------- 3. read-only folder
def test_a_read_only_output_folder_gives_one_line(tmp_path, tmpfs):
    src = make_clip(tmp_path / "in.mkv", seconds=0.5)
    ro = tmpfs(tmp_path / "ro", "ro,size=64k")
    r = run("upconvert", str(src), "-o", str(ro / "out.mkv"), "--model", "blend", "--quiet")
    assert r.returncode == cli.EXIT_FAILED, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(ro) in r.stderr and "Read-only file system" in r.stderr, r.stderr


def test_a_failed_rename_gives_one_line_and_no_partial_file(tmp_path, monkeypatch, capsys):
    src = make_clip(tmp_path / "in.mkv", seconds=0.5)
    out = tmp_path / "out.mkv"

    def refuse(a, b):
        raise PermissionError(13, "Permission denied", str(b))

    monkeypatch.setattr(cli.os, "replace", refuse)
    assert cli.main(["upconvert", str(src), "-o", str(out), "--model", "blend", "--quiet"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(out) in err and "Permission denied" in err, err
    assert not out.exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------- 4. stale partial files (SIGHUP: test_cli.py)
def test_stale_partial_files_of_dead_processes_are_removed(tmp_path, capsys):
    src = make_clip(tmp_path / "in.mkv", seconds=0.5)
    out = tmp_path / "out.mkv"
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs
    running = subprocess.Popen(["sleep", "60"])  # another process that runs (this one is the CLI here)
    stale = tmp_path / f".out.vs-vgan-partial-{gone.pid}.mkv"
    live = tmp_path / f".out.vs-vgan-partial-{running.pid}.mkv"
    other = tmp_path / f".other.vs-vgan-partial-{gone.pid}.mkv"  # another OUTPUT's: not ours to judge
    for p in (stale, live, other):
        p.write_bytes(b"half a file")
    try:
        assert cli.main(["upconvert", str(src), "-o", str(out), "--model", "blend", "--quiet"]) == cli.EXIT_OK
    finally:
        running.kill()
        running.wait()
    err = capsys.readouterr().err
    assert not stale.exists() and live.exists() and other.exists()
    lines = [line for line in err.splitlines() if "partial" in line]
    assert len(lines) == 1 and str(stale) in lines[0] and "removed" in lines[0], err
    assert probe(out)["frames"] == 24


# ---------------------------------------------------------------------- 5. truncated INPUT
def truncated(path: Path, name: str) -> Path:
    data = path.read_bytes()
    cut = path.with_name(name)
    cut.write_bytes(data[:len(data) // 2])
    return cut


def as_mp4(src: Path) -> Path:
    """``src`` remuxed into MP4 with its index (moov) at the start, as streaming sites serve it."""
    out = src.with_suffix(".mp4")
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-c:v", "copy",
                    "-c:a", "aac", "-movflags", "+faststart", str(out)], check=True)
    return out


def longer_audio(path: Path) -> Path:
    """24 frames (1 s) of video with 2 s of audio: the container's duration is the audio's."""
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=24:duration=1",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
                   check=True)
    return path


def test_a_truncated_input_warns_and_a_complete_one_does_not(tmp_path, capsys):
    mkv = make_clip(tmp_path / "in.mkv", seconds=2)  # 48 frames
    mp4 = as_mp4(mkv)
    for complete in (mkv, mp4):
        assert cli.main(["info", str(complete)]) == cli.EXIT_OK
        captured = capsys.readouterr()
        assert captured.err == "" and "48 frames" in captured.out, captured
    for name in ("long_audio.mp4", "long_audio.mkv"):  # complete too: the video rightly ends first
        assert cli.main(["info", str(longer_audio(tmp_path / name))]) == cli.EXIT_OK
        captured = capsys.readouterr()
        assert captured.err == "" and "24 frames" in captured.out, captured
    for complete, name in ((mkv, "cut.mkv"), (mp4, "cut.mp4")):
        cut = truncated(complete, name)
        assert cli.main(["info", str(cut), "--json"]) == cli.EXIT_OK
        captured = capsys.readouterr()
        warnings = captured.err.strip().splitlines()
        assert len(warnings) == 1 and "truncated" in warnings[0] and str(cut) in warnings[0], captured.err
        assert "of 48" in warnings[0], captured.err
    out = tmp_path / "out.mkv"
    r = run("upconvert", str(tmp_path / "cut.mkv"), "-o", str(out), "--model", "blend", "--quiet")
    assert r.returncode == cli.EXIT_OK and "truncated" in r.stderr, r.stderr


def test_a_huge_factor_is_one_line_and_exit_1(tmp_path):
    """--factor 1000000000 used to take 4 GB in 14 s before failing; the node now refuses
    an output VapourSynth can't hold, and the command says so in one line."""
    src = make_clip(tmp_path / "in.mkv", seconds=0.25)
    r = run("upconvert", str(src), "-o", str(tmp_path / "out.mkv"), "--factor", "1000000000", "--model", "blend")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "factor must be at most 2147483647/6 for a 6-frame clip" in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == [src]
    r = run("info", str(src), "--factor", "1000000000")  # the same limit, from the same Timeline rule
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "vs-vgan: vs_vgan.info: factor must be at most 2147483647/6 for a 6-frame clip"), r.stderr


# ---------------------------------------------------------------------- 6. a bug keeps its traceback
BROKEN = """import sys, vs_vgan
from vs_vgan import cli
def broken(*args, **kwargs):
    raise {exc}
{target} = broken
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("exc", ["ValueError('operands could not be broadcast')", "TypeError('unhashable type')",
                                 "KeyError('_Matrix')", "OSError('not the system speaking')",
                                 "ValueError('vs_vgan is fine, this is not its message')"])
def test_an_internal_error_keeps_its_traceback(tmp_path, exc):
    """A node failing with an error that is not one of vs_vgan's user messages is a bug:
    Python's traceback on stderr, exit 1, and still no OUTPUT."""
    src = make_clip(tmp_path / "in.mkv", seconds=0.25)
    out = tmp_path / "out.mkv"
    code = BROKEN.format(exc=exc, target="vs_vgan.interpolate")
    r = subprocess.run([sys.executable, "-c", code, "upconvert", str(src), "-o", str(out), "--model", "blend",
                        "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback (most recent call last)" in r.stderr and "in broken" in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(exc.split("(")[0]), r.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_bug_while_encoding_keeps_its_traceback_and_removes_the_partial_file(tmp_path):
    src = make_clip(tmp_path / "in.mkv", seconds=0.25)
    out = tmp_path / "out.mkv"
    code = BROKEN.format(exc="ValueError('a bug in the frame check')", target="cli.check_written")
    r = subprocess.run([sys.executable, "-c", code, "upconvert", str(src), "-o", str(out), "--model", "blend",
                        "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr and "a bug in the frame check" in r.stderr, r.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def test_user_errors_stay_one_line_in_process(tmp_path, monkeypatch, capsys):
    import vs_vgan
    from vs_vgan.errors import type_error, value_error

    src = make_clip(tmp_path / "in.mkv", seconds=0.25)
    args = ["upconvert", str(src), "-o", str(tmp_path / "out.mkv"), "--model", "blend", "--quiet"]
    for err in (value_error("interpolate", "scale", "1.0, 0.5 or 0.25", 0.3),
                type_error("interpolate", "scene_threshold", "a number in (0, 1]", "high"),
                FileNotFoundError("vs_vgan.interpolate: the weights file of model 'x' must exist; got a missing "
                                  "file /x"),
                PermissionError(13, "Permission denied", "/some/where/out.mkv")):
        def fail(*a, err=err, **k):
            raise err

        monkeypatch.setattr(vs_vgan, "interpolate", fail)
        assert cli.main(args) == cli.EXIT_FAILED
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vs-vgan: "), lines
    assert lines == ["vs-vgan: Permission denied: '/some/where/out.mkv'"]

    def bug(*a, **k):
        raise ValueError("an internal shape mismatch")

    monkeypatch.setattr(vs_vgan, "interpolate", bug)
    with pytest.raises(ValueError, match="an internal shape mismatch"):
        cli.main(args)


def test_which_errors_are_the_users():
    from vs_vgan.errors import value_error

    line = cli.user_error_line
    assert line(value_error("extend", "frames", "an int >= 0", -1)) == \
        "vs-vgan: vs_vgan.extend: frames must be an int >= 0; got -1"
    assert line(ValueError("vs_vgan.train.data.find_videos: root must be an existing folder; got 'x'"))
    assert line(cli.CliError("vs-vgan: OUTPUT 'x' exists", cli.EXIT_EXISTS)) == "vs-vgan: OUTPUT 'x' exists"
    assert line(OSError(28, "No space left on device")) == "vs-vgan: No space left on device"
    assert line(BrokenPipeError(32, "Broken pipe")) == "vs-vgan: Broken pipe"
    assert line(IsADirectoryError(21, "Is a directory", "/tmp")) == "vs-vgan: Is a directory: '/tmp'"
    for bug in (ValueError("bad"), TypeError("unsupported operand"), KeyError("x"), RuntimeError("CUDA"),
                OSError("no errno"), ValueError("vs_vgan: no function named"), AttributeError("x")):
        assert line(bug) is None, bug
