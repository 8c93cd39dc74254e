"""Which ffmpeg vs_vgan runs: one resolver, one documented order.

1. an explicit path or command name (the CLI's ``--ffmpeg``);
2. ``VS_VGAN_FFMPEG`` (a path, or a command name looked up on ``PATH``);
3. ``ffmpeg`` on ``PATH`` (your own build: hardware encoders, your distribution's codecs);
4. the static ffmpeg of the ``imageio-ffmpeg`` package, a dependency of vs_vgan (ffmpeg 9 with
   libx264, libx265, SVT-AV1, FFV1 and libvmaf), so that a machine without a system ffmpeg
   still has one.

A name given in 1 or 2 that is no executable is an error (never silently replaced by
another ffmpeg); with none of the four, :func:`find_ffmpeg` returns None (the CLI then
exits with code 3).  ffprobe is not needed.  Imports without VapourSynth or torch.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FFMPEG_ENV", "FFmpeg", "find_ffmpeg", "bundled_ffmpeg"]

#: The environment variable naming the ffmpeg to use (2. in the order above).
FFMPEG_ENV = "VS_VGAN_FFMPEG"


@dataclass(frozen=True)
class FFmpeg:
    """An ffmpeg executable and where it was found: ``"--ffmpeg"``, ``FFMPEG_ENV``,
    ``"PATH"`` or ``"imageio-ffmpeg"``."""

    path: str
    origin: str

    @property
    def version(self) -> str:
        """The first line of ``ffmpeg -version`` (e.g. ``ffmpeg version 5.1.9-0+deb12u1``)."""
        return _version(self.path)


def _executable(name: str) -> str | None:
    """``name`` as an executable file: a path (``~`` expanded), or a command on PATH."""
    expanded = os.path.expanduser(name)
    if os.sep in expanded or (os.altsep and os.altsep in expanded):
        path = Path(expanded)
        return str(path.resolve()) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(expanded)


def bundled_ffmpeg() -> str | None:
    """The imageio-ffmpeg package's static ffmpeg, or None without the package (or its binary)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        path = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # the package without a binary for this platform
        return None
    return path if path and os.path.isfile(path) else None


def find_ffmpeg(explicit: str | os.PathLike[str] | None = None) -> FFmpeg | None:
    """The ffmpeg to run (the module's order), or None where there is none.  ValueError,
    worded for users, when ``explicit`` or ``VS_VGAN_FFMPEG`` names no executable."""
    for given, origin in ((explicit, "--ffmpeg"), (os.environ.get(FFMPEG_ENV) or None, FFMPEG_ENV)):
        if given is None:
            continue
        path = _executable(os.fspath(given))
        if path is None:
            raise ValueError(f"vs_vgan.ffmpeg: {origin} must name an executable ffmpeg (a path, or a command on "
                             f"PATH); got {os.fspath(given)!r}")
        return FFmpeg(path, origin)
    path = shutil.which("ffmpeg")
    if path:
        return FFmpeg(path, "PATH")
    path = bundled_ffmpeg()
    if path:
        return FFmpeg(path, "imageio-ffmpeg")
    return None


@functools.lru_cache(maxsize=8)
def _version(path: str) -> str:
    try:
        out = subprocess.run([path, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({type(exc).__name__}: {exc})"
    first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    return first.split(" Copyright")[0] if first else f"unknown (exit {out.returncode})"
