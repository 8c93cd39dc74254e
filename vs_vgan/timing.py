"""Exact timestamp math for frame-rate conversion.

Pure :class:`fractions.Fraction` arithmetic: no VapourSynth, no torch.

Model
-----
Source frame ``i`` occupies the interval ``[i, i + 1)`` of *source position* (one unit
per source frame).  A conversion by ``ratio = output rate / source rate`` puts output
frame ``k`` at source position ``p_k = k / ratio`` and gives it the slice
``[k / ratio, (k + 1) / ratio)`` of the source timeline.  For a constant-rate source that
is exactly "output frame k is shown at time k / fps_out"; for a variable-rate source
each output frame takes its share of the durations of the source frames it overlaps.

Output frame ``k`` is synthesized between ``left = floor(p_k)`` and ``right = left + 1``
at ``t = p_k - left`` in ``[0, 1)``.  ``t == 0`` (exactly) means the frame *is* source
frame ``left``.

End-of-clip policy
------------------
The output covers the same span as the source, ``[0, N)``:

* length ``M = ceil(N * ratio)``;
* output frames whose position falls after the last source frame's start
  (``p_k > N - 1``) repeat the last source frame (``t == 0``); nothing is extrapolated;
* every output frame lasts ``1 / ratio`` source frames except the last, which is cut at
  the end of the source, so durations add up exactly to the source's duration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from .errors import type_error, value_error

__all__ = ["MAX_FRAMES", "Sample", "Timeline", "parse_rational", "resolve_ratio"]


#: VapourSynth's longest clip (its frame counts are 32-bit ints) ...
MAX_FRAMES = 2**31 - 1
#: ... and the largest numerator or denominator of its frame rates and durations (64-bit).
_MAX_TERM = 2**63 - 1


def _exact_guess(value: float) -> Fraction | str | None:
    """The exact rate a float most likely stands for (59.94 -> 60000/1001).

    None where no positive rate VapourSynth can hold stands for it: nan, infinities,
    zero, negatives, and sizes such as 1e300 or 1e-300.
    """
    if not 0 < value <= _MAX_TERM:  # False for nan too
        return None
    ntsc = value * 1001 / 1000
    if abs(ntsc - round(ntsc)) < 0.01 and abs(value - round(value)) > 0.01:
        return f"{round(ntsc) * 1000}/1001"
    guess = Fraction(value).limit_denominator(1000)
    return guess if guess > 0 else None


def _fits(value: Fraction) -> bool:
    return value.numerator <= _MAX_TERM and value.denominator <= _MAX_TERM


def parse_rational(value: object, *, func: str, arg: str) -> Fraction:
    """Read a positive rational from an int, a Fraction or a ``"num/den"`` string.

    Floats are refused: ``59.94`` is not ``60000/1001``, and the difference shows up as
    drift over a long encode.
    """
    accepted = 'a positive int, Fraction or "num/den" string'
    if isinstance(value, bool) or not isinstance(value, (int, Fraction, str)):
        hint = None
        guess = _exact_guess(value) if isinstance(value, float) else None
        if guess is not None:
            hint = f'Pass an exact value such as "{guess}" instead of a float'
        raise type_error(func, arg, accepted, value, hint)
    if isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                result = Fraction(int(num), int(den))
            else:
                result = Fraction(int(text))
        except (ValueError, ZeroDivisionError):
            raise value_error(func, arg, accepted, value) from None
    else:
        result = Fraction(value)
    if result <= 0:
        raise value_error(func, arg, accepted, value)
    return result


def resolve_ratio(
    src_fps: Fraction,
    *,
    factor: object = None,
    fps: object = None,
    func: str = "interpolate",
    num_frames: int | None = None,
) -> tuple[Fraction, Fraction]:
    """Return ``(ratio, output_fps)`` for ``factor`` or a target ``fps`` (neither: factor 2).

    ``src_fps == 0`` marks a variable-frame-rate clip: ``factor`` works there (the output
    is variable-rate too, ``output_fps == 0``) and ``fps`` is refused.

    Both must give a clip VapourSynth can hold: rates with numerator and denominator below
    2**63, and at most :data:`MAX_FRAMES` output frames (``ceil(num_frames * ratio)``, for
    any clip when ``num_frames`` is not given).
    """
    if factor is not None and fps is not None:
        raise value_error(func, "factor", "omitted when fps is given (pass one of factor and fps)", factor)
    if fps is not None:
        arg, given = "fps", fps
        target = parse_rational(fps, func=func, arg="fps")
        if src_fps == 0:
            raise value_error(
                func,
                "fps",
                "omitted for a variable-frame-rate clip (fps 0/1)",
                fps,
                "Use factor= (it works from each frame's duration), or make the clip "
                "constant-rate first with std.AssumeFPS",
            )
        ratio, out_fps = target / src_fps, target
    else:
        arg, given = "factor", 2 if factor is None else factor
        ratio = parse_rational(given, func=func, arg="factor")
        out_fps = src_fps * ratio
    length = 1 if num_frames is None else num_frames
    if math.ceil(length * ratio) > MAX_FRAMES:
        limit = Fraction(MAX_FRAMES, length) * (src_fps if arg == "fps" else 1)
        clip = "any clip" if num_frames is None else f"a {num_frames}-frame clip"
        raise value_error(func, arg, f"at most {limit} for {clip} (VapourSynth's longest clip has "
                                     f"{MAX_FRAMES} frames)", given)
    if not (_fits(ratio) and _fits(out_fps)):
        what = "a rate" if arg == "fps" else "a ratio that, like the output rate it makes,"
        raise value_error(func, arg, f"{what} VapourSynth can hold (numerator and denominator below 2**63)", given)
    return ratio, out_fps


@dataclass(frozen=True, slots=True)
class Sample:
    """Where output frame ``k`` comes from: source frames ``left``/``right`` at ``t``."""

    left: int
    right: int
    t: Fraction

    @property
    def is_source(self) -> bool:
        """True when the frame is exactly source frame ``left`` (no synthesis)."""
        return self.t == 0


class Timeline:
    """Maps the frames of a conversion by ``ratio`` of an ``num_frames``-frame clip.

    ``src_fps`` is the source's constant rate, or 0 for a variable-rate source (then
    :meth:`duration` needs the source frames' durations).
    """

    __slots__ = ("num_src", "ratio", "src_fps", "num_frames")

    def __init__(self, num_src: int, ratio: Fraction, src_fps: Fraction = Fraction(0)) -> None:
        if num_src < 1:
            raise ValueError(f"Timeline needs at least one source frame; got {num_src}")
        if ratio <= 0:
            raise ValueError(f"Timeline ratio must be positive; got {ratio}")
        self.num_src = num_src
        self.ratio = Fraction(ratio)
        self.src_fps = Fraction(src_fps)
        self.num_frames = math.ceil(num_src * self.ratio)
        if self.num_frames > MAX_FRAMES:
            raise ValueError(f"Timeline of {self.num_frames} frames is longer than VapourSynth's longest clip "
                             f"({MAX_FRAMES} frames)")

    @property
    def fps(self) -> Fraction:
        """Output frame rate; 0 for a variable-rate source."""
        return self.src_fps * self.ratio

    def position(self, k: int) -> Fraction:
        """Source position of output frame ``k``."""
        self._check(k)
        return k / self.ratio

    def sample(self, k: int) -> Sample:
        """The source pair and blend position of output frame ``k``."""
        p = self.position(k)
        left = p.numerator // p.denominator
        if left >= self.num_src - 1:
            return Sample(self.num_src - 1, self.num_src - 1, Fraction(0))
        t = p - left
        return Sample(left, left + 1 if t else left, t)

    def first_output(self, i: int) -> int:
        """The first output frame whose position is at or after source frame ``i``."""
        return -((-i * self.ratio.numerator) // self.ratio.denominator)

    def left_counts(self) -> list[int]:
        """How many output frames have each source frame as ``left`` (sums to num_frames)."""
        starts = [self.first_output(i) for i in range(self.num_src)]
        counts = [starts[i + 1] - starts[i] for i in range(self.num_src - 1)]
        counts.append(self.num_frames - starts[-1])
        return counts

    def span(self, k: int) -> tuple[Fraction, Fraction]:
        """The slice ``[start, end)`` of source positions that output frame ``k`` covers."""
        self._check(k)
        return k / self.ratio, min((k + 1) / self.ratio, Fraction(self.num_src))

    def max_overlap(self) -> int:
        """The most source frames any one output frame's span can overlap."""
        return min(self.num_src, math.ceil(1 / self.ratio) + 1)

    def duration_weights(self, k: int) -> tuple[tuple[int, Fraction], ...]:
        """``(i, w)`` pairs: output frame ``k`` lasts ``sum(w * duration(source i))``."""
        start, end = self.span(k)
        weights = []
        i = start.numerator // start.denominator
        while i < end:
            w = min(end, Fraction(i + 1)) - max(start, Fraction(i))
            if w > 0:
                weights.append((i, w))
            i += 1
        return tuple(weights)

    def duration(self, k: int, src_durations: Sequence[Fraction] | None = None) -> Fraction:
        """Duration of output frame ``k`` in seconds.

        Constant-rate sources need nothing more; a variable-rate source needs
        ``src_durations``, the durations of the source frames, indexed from the first
        one this frame overlaps (``duration_weights(k)[0][0]``).
        """
        weights = self.duration_weights(k)
        if src_durations is None:
            if self.src_fps == 0:
                raise ValueError("a variable-rate Timeline needs the source frames' durations")
            return sum((w for _, w in weights), Fraction(0)) / self.src_fps
        first = weights[0][0]
        return sum((w * Fraction(src_durations[i - first]) for i, w in weights), Fraction(0))

    def _check(self, k: int) -> None:
        if not 0 <= k < self.num_frames:
            raise IndexError(f"output frame {k} is outside 0..{self.num_frames - 1}")

    def __repr__(self) -> str:
        return f"Timeline(num_src={self.num_src}, ratio={self.ratio}, src_fps={self.src_fps}, num_frames={self.num_frames})"
