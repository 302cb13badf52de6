"""The join rule (hold-last): against a plain loop, for any times, and the held samples
across batches."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from speeddata.blocks.join import Held, concat, join_last

times_ = st.lists(st.integers(-50, 50), max_size=40)


def by_loop(times: list[int], other_times: list[int], other: list[float]) -> list[float]:
    """The rule as written in the README: the last value at or before, NaN before."""
    out = []
    for t in times:
        found = math.nan
        best = None
        for i, (u, v) in enumerate(zip(other_times, other, strict=True)):
            if u <= t and (best is None or u > other_times[best] or (
                    u == other_times[best] and i > best)):
                best, found = i, v
        out.append(found)
    return out


@given(times_, times_)
def test_join_is_the_last_value_at_or_before_and_nan_before(times, other_times) -> None:
    other = [float(i) for i in range(len(other_times))]  # the index: says which one won
    got = join_last(np.array(times, dtype=np.int64), np.array(other_times, dtype=np.int64),
                    np.array(other))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, by_loop(times, other_times, other))


@given(st.lists(st.lists(st.integers(0, 1000), max_size=20), min_size=1, max_size=6),
       st.lists(st.integers(0, 1000), min_size=1, max_size=6))
def test_held_across_batches_joins_as_one_whole_list(arrivals, primary_cuts) -> None:
    """Samples of the other channel arrive in pieces; the primary's batches go forward in
    time. Each batch joins as if everything received so far were one list."""
    held = Held()
    seen_t: list[int] = []
    seen_v: list[float] = []
    cuts = sorted(primary_cuts)
    done = cuts[0]
    for n, (piece, cut) in enumerate(zip(arrivals, cuts, strict=False)):
        values = [float(n * 1000 + i) for i in range(len(piece))]
        held.add(np.array(piece, dtype=np.int64), {"x": np.array(values)})
        seen_t += piece
        seen_v += values
        times = np.array([done, cut], dtype=np.int64)  # rows go forward: none before done
        got = held.join(times)["x"] if len(held) else np.full(2, np.nan)
        np.testing.assert_array_equal(got, by_loop(times.tolist(), seen_t, seen_v))
        held.trim(cut)
        done = cut
        assert len(held) <= len(seen_t)


def test_text_is_none_before_and_ints_become_floats() -> None:
    held = Held()
    held.add(np.array([10, 20]), {"state": np.array(["A", "B"], dtype=object),
                                  "count": np.array([1, 2], dtype=np.int64)})
    got = held.join(np.array([5, 10, 25]))
    assert got["state"].tolist() == [None, "A", "B"]
    np.testing.assert_array_equal(got["count"], [np.nan, 1.0, 2.0])


def test_held_is_bounded_and_counts_what_it_drops() -> None:
    held = Held(capacity=100)
    held.add(np.arange(250), {"x": np.arange(250.0)})
    assert len(held) == 100 and held.dropped == 150
    assert held.join(np.array([149, 150]))["x"].tolist()[1] == 150.0
    assert math.isnan(held.join(np.array([149]))["x"][0])  # dropped: as if never seen


def test_trim_keeps_the_last_sample_a_later_row_still_needs() -> None:
    held = Held()
    held.add(np.array([1, 2, 3, 7]), {"x": np.array([1.0, 2.0, 3.0, 7.0])})
    held.trim(5)
    assert held.times.tolist() == [3, 7]
    assert held.join(np.array([6]))["x"].tolist() == [3.0]


def test_a_field_a_schema_edit_added_is_nan_where_it_was_not_sent() -> None:
    held = Held()
    held.add(np.array([1]), {"a": np.array([1.0])})
    held.add(np.array([2]), {"a": np.array([2.0]), "b": np.array([20.0])})
    got = held.join(np.array([1, 2]))
    np.testing.assert_array_equal(got["b"], [np.nan, 20.0])
    both = concat([{"a": np.array([1, 2])}, {"a": np.array([3.5]), "b": np.array(["x"],
                                                                                 dtype=object)}])
    assert both["a"].tolist() == [1.0, 2.0, 3.5] and both["b"].tolist() == [None, None, "x"]
