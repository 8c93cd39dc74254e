"""factor= and fps= that are not finite, or too large or small for VapourSynth, give the
project's clear errors (never a raw OverflowError, a NaN conversion error or a hang)."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import vapoursynth as vs

import vs_vgan
from vs_vgan import timing
from vs_vgan.timing import Timeline, parse_rational, resolve_ratio

ACCEPTED = 'must be a positive int, Fraction or "num/den" string'
INT64_MAX = 2**63 - 1  # VapourSynth's frame rates: int64 numerator and denominator
MAX_FRAMES = 2**31 - 1  # VapourSynth's longest clip


def _clip(length: int = 4) -> vs.VideoNode:
    return vs.core.std.BlankClip(format=vs.RGB24, width=32, height=16, length=length, fpsnum=24)


@pytest.mark.parametrize("arg", ["factor", "fps"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_float_is_a_type_error_naming_the_argument(arg, value):
    with pytest.raises(TypeError) as info:
        vs_vgan.interpolate(_clip(), model="blend", **{arg: value})
    msg = str(info.value)
    assert msg.startswith(f"vs_vgan.interpolate: {arg} {ACCEPTED}; got {value!r}")
    assert "such as" not in msg  # no exact value stands for nan or inf


@pytest.mark.parametrize("arg", ["factor", "fps"])
@pytest.mark.parametrize("value", [1e300, 1.7976931348623157e308, 1e-300, 1e-5, -2.5, -59.94, 0.0, -0.0])
def test_float_without_a_sensible_exact_value_gets_no_suggestion(arg, value):
    """The "such as" hint is offered only where it names a positive rate VapourSynth can hold
    (not a 300-digit integer for 1e300, "0" for 1e-300 or "-5/2" for -2.5)."""
    with pytest.raises(TypeError) as info:
        vs_vgan.interpolate(_clip(), model="blend", **{arg: value})
    msg = str(info.value)
    assert msg.startswith(f"vs_vgan.interpolate: {arg} {ACCEPTED}; got {value!r}")
    assert "such as" not in msg and len(msg) < 200


@pytest.mark.parametrize("value, suggestion", [(59.94, "60000/1001"), (2.5, "5/2"), (1e18, "1000000000000000000")])
def test_float_with_an_exact_value_still_gets_it_suggested(value, suggestion):
    with pytest.raises(TypeError, match=f'Pass an exact value such as "{suggestion}" instead of a float'):
        parse_rational(value, func="interpolate", arg="fps")


@pytest.mark.parametrize("arg", ["factor", "fps"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1/0", "0/0", "1e309", "1e3", "9" * 5000, "1/" + "9" * 5000],
                         ids=["nan", "inf", "-inf", "1/0", "0/0", "1e309", "1e3", "5000 digits", "1/5000 digits"])
def test_non_finite_or_unreadable_string_is_a_value_error(arg, value):
    with pytest.raises(ValueError) as info:
        vs_vgan.interpolate(_clip(), model="blend", **{arg: value})
    assert str(info.value).startswith(f"vs_vgan.interpolate: {arg} {ACCEPTED}; got '")


@pytest.mark.parametrize("arg", ["factor", "fps"])
@pytest.mark.parametrize("value", [Fraction(1, 10**400), "1/1" + "0" * 400, Fraction(1, INT64_MAX + 1)],
                         ids=["Fraction(1,10**400)", "str 1/10**400", "Fraction(1,2**63)"])
def test_rate_too_fine_for_vapoursynth_is_a_value_error(arg, value):
    """A tiny factor or fps makes a frame rate whose denominator VapourSynth can't hold
    (it was a raw OverflowError from std.AssumeFPS)."""
    with pytest.raises(ValueError) as info:
        vs_vgan.interpolate(_clip(), model="blend", **{arg: value})
    msg = str(info.value)
    assert msg.startswith(f"vs_vgan.interpolate: {arg} must be ")
    assert "2**63" in msg


@pytest.mark.parametrize("value", [Fraction(10**400), 10**400, "1" + "0" * 400, INT64_MAX, MAX_FRAMES + 1],
                         ids=["Fraction(10**400)", "int 10**400", "str 10**400", "2**63-1", "2**31"])
def test_factor_too_large_for_any_clip_is_a_value_error(value):
    """Even a 1-frame clip would be longer than VapourSynth's longest (interpolate used to
    hang building the frame map)."""
    with pytest.raises(ValueError) as info:
        resolve_ratio(Fraction(24), factor=value)
    msg = str(info.value)
    assert msg.startswith("vs_vgan.interpolate: factor must be ")
    assert str(MAX_FRAMES) in msg


def test_fps_too_large_for_any_clip_is_a_value_error():
    with pytest.raises(ValueError, match=r"^vs_vgan.interpolate: fps must be .*2147483647"):
        resolve_ratio(Fraction(24), fps=24 * (MAX_FRAMES + 1))
    with pytest.raises(ValueError, match=r"^vs_vgan.interpolate: fps must be .*2\*\*63"):
        resolve_ratio(Fraction(24), fps=Fraction(INT64_MAX + 1, INT64_MAX))  # about 1, but not as VapourSynth holds it


def test_factor_too_large_for_this_clip_is_a_value_error():
    """With the clip's length the bound is exact: ceil(num_frames * ratio) <= MAX_FRAMES."""
    limit = Fraction(MAX_FRAMES, 4)
    assert resolve_ratio(Fraction(24), factor=limit, num_frames=4)[0] == limit
    with pytest.raises(ValueError) as info:
        resolve_ratio(Fraction(24), factor=10**9, num_frames=4)
    msg = str(info.value)
    assert msg.startswith(f"vs_vgan.interpolate: factor must be at most {limit} for a 4-frame clip")
    assert msg.endswith("; got 1000000000")
    with pytest.raises(ValueError, match=rf"^vs_vgan.interpolate: fps must be at most {limit * 24} for a 4-frame"):
        resolve_ratio(Fraction(24), fps=24 * 10**9, num_frames=4)
    with pytest.raises(ValueError, match="for a 4-frame clip"):  # variable rate: the same bound on factor
        resolve_ratio(Fraction(0), factor=10**9, num_frames=4)


def test_timeline_longer_than_vapoursynth_allows_is_refused():
    assert timing.MAX_FRAMES == MAX_FRAMES
    assert Timeline(2, Fraction(MAX_FRAMES, 2)).num_frames == MAX_FRAMES
    with pytest.raises(ValueError, match="longest clip"):
        Timeline(4, Fraction(10**9))


def test_ordinary_values_still_pass():
    assert resolve_ratio(Fraction(24), factor="5/2") == (Fraction(5, 2), Fraction(60))
    assert resolve_ratio(Fraction(24000, 1001), fps="60000/1001", num_frames=100) == (Fraction(5, 2),
                                                                                      Fraction(60000, 1001))
    assert resolve_ratio(Fraction(0), factor=Fraction(1, 1000)) == (Fraction(1, 1000), Fraction(0))
