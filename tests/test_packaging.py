"""The package as users install it: pyproject.toml's metadata, and a built wheel installed
(not editable) into a fresh virtual environment, where ``vs-vgan models`` and
``vs-vgan demo`` run from the wheel's files.

The fresh environment gets the wheel, its own VapourSynth (so that its vspipe runs its
Python, and through it the wheel) and the source plugin; torch, numpy, safetensors and imageio-ffmpeg, gigabytes
that a test should not install again, come from this environment's site-packages through a
``.pth`` line placed after the fresh environment's own, so the wheel's ``vs_vgan`` is the
one imported (checked).  The VapourSynth and bestsource wheels are fetched once with ``pip download`` into
``$VS_VGAN_TEST_CACHE`` (default ``~/.cache/vs_vgan-tests``); the test skips, saying why,
when it can't be fetched.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_pyproject_lists_every_package_and_an_spdx_licence():
    tool = _pyproject()["tool"]["setuptools"]
    found = set(find_packages(str(ROOT), include=["vs_vgan", "vs_vgan.*"]))
    assert set(tool["packages"]) == found | {"vs_vgan.weights"}, "pyproject.toml's packages miss a package"
    assert tool["package-dir"] == {"vs_vgan.weights": "models"}
    project = _pyproject()["project"]
    assert project["license"] == "MIT" and (ROOT / "LICENSE").is_file()
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # deprecated beside an SPDX licence
    assert (ROOT / "vs_vgan" / "py.typed").is_file()
    assert (ROOT / "setup.py").read_text(encoding="utf-8").count("setup(") == 1  # the shim


def _cache_dir() -> Path:
    return Path(os.environ.get("VS_VGAN_TEST_CACHE") or Path.home() / ".cache" / "vs_vgan-tests")


def _fetched_wheel(name: str) -> Path:
    """The wheel of package ``name`` at the version installed here, fetched once with
    pip; skip without it."""
    version = metadata.version(name)
    cache = _cache_dir() / "wheels"
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(cache),
               "--disable-pip-version-check", "--no-input", "--timeout", "20", "--retries", "1",
               f"{name}=={version}"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip(f"{name}=={version} could not be fetched: pip download timed out")
        found = sorted(cache.glob(pattern))
        if r.returncode != 0 or not found:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"{name}=={version} could not be fetched (is PyPI reachable?): {tail[0]}")
    return found[-1]


def _run(cmd: list[str], env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from this checkout (no build isolation: this environment's
    setuptools, so no download), in a copy of the checkout (the build writes build/)."""
    work = tmp_path_factory.mktemp("build")
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "out", "runs", "build", "dist",
                                                             "*.egg-info", "__pycache__", ".pytest_cache",
                                                             ".hypothesis", "train_state"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
          "-w", str(work / "dist"), str(src)], dict(os.environ), work)
    (built,) = (work / "dist").glob("vs_vgan-*.whl")
    return built


def test_the_wheel_carries_the_weights_the_demo_clip_and_py_typed(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    from vs_vgan.models import REGISTRY

    shipped = {f"vs_vgan/weights/{s.weights}" for s in REGISTRY.values() if s.weights}
    assert shipped and shipped <= names
    assert {"vs_vgan/data/sample.mp4", "vs_vgan/data/demo.vpy", "vs_vgan/py.typed"} <= names
    assert not any(n.startswith(("tests/", "scripts/", "models/")) for n in names)
    assert "License-Expression: MIT" in meta and "Requires-Dist: imageio-ffmpeg" in meta
    assert "Requires-Dist: torch" in meta and "Provides-Extra: test" in meta
    assert "Requires-Dist: vapoursynth-bestsource" in meta  # the CLI's and the demo's source plugin


def test_the_wheel_runs_in_a_fresh_environment(wheel, tmp_path):
    # VapourSynth and its source plugin (a plugin wheel installs into its VapourSynth's
    # plugin folder) into the fresh environment, as pip would install the dependencies
    plugins = [_fetched_wheel(n) for n in ("vapoursynth", "vapoursynth-bestsource")]
    venv = tmp_path / "fresh"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "VS_VGAN_FFMPEG")}
    env["HOME"] = str(tmp_path / "home")  # vapoursynth config writes its runtime file under it, not yours
    env["XDG_CONFIG_HOME"] = str(tmp_path / "home" / ".config")
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(venv)], env, tmp_path)
    py, bin_ = venv / "bin" / "python", venv / "bin"
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q",
          *map(str, plugins), str(wheel)], env, tmp_path)
    # torch, numpy, safetensors, imageio-ffmpeg from here, after the fresh environment's own
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env,
                     tmp_path).stdout.strip())
    (site / "zz_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env["PATH"] = f"{bin_}{os.pathsep}{env.get('PATH', '')}"
    where = _run([str(py), "-c", "import vs_vgan, vapoursynth; print(vs_vgan.__file__); print(vapoursynth.__file__)"],
                 env, tmp_path).stdout.split()
    assert all(Path(w).is_relative_to(venv) for w in where), f"imported from outside the fresh environment: {where}"
    _run([str(bin_ / "vapoursynth"), "config"], env, tmp_path)

    models = _run([str(bin_ / "vs-vgan"), "models"], env, tmp_path).stdout
    assert "vgan-flow-v1 (default)" in models and "vgan-predict-v1" in models

    out = tmp_path / "demo_2x.mkv"
    r = _run([str(bin_ / "vs-vgan"), "demo", "--quiet", "--device", "cpu", "-o", str(out)], env, tmp_path, 900)
    assert out.is_file() and out.stat().st_size > 10_000, r.stderr
    from vs_vgan.ffmpeg import find_ffmpeg

    probe = subprocess.run([find_ffmpeg(None).path, "-hide_banner", "-i", str(out), "-map", "0:v", "-f", "null", "-"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and "Video: h264" in probe.stderr
