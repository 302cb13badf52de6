"""The offset series beside the cache and the pivot's time axis, on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speeddata.cache.clocks import DAY_NS, ClockAxis, OffsetLog, Thinner, day_path, read_series

S = 10**9
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
