"""The offset series beside the cache and the pivot's time axis, on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speeddata.cache.clocks import DAY_NS, ClockAxis, OffsetLog, Thinner, day_path, read_series

S = 10**9
MS = 10**6
T0 = 1_795_000_000 * S  # 2026-11-18


def point(t: int, offset: int, unc: int = 100_000, source: str = "10.0.0.5:4000",
          channel: str = "motor") -> tuple[int, str, str, int, int]:
    return (t, source, channel, offset, unc)


def test_a_point_is_kept_when_it_says_something_new() -> None:
    thin = Thinner(every_ns=60 * S)
    assert thin.keep(point(T0, 3 * S))
    assert not thin.keep(point(T0 + S, 3 * S + 50_000))  # within its uncertainty
    assert thin.keep(point(T0 + 2 * S, 3 * S + 300_000))  # moved beyond it
    assert thin.keep(point(T0 + 3 * S, 3 * S + 300_000, unc=10_000))  # much surer now
    assert not thin.keep(point(T0 + 4 * S, 3 * S + 300_000, unc=10_000))
    assert thin.keep(point(T0 + 63 * S, 3 * S + 300_000, unc=10_000))  # a minute on
    assert thin.keep(point(T0 + 4 * S, 0, source="10.0.0.6:1"))  # another sender


def test_the_series_is_read_back_by_channel_across_days_bad_lines_counted(
        tmp_path: Path) -> None:
    log = OffsetLog(tmp_path, every_ns=0)
    midnight = (T0 // DAY_NS + 1) * DAY_NS
    log.write([point(midnight - 10 * S, 1000), point(midnight + 10 * S, 2000),
               point(midnight + 20 * S, 5, channel="env"), point(midnight + 30 * S, 3000),
               point(midnight + 99 * S, 4000)])
    assert day_path(tmp_path, midnight - 1) != day_path(tmp_path, midnight)
    with day_path(tmp_path, midnight).open("a") as f:
        f.write("garbage\n1,2,motor,x,4\n" + "9" * 300 + "\n"
                f"{midnight},a,motor,{2**70},1\n{midnight},a,motor,1,-1\n"  # out of range
                "17950000")  # and a torn end
    series = read_series(tmp_path, "motor", midnight, midnight + 40 * S)
    # the points in the range, and one each side for interpolation at its ends
    assert series.offset_ns.tolist() == [1000, 2000, 3000, 4000]
    assert series.source == ["10.0.0.5:4000"] * 4 and series.bad_lines == 6
    assert log.statistics() == {"written": 5, "thinned": 0, "failed": 0}


def test_the_time_axis_of_each_mode(tmp_path: Path) -> None:
    OffsetLog(tmp_path, every_ns=0).write([point(T0, 3 * S), point(T0 + 10 * S, 3 * S + 1000)])
    source = np.array([T0 + 3 * S, T0 + 5 * S + 3 * S], dtype=np.int64)
    receive = np.array([T0, T0 + 5 * S], dtype=np.int64)

    def axis(mode: str) -> np.ndarray:
        return ClockAxis.load(tmp_path, "motor", T0, T0 + 10 * S, mode).apply(source, receive)

    assert axis("source").tolist() == source.tolist()
    assert axis("receive").tolist() == receive.tolist()
    assert axis("corrected").tolist() == [T0, T0 + 5 * S - 500]  # interpolated drift
    none = ClockAxis.load(tmp_path, "env", T0, T0 + 10 * S, "corrected")
    assert none.apply(source, receive).tolist() == source.tolist()
    assert "no clock offset was measured" in none.notes[0]
    assert none.uncertainty_ns() is None


def test_two_senders_of_one_channel_each_correct_their_own_records(tmp_path: Path) -> None:
    """Two boards on one channel, one 3.2 s ahead and drifting, one 1.7 s behind, their
    records interleaved in the cache: each record is corrected by its own sender's series
    (the one that puts it nearest its receive time), the records counted per sender; a
    third series within 100 ms of the first makes its records ambiguous, and said."""
    a, b = "10.0.0.5:4000", "10.0.0.6:4000"
    OffsetLog(tmp_path, every_ns=0).write([
        point(T0, 3_200 * MS, source=a), point(T0 + 10 * S, 3_200 * MS + 10_000, source=a),
        point(T0 + 5 * S, -1_700 * MS, source=b)])
    receive = T0 + np.arange(0, 10 * S, S // 2, dtype=np.int64)  # every 0.5 s, 20 records
    sent = receive - 2 * MS  # 2 ms on the way
    drift = (receive - T0) // 1_000_000  # 3.2 s + 1 µs per second of a's clock
    ahead = np.arange(20) % 2 == 0
    times = np.where(ahead, sent + 3_200 * MS + drift, sent - 1_700 * MS)
    axis = ClockAxis.load(tmp_path, "motor", T0, T0 + 10 * S, "corrected")
    assert axis.sources() == [a, b]
    corrected = axis.apply(times, receive)
    assert np.abs(corrected - sent).max() <= 1  # each by its own sender, to the ns rounding
    assert axis.by_source == {a: 10, b: 10} and axis.ambiguous == 0
    OffsetLog(tmp_path, every_ns=0).write([point(T0 + S, 3_250 * MS, source="10.0.0.7:1")])
    near = ClockAxis.load(tmp_path, "motor", T0, T0 + 10 * S, "corrected")
    assert np.abs(near.apply(times, receive) - sent)[~ahead].max() <= 1  # b's still exact
    assert near.ambiguous == 10  # a's records: a or the one 50 ms from it

    class Writer:  # what annotate needs of an HDF5 channel writer
        group = type("Group", (), {"attrs": {}, "create_group": lambda *_: None})()
        time = type("Time", (), {"attrs": {}})()

    writer = Writer()
    axis.series = None  # the series' datasets aside: the attributes only
    axis.annotate(writer)
    attrs = writer.group.attrs
    assert attrs["clock_senders"] == 2 and attrs["clock_ambiguous_records"] == 0
    assert "corrected by the sender whose offset puts it nearest" in attrs["clock_note"]
    assert f"10 records by {a}, 10 records by {b}" in attrs["clock_note"]
