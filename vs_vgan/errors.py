"""The one place that builds vs_vgan's error messages.

Every message reads ``vs_vgan.<func>: <arg> must be <accepted>; got <received>`` so
that a user sees which call, which argument, what would have worked and what they gave.
"""
from __future__ import annotations

__all__ = ["value_error", "type_error", "describe"]


def describe(value: object) -> str:
    """A short, readable rendering of a received value for an error message."""
    try:
        import vapoursynth as vs  # local: errors must import without VapourSynth

        if isinstance(value, vs.VideoNode):
            fmt = value.format.name if value.format and value.format.id else "variable format"
            size = f"{value.width}x{value.height}" if value.width else "variable size"
            return f"a VideoNode ({fmt}, {size}, {value.num_frames} frames, {value.fps} fps)"
    except ImportError:  # pragma: no cover - vapoursynth is a hard dependency
        pass
    text = repr(value)
    if len(text) > 120:
        text = text[:117] + "..."
    if not isinstance(value, (str, int, float)):
        text = f"{text} ({type(value).__name__})"
    return text


def _message(func: str, arg: str, accepted: str, got: object, hint: str | None) -> str:
    msg = f"vs_vgan.{func}: {arg} must be {accepted}; got {describe(got)}"
    return f"{msg}. {hint}" if hint else msg


def value_error(func: str, arg: str, accepted: str, got: object, hint: str | None = None) -> ValueError:
    """ValueError for a value of the right type that is not accepted."""
    return ValueError(_message(func, arg, accepted, got, hint))


def type_error(func: str, arg: str, accepted: str, got: object, hint: str | None = None) -> TypeError:
    """TypeError for a value of the wrong type."""
    return TypeError(_message(func, arg, accepted, got, hint))
