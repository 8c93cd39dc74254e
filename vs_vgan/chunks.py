"""How a conversion's output frames split into chunks for rendering on several machines:
pure integer math, no VapourSynth, no Ray (:mod:`vs_vgan.distributed` renders the chunks).

A node's frames are the same whatever order they are asked for (the README's
*Determinism*), so any split gives the same frames.  Where the edges fall matters for the
encoding only: each chunk is encoded by itself and starts on a keyframe, which costs
nothing extra where the picture changes anyway.  So an edge near a scene cut moves onto
it (:func:`plan_chunks`), and stays at its fixed place otherwise.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Iterable

from .errors import type_error, value_error

__all__ = ["DEFAULT_CHUNK_SECONDS", "CUT_WINDOW_SECONDS", "chunk_length", "cut_window", "nominal_edges", "plan_chunks"]

#: Output seconds per chunk when neither seconds nor frames are given.
DEFAULT_CHUNK_SECONDS = 60.0
#: How far (in seconds of output) an edge may move onto a scene cut; at most an eighth of
#: a chunk (:func:`cut_window`).
CUT_WINDOW_SECONDS = 1.0


def chunk_length(fps: Fraction, *, seconds: float | None = None, frames: int | None = None) -> int:
    """Output frames per chunk: ``frames`` when given, else ``seconds`` of output at ``fps``
    (at least 1)."""
    func = "chunk_length"
    if frames is not None:
        if isinstance(frames, bool) or not isinstance(frames, int):
            raise type_error(func, "frames", "an int >= 1", frames)
        if frames < 1:
            raise value_error(func, "frames", "an int >= 1", frames)
        return frames
    if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise type_error(func, "seconds", "a number > 0 (or frames=)", seconds)
    if not seconds > 0:
        raise value_error(func, "seconds", "a number > 0", seconds)
    if fps <= 0:
        raise value_error(func, "fps", "a constant rate > 0 (give frames= for a variable-rate clip)", fps)
    return max(1, round(Fraction(seconds) * fps))


def cut_window(length: int, fps: Fraction) -> int:
    """How many output frames an edge of chunks of ``length`` frames may move to reach a
    scene cut: :data:`CUT_WINDOW_SECONDS` of output, at most ``length // 8``."""
    second = round(Fraction(CUT_WINDOW_SECONDS) * fps) if fps > 0 else length
    return max(0, min(length // 8, second))


def nominal_edges(total: int, length: int) -> list[int]:
    """The fixed edges: ``length``, ``2 * length``, ... below ``total``."""
    return list(range(length, total, length))


def plan_chunks(total: int, length: int, *, scene_starts: Iterable[int] = (), window: int = 0) -> list[tuple[int, int]]:
    """Output frames ``0 .. total - 1`` as chunks ``(start, end)`` (end exclusive), in order,
    covering every frame once.

    1. The edges are at ``length``, ``2 * length``, ... (:func:`nominal_edges`).
    2. An edge with a scene start (an output frame that begins a new scene) within
       ``window`` frames of it moves onto it: the nearest, the earlier of two as near.
       ``window`` must be below ``length / 2``, so the edges stay in order.
    3. The last edge is dropped when fewer than ``length // 4`` frames would follow it:
       the last chunk takes them (a chunk costs a task's set-up).

    Every chunk but the last holds ``length - window`` to ``length + 2 * window`` frames;
    the last at most ``length + length // 4 + window``.
    """
    func = "plan_chunks"
    for name, value, least in (("total", total, 1), ("length", length, 1), ("window", window, 0)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise type_error(func, name, f"an int >= {least}", value)
        if value < least:
            raise value_error(func, name, f"an int >= {least}", value)
    if 2 * window >= length:
        raise value_error(func, "window", f"below half the chunk length ({length} frames)", window)
    starts = sorted({s for s in scene_starts if 0 < s < total})
    edges = []
    for edge in nominal_edges(total, length):
        near = [s for s in starts if abs(s - edge) <= window]
        edges.append(min(near, key=lambda s: (abs(s - edge), s)) if near else edge)
    if edges and total - edges[-1] < length // 4:
        edges.pop()
    bounds = [0, *edges, total]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
