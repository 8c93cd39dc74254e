"""Bundled data: the demo's sample clip (see SAMPLE.md beside this file)."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["sample_path"]


def sample_path() -> Path:
    """Path of the bundled sample clip (640x480, 26777/1000 fps, 66 frames, H.264)."""
    return Path(str(importlib.resources.files(__name__).joinpath("sample.mp4")))
