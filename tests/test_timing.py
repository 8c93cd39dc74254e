"""Exact timing: properties over random rates and lengths, and the common conversions."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vs_vgan.timing import Timeline, parse_rational, resolve_ratio

ratios = st.builds(Fraction, st.integers(1, 400), st.integers(1, 400))
lengths = st.integers(1, 300)
rates = st.builds(Fraction, st.integers(1, 240000), st.integers(1, 1001))


@settings(max_examples=200, deadline=None)
@given(n=lengths, ratio=ratios)
def test_length_is_ceil_of_scaled_length(n, ratio):
    tl = Timeline(n, ratio, Fraction(24))
    assert tl.num_frames == math.ceil(n * ratio)
    assert sum(tl.left_counts()) == tl.num_frames


@settings(max_examples=200, deadline=None)
@given(n=lengths, ratio=ratios)
def test_left_index_is_monotone_and_in_range(n, ratio):
    tl = Timeline(n, ratio, Fraction(24))
    lefts = [tl.sample(k).left for k in range(tl.num_frames)]
    assert lefts == sorted(lefts)
    assert all(0 <= i < n for i in lefts)
    # left_counts is exactly the histogram of left indices (it drives the graph remap)
    assert [lefts.count(i) for i in range(n)] == tl.left_counts()


@settings(max_examples=200, deadline=None)
@given(n=lengths, ratio=ratios)
def test_t_is_zero_exactly_on_source_frames(n, ratio):
    tl = Timeline(n, ratio, Fraction(24))
    for k in range(tl.num_frames):
        s = tl.sample(k)
        p = k / ratio
        assert 0 <= s.t < 1
        if p.denominator == 1 and p < n:
            assert s.t == 0 and s.left == p and s.is_source
        elif p > n - 1:
            assert s.is_source and s.left == n - 1  # end-of-clip policy: hold the last frame
        else:
            assert s.t == p - s.left and s.t != 0 and s.right == s.left + 1


@settings(max_examples=200, deadline=None)
@given(n=lengths, ratio=ratios, fps=rates)
def test_constant_rate_durations_add_up_to_source_duration(n, ratio, fps):
    tl = Timeline(n, ratio, fps)
    durations = [tl.duration(k) for k in range(tl.num_frames)]
    assert sum(durations) == n / fps
    assert all(d == 1 / tl.fps for d in durations[:-1])
    assert 0 < durations[-1] <= 1 / tl.fps


@settings(max_examples=100, deadline=None)
@given(src=st.lists(st.builds(Fraction, st.integers(1, 100), st.integers(1, 3000)), min_size=1, max_size=60),
       ratio=ratios)
def test_variable_rate_durations_add_up(src, ratio):
    tl = Timeline(len(src), ratio)
    total = Fraction(0)
    for k in range(tl.num_frames):
        first = tl.duration_weights(k)[0][0]
        assert len(tl.duration_weights(k)) <= tl.max_overlap()
        total += tl.duration(k, src[first:first + tl.max_overlap()])
    assert total == sum(src)


@pytest.mark.parametrize("src, dst, n, expected_len", [
    (Fraction(24), Fraction(60000, 1001), 24, 60),
    (Fraction(30000, 1001), Fraction(60000, 1001), 10, 20),
    (Fraction(60), Fraction(50), 60, 50),
    (Fraction(25), Fraction(24), 25, 24),
])
def test_common_conversions(src, dst, n, expected_len):
    ratio, out_fps = resolve_ratio(src, fps=dst)
    assert out_fps == dst
    tl = Timeline(n, ratio, src)
    assert tl.num_frames == expected_len
    assert sum(tl.duration(k) for k in range(tl.num_frames)) == n / src


def test_24_to_60000_1001_positions():
    ratio, _ = resolve_ratio(Fraction(24), fps="60000/1001")
    assert ratio == Fraction(2500, 1001)
    tl = Timeline(48, ratio, Fraction(24))
    assert [tl.sample(k).left for k in range(6)] == [0, 0, 0, 1, 1, 2]
    assert tl.sample(1).t == Fraction(1001, 2500)
    assert tl.sample(5).t == Fraction(5005, 2500) - 2


def test_60_to_50_and_25_to_24_map_as_expected():
    tl = Timeline(10, Fraction(5, 6), Fraction(60))
    assert [(s.left, s.t) for s in map(tl.sample, range(tl.num_frames))] == [
        (0, 0), (1, Fraction(1, 5)), (2, Fraction(2, 5)), (3, Fraction(3, 5)), (4, Fraction(4, 5)),
        (6, 0), (7, Fraction(1, 5)), (8, Fraction(2, 5)), (9, 0)]
    tl = Timeline(25, Fraction(24, 25), Fraction(25))
    assert tl.sample(1) .t == Fraction(1, 24)
    assert tl.sample(23).left == 23 and tl.sample(23).t == Fraction(23, 24)


def test_downconversion_skips_frames_in_counts():
    tl = Timeline(6, Fraction(1, 2), Fraction(60))
    assert tl.left_counts() == [1, 0, 1, 0, 1, 0]
    assert tl.num_frames == 3


def test_resolve_ratio_defaults_to_factor_2():
    assert resolve_ratio(Fraction(24)) == (Fraction(2), Fraction(48))
    assert resolve_ratio(Fraction(0)) == (Fraction(2), Fraction(0))  # variable rate stays variable


@pytest.mark.parametrize("value, expected", [
    (2, Fraction(2)), ("5/2", Fraction(5, 2)), (" 60000/1001 ", Fraction(60000, 1001)),
    (Fraction(3, 7), Fraction(3, 7)), ("3", Fraction(3)),
])
def test_parse_rational_accepts(value, expected):
    assert parse_rational(value, func="interpolate", arg="factor") == expected


@pytest.mark.parametrize("value, exc, message", [
    (0, ValueError, "vs_vgan.interpolate: factor must be a positive int, Fraction or \"num/den\" string; got 0"),
    (-2, ValueError, "got -2"),
    ("1/0", ValueError, "got '1/0'"),
    ("abc", ValueError, "got 'abc'"),
    (59.94, TypeError, 'Pass an exact value such as "60000/1001"'),
    (True, TypeError, "got True"),
    (None, TypeError, "got None"),
])
def test_parse_rational_refuses(value, exc, message):
    with pytest.raises(exc, match=None) as info:
        parse_rational(value, func="interpolate", arg="factor")
    assert message in str(info.value)


def test_fps_and_factor_together_is_an_error():
    with pytest.raises(ValueError, match=r"vs_vgan.interpolate: factor must be omitted when fps is given"):
        resolve_ratio(Fraction(24), factor=2, fps=60)


def test_fps_on_variable_rate_is_a_clear_error():
    with pytest.raises(ValueError) as info:
        resolve_ratio(Fraction(0), fps="60000/1001")
    assert "vs_vgan.interpolate: fps must be omitted for a variable-frame-rate clip (fps 0/1)" in str(info.value)
    assert "factor=" in str(info.value)
