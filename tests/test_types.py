"""The type check: mypy on vs_vgan/ with pyproject.toml's [tool.mypy] settings passes.

It runs here so that the README's test command (and CI, which runs it) checks the types
too.  mypy's cache lives in ``$VS_VGAN_TEST_CACHE`` (default ``~/.cache/vs_vgan-tests``),
one folder per checkout, so that a rerun checks only what changed (about 30 s on a cold
cache on two CPU cores, a few seconds warm); a stale cache is never trusted by mypy.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cache_dir(tmp_path: Path) -> Path:
    base = Path(os.environ.get("VS_VGAN_TEST_CACHE") or Path.home() / ".cache" / "vs_vgan-tests")
    cache = base / f"mypy-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable cache folder: a cold run in the test's own
        return tmp_path / "mypy-cache"
    return cache


def test_mypy_passes_on_the_package(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the test extra: pip install -e '.[test]')")
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(_cache_dir(tmp_path))],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = (out.stdout + out.stderr).strip()
    assert out.returncode == 0, f"mypy found type errors (run `python -m mypy` in {ROOT}):\n{report}"
    assert "Success" in out.stdout, report
