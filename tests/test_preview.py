"""vspreview opens an example with no error and shows the frame vspipe renders.

scripts/preview_shot.py opens examples/upconvert_2x.vpy (twice the bundled sample's frame
rate) in vspreview on an Xvfb screen at frame 7, synthesized between source frames 3 and 4,
and grabs the window from the X server.  The video area it crops out of that screenshot
must equal, byte for byte, vspipe's frame 7 of the same script with the same argument,
converted to RGB as vspreview converts it (``preview_rgb``): the same zimg conversion of the
same YUV samples gives the same bytes, so no tolerance is needed.  Frames 6 and 8 (source
frames 3 and 4) must differ from it: the window shows the in-between frame, not a copy.

Skipped, saying why, without ``Xvfb`` (Debian: xvfb) or the libraries Qt's xcb platform
plugin loads (.ci/run installs both), or when the preview packages can't be had.  Those
(pyproject.toml's ``preview`` extra: vspreview, vsjetpack, PyQt6; 137 MB of wheels) come
from this environment when ``pip install -e ".[preview]"`` put them there; otherwise what
pip would add to this environment for them is installed once with ``pip install --target``
into ``$VS_VGAN_TEST_CACHE`` (default ``~/.cache/vs_vgan-tests``; 354 MB) and put on the
script's PYTHONPATH.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from fractions import Fraction
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs

from conftest import painted
from vs_vgan.data import sample_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "upconvert_2x.vpy"
SHOT = ROOT / "scripts" / "preview_shot.py"
VSPIPE = shutil.which("vspipe", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
FRAME = 7  # odd: synthesized between source frames 3 and 4
ARGS = ["scale=0.5"]  # passed through vspreview's command line as through vspipe's -a

pytestmark = [
    pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (Debian: apt-get install xvfb)"),
    pytest.mark.skipif(VSPIPE is None, reason="vspipe not found"),
]


def _cache_dir() -> Path:
    return Path(os.environ.get("VS_VGAN_TEST_CACHE") or Path.home() / ".cache" / "vs_vgan-tests")


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["optional-dependencies"]["preview"]


def _installed_here(requirement: str) -> bool:
    name, _, version = requirement.partition("==")
    try:
        found = metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return not version or found == version


def _pip(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args,
           "--only-binary=:all:", "--timeout", "20", "--retries", "1"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.skip(f"the preview packages could not be installed: pip {args[0]} timed out")
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"the preview packages could not be installed (is PyPI reachable?): {tail[0]}")
    return r


@pytest.fixture(scope="module")
def preview_path() -> str:
    """A PYTHONPATH entry holding the preview packages ('' when this environment has them)."""
    requirements = _requirements()
    if all(_installed_here(r) for r in requirements):
        return ""
    # keyed by what decides the install: the pins, this Python, the packages pip leaves to this environment
    key = "\n".join([*requirements, sys.version, *(f"{n}=={metadata.version(n)}" for n in ("vapoursynth", "numpy"))])
    target = _cache_dir() / f"preview-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not (target / ".complete").is_file():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        report = partial / "pip-report.json"
        # what pip would add to this environment (vapoursynth, numpy... are here already) ...
        _pip(["install", "--dry-run", "--quiet", "--report", str(report), *requirements], 300)
        pins = [f"{i['metadata']['name']}=={i['metadata']['version']}"
                for i in json.loads(report.read_text(encoding="utf-8"))["install"]]
        # ... installed beside it, exactly those versions
        _pip(["install", "--quiet", "--no-deps", "--target", str(partial), *pins], 900)
        (partial / ".complete").write_text("\n".join(pins) + "\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return str(target)


@pytest.fixture(scope="module")
def preview_env(preview_path) -> dict[str, str]:
    env = dict(os.environ)
    if preview_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (preview_path, env.get("PYTHONPATH")) if p)
    _skip_without_qt_xcb_libraries(preview_path)
    return env


def _skip_without_qt_xcb_libraries(preview_path: str) -> None:
    """Qt's xcb platform plugin links system libraries a bare Debian lacks (libxcb-icccm4...)."""
    where = subprocess.run([sys.executable, "-c", "import PyQt6, os; print(os.path.dirname(PyQt6.__file__))"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": preview_path})
    ldd = shutil.which("ldd")
    if where.returncode != 0 or ldd is None:
        return  # the script itself says what is wrong
    qt = Path(where.stdout.strip()) / "Qt6"
    missing: set[str] = set()
    for lib in (qt / "plugins" / "platforms" / "libqxcb.so", qt / "lib" / "libQt6XcbQpa.so.6"):
        if lib.is_file():
            out = subprocess.run([ldd, str(lib)], capture_output=True, text=True).stdout
            missing |= set(re.findall(r"^\s*(\S+) => not found", out, re.MULTILINE))
    if missing:
        pytest.skip(f"Qt's xcb platform plugin lacks {', '.join(sorted(missing))} "
                    "(Debian: libxcb-icccm4 libxcb-keysyms1 ...; .ci/run installs them)")


def _shot(env: dict[str, str], script: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SHOT), str(script), "--frame", str(FRAME), *(a for kv in ARGS for a in ("-a", kv)),
           "--frame-out", str(tmp_path / "shown.png"), "--out", str(tmp_path / "window.png"),
           "--report", str(tmp_path / "report.json"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def parse_y4m(data: bytes, width: int, height: int) -> list[np.ndarray]:
    """The frames of a 4:2:0 8-bit YUV4MPEG2 stream, each the three planes flattened."""
    header, _, rest = data.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 ") and f"W{width} H{height}".encode() in header, header
    size = width * height * 3 // 2
    frames = []
    while rest:
        marker, _, rest = rest.partition(b"\n")
        assert marker.startswith(b"FRAME"), marker[:20]
        frames.append(np.frombuffer(rest[:size], np.uint8))
        rest = rest[size:]
    return frames


def preview_rgb(frames: list[np.ndarray], width: int, height: int, props: vs.FrameProps) -> list[np.ndarray]:
    """8-bit RGB as vspreview 0.20.1 shows YUV 4:2:0 frames at its defaults on an 8-bit
    screen (VideoOutput.prepare_vs_output): zimg's Bicubic with Mitchell's kernel (b = c =
    1/3) for the chroma, matrix, transfer, primaries, range and chroma siting from the
    frame props, into BT.709 primaries and transfer, error-diffusion dither."""
    def paint(n: int, planes: list[np.ndarray]) -> None:
        y, u = width * height, width * height // 4
        planes[0][:] = frames[n][:y].reshape(height, width)
        planes[1][:] = frames[n][y:y + u].reshape(height // 2, width // 2)
        planes[2][:] = frames[n][y + u:].reshape(height // 2, width // 2)

    clip = painted(vs.YUV420P8, len(frames), width, height, Fraction(24), paint)
    rgb = clip.resize.Bicubic(format=vs.RGB24, matrix_in=props["_Matrix"], transfer_in=props["_Transfer"],
                              primaries_in=props["_Primaries"], range_in=int(props["_Range"]),
                              chromaloc_in=props["_ChromaLocation"], transfer=vs.TRANSFER_BT709,
                              primaries=vs.PRIMARIES_BT709, filter_param_a=1 / 3, filter_param_b=1 / 3,
                              dither_type="error_diffusion")
    out = []
    for n in range(len(frames)):
        f = rgb.get_frame(n)
        out.append(np.stack([np.asarray(f[p]) for p in range(3)], axis=-1))
    return out


def test_the_preview_shows_the_frame_vspipe_renders(preview_env, tmp_path):
    from PIL import Image

    run = _shot(preview_env, SCRIPT, tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"preview_shot.py failed ({run.returncode}):\n{output[-4000:]}"
    assert run.stdout == "", "preview_shot.py writes only to stderr"
    assert not re.search(r"Traceback|\b(ERROR|CRITICAL|[Ee]rror)\b", output), output[-4000:]

    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["frame"] == FRAME and report["output_size"] == [640, 480] and report["num_frames"] == 132
    assert report["versions"]["vspreview"] == "0.20.1"
    window = Image.open(tmp_path / "window.png")
    assert window.size == tuple(report["window"]) and window.mode == "P"  # the palette PNG for the README
    x, y, w, h = report["video_area"]
    assert 0 <= x and x + w <= window.width and 0 <= y and y + h <= window.height
    shown = np.asarray(Image.open(tmp_path / "shown.png").convert("RGB"))
    assert shown.shape == (480, 640, 3)

    piped = subprocess.run([VSPIPE, "-c", "y4m", "-s", str(FRAME - 1), "-e", str(FRAME + 1),
                            *(a for kv in ARGS for a in ("-a", kv)), str(SCRIPT), "-"],
                           capture_output=True, timeout=600)
    assert piped.returncode == 0, piped.stderr.decode(errors="replace")[-3000:]
    frames = parse_y4m(piped.stdout, 640, 480)
    assert len(frames) == 3
    # y4m carries no colour metadata: the props are the sample's, which the output keeps
    props = vs.core.bs.VideoSource(str(sample_path())).get_frame(0).props
    before, expected, after = preview_rgb(frames, 640, 480, props)

    if not np.array_equal(shown, expected):
        diff = np.abs(shown.astype(int) - expected.astype(int))
        pytest.fail(f"the preview's frame {FRAME} differs from vspipe's: {np.count_nonzero(diff.any(-1))} of "
                    f"{640 * 480} pixels, by up to {diff.max()} levels (mean {diff.mean():.3f})")
    for n, neighbour in ((FRAME - 1, before), (FRAME + 1, after)):
        mean = np.abs(shown.astype(int) - neighbour.astype(int)).mean()
        assert mean > 0.5, f"the preview's frame {FRAME} is nearly vspipe's frame {n} (mean difference {mean:.3f})"


def test_a_script_error_fails_loudly(preview_env, tmp_path):
    broken = tmp_path / "broken.vpy"
    broken.write_text("import vapoursynth as vs\nimport vs_vgan\n"
                      "clip = vs.core.std.BlankClip(format=vs.YUV420P8, width=64, height=48, length=4)\n"
                      "vs_vgan.interpolate(clip, factor=0).set_output()\n", encoding="utf-8")
    run = _shot(preview_env, broken, tmp_path, "--timeout", "120")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "preview_shot: error: vspreview logged an error" in run.stderr, run.stderr[-4000:]
    assert "vs_vgan.interpolate: factor" in run.stderr, run.stderr[-4000:]
    assert not (tmp_path / "shown.png").exists() and not (tmp_path / "window.png").exists()
