"""vs_vgan.chunks: how a conversion's output splits into chunks (pure: no VapourSynth, no Ray)."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vs_vgan.chunks import chunk_length, cut_window, nominal_edges, plan_chunks


def edges(plan: list[tuple[int, int]]) -> list[int]:
    return [start for start, _ in plan[1:]]


@pytest.mark.parametrize("total, length, cuts, window, expected", [
    # fixed lengths where no cut is near
    (10, 32, [], 0, []),                       # one chunk: shorter than a chunk
    (96, 32, [], 0, [32, 64]),                 # an exact multiple
    (104, 32, [], 0, [32, 64, 96]),            # a tail of 8 = length // 4 stays a chunk
    (100, 32, [], 0, [32, 64]),                # a tail of 4 < length // 4 joins the last chunk
    (96, 32, [35], 0, [32, 64]),               # window 0: cuts are ignored
    # an edge moves onto a scene start within the window
    (96, 32, [35], 4, [35, 64]),               # after the edge
    (96, 32, [29], 4, [29, 64]),               # before it
    (96, 32, [32], 4, [32, 64]),               # on it
    (96, 32, [37], 4, [32, 64]),               # 5 away: too far
    (96, 32, [30, 33], 4, [33, 64]),           # the nearer of two
    (96, 32, [30, 34], 4, [30, 64]),           # the earlier of two as near
    (96, 32, [33, 62], 4, [33, 62]),           # each edge its own cut
    (96, 32, [0, 96, 200], 4, [32, 64]),       # frames outside 1 .. total - 1 begin no chunk
    (104, 32, [99], 4, [32, 64]),              # the last edge moved to 99 leaves 5 < 8: dropped
    (104, 32, [94], 4, [32, 64, 94]),          # moved to 94 leaves 10: kept
])
def test_plan_decision_table(total, length, cuts, window, expected):
    plan = plan_chunks(total, length, scene_starts=cuts, window=window)
    assert edges(plan) == expected
    assert plan[0][0] == 0 and plan[-1][1] == total


@given(total=st.integers(1, 5000), length=st.integers(1, 400), data=st.data())
def test_plan_covers_every_frame_once_within_its_bounds(total, length, data):
    window = data.draw(st.integers(0, max(0, (length - 1) // 2)))
    cuts = data.draw(st.lists(st.integers(-5, total + 5), max_size=40))
    plan = plan_chunks(total, length, scene_starts=cuts, window=window)
    assert plan[0][0] == 0 and plan[-1][1] == total
    assert all(a < b for a, b in plan) and all(plan[i][1] == plan[i + 1][0] for i in range(len(plan) - 1))
    for k, (a, b) in enumerate(plan[:-1]):
        nominal = (k + 1) * length
        assert abs(b - nominal) <= window  # each edge stays within the window of its fixed place
        assert b == nominal or b in cuts
    assert plan[-1][1] - plan[-1][0] <= length + length // 4 + window
    assert len(plan) in (len(nominal_edges(total, length)), len(nominal_edges(total, length)) + 1)


def test_lengths_windows_and_errors():
    assert chunk_length(Fraction(48), seconds=60) == 2880
    assert chunk_length(Fraction(60000, 1001), seconds=1) == 60
    assert chunk_length(Fraction(48), frames=7) == 7
    assert chunk_length(Fraction(48), seconds=0.001) == 1
    assert cut_window(2880, Fraction(48)) == 48  # a second of output ...
    assert cut_window(32, Fraction(48)) == 4  # ... at most an eighth of a chunk
    assert cut_window(7, Fraction(48)) == 0
    with pytest.raises(ValueError, match=r"vs_vgan.plan_chunks: window must be below half the chunk length"):
        plan_chunks(100, 10, window=5)
    with pytest.raises(ValueError, match=r"vs_vgan.plan_chunks: length must be an int >= 1; got 0"):
        plan_chunks(100, 0)
    with pytest.raises(TypeError, match=r"vs_vgan.plan_chunks: total must be an int >= 1"):
        plan_chunks(10.0, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"vs_vgan.chunk_length: frames must be an int >= 1; got 0"):
        chunk_length(Fraction(24), frames=0)
    with pytest.raises(ValueError, match=r"vs_vgan.chunk_length: seconds must be a number > 0"):
        chunk_length(Fraction(24), seconds=-1.0)
    with pytest.raises(ValueError, match=r"vs_vgan.chunk_length: fps must be a constant rate"):
        chunk_length(Fraction(0), seconds=10)
