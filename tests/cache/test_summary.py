"""Summaries beside cache files and the scroll-back columns made from them, checked
against the samples themselves (brute force over what was written)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from speeddata.cache import summary
from speeddata.cache.catalogue import Catalogue
from speeddata.cache.layout import summary_path
from speeddata.cache.store import CacheWriter
from speeddata.schemas import Registry, load_file
from speeddata.sender import Encoder
from speeddata.stripchart.scrollback import CacheView
from tests.helpers import SCHEMAS

MOTOR = load_file(SCHEMAS / "motor.avsc")
T0 = 1_795_000_000_000_000_000
MS = 1_000_000


def signal_values(n: np.ndarray) -> np.ndarray:
    """speed: a 1 Hz sine at 1 kHz with one spike; NaN now and then."""
    values = 100 * np.sin(2 * np.pi * n / 1000.0)
    values[n == 123_457] = 5000.0
    values[n % 9973 == 5] = np.nan
    return values


def write_cache(folder: Path, seconds: float, rotate_seconds: float = 60.0,
                jitter: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``seconds`` of 1 kHz motor data in blocks of 15 (a relay's batches), files rolled
    every ``rotate_seconds``; returns (time, speed) as written."""
    encoder = Encoder(MOTOR)
    writer = CacheWriter(folder, 2**40, rotate_seconds)
    n = np.arange(int(seconds * 1000), dtype=np.int64)  # int32 by default on 32-bit ARM
    times = T0 + n * MS
    if jitter:  # a few samples out of order within a block
        times[7::50] -= 3 * MS
    speed = signal_values(n)
    for first in range(0, len(n), 15):
        block = [encoder.encode({"time": int(times[i]), "speed": float(speed[i]),
                                 "torque": float(i), "current": 0.0, "voltage": 0.0,
                                 "position": 0.0, "temperature": 0.0})[10:]
                 for i in range(first, min(first + 15, len(n)))]
        writer.append(MOTOR, block, int(times[first]))
    writer.close()
    return times, speed


def brute(times: np.ndarray, values: np.ndarray, start: int, end: int, count: int):
    """Per column over [start, end): min, max (NaN ignored) and the latest sample."""
    inside = (times >= start) & (times < end)
    t, v = times[inside], values[inside]
    width = (end - start) / count
    keys = np.minimum(((t - start) / width).astype(np.int64), count - 1)
    out = {}
    for key in np.unique(keys):
        chosen = keys == key
        order = np.argsort(t[chosen], kind="stable")
        column = v[chosen][order]
        finite = column[~np.isnan(column)]
        out[int(key)] = (finite.min() if len(finite) else np.nan,
                         finite.max() if len(finite) else np.nan, column[-1])
    return out


def check(found, times, values, start, end, count) -> None:
    expected = brute(times, values, start, end, count)
    width = (end - start) / count
    keys = [round(float(s - start) / width) for s in found.start_ns]
    assert keys == sorted(expected), "the same columns have data"
    for key, low, high in zip(keys, found.min, found.max, strict=True):
        want_low, want_high, _ = expected[key]
        assert (math.isnan(low) and math.isnan(want_low)) or low == want_low
        assert (math.isnan(high) and math.isnan(want_high)) or high == want_high


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    folder = tmp_path_factory.mktemp("cache")
    times, speed = write_cache(folder, 300.0)  # five minutes, five files
    return folder, times, speed


def registry() -> Registry:
    r = Registry()
    r.add(MOTOR)
    return r


@pytest.mark.parametrize(("start_s", "end_s", "count"), [
    (0, 300, 1000),    # the whole cache from the 100 ms level
    (0, 300, 20),      # 15 s columns: the 10 s level
    (100, 110, 1200),  # 10 s: from the samples
    (119.5, 120.7, 500),  # across a file boundary, samples
    (-50, 1000, 300),   # past both ends
    (123.3, 123.6, 10),  # around the spike
])
def test_columns_match_the_samples(cache, start_s: float, end_s: float, count: int) -> None:
    folder, times, speed = cache
    view = CacheView(folder, registry())
    start, end = T0 + int(start_s * 1e9), T0 + int(end_s * 1e9)
    found = view.columns("motor", "speed", start, end, count)
    width = summary.level_for(start, end, count)
    assert found.level == ("samples" if width is None else f"{width // MS} ms"
                           if width < 10**9 else f"{width / 1e9:g} s")
    if width is None:  # exact columns from the samples
        check(found, times, speed, start, end, count)
    else:  # whole buckets starting in the range: their edges differ from the range's
        def between(a: int, b: int) -> int:
            return int(((times >= a) & (times < b)).sum())

        assert between(start + width, end) <= found.count.sum() <= between(start, end + width)
        assert np.nanmax(found.max) == np.nanmax(speed[(times >= start) & (times < end)])
    assert (found.count > 0).all()


def test_a_one_sample_spike_survives_every_level(cache) -> None:
    folder, _, _ = cache
    view = CacheView(folder, registry())
    for start_s, end_s in [(0, 300), (120, 130), (123, 124)]:
        found = view.columns("motor", "speed", T0 + int(start_s * 1e9), T0 + int(end_s * 1e9),
                             800)
        assert np.nanmax(found.max) == 5000.0, (start_s, end_s, found.level)


def test_the_day_level_is_exact_on_bucket_aligned_columns(cache) -> None:
    """Columns of exactly 10 s over [0, 300 s): each is one 10 s bucket."""
    folder, times, speed = cache
    view = CacheView(folder, registry())
    found = view.columns("motor", "speed", T0, T0 + 300 * 10**9, 30)
    assert found.level == "10 s"
    check(found, times, speed, T0, T0 + 300 * 10**9, 30)
    assert found.count.sum() == len(times)


def test_summaries_are_kept_and_reused(cache) -> None:
    folder, _, _ = cache
    view = CacheView(folder, registry())
    view.columns("motor", "speed", T0, T0 + 300 * 10**9, 100)
    files = Catalogue(folder).files(["motor"])
    closed = [f for f in files[:-1]]
    assert all(summary_path(f.path).exists() for f in closed)
    assert not summary_path(files[-1].path).exists()  # the newest may grow: memory only
    again = CacheView(folder, registry())
    again.columns("motor", "speed", T0, T0 + 300 * 10**9, 100)
    assert again.made == 0  # read back, not made again


def test_a_growing_file_is_extended_not_redone(tmp_path: Path) -> None:
    encoder = Encoder(MOTOR)
    writer = CacheWriter(tmp_path, 2**40, 3600)
    view = CacheView(tmp_path, registry())

    def send(first: int, count: int) -> None:
        block = [encoder.encode({"time": T0 + i * MS, "speed": float(i), "torque": 0.0,
                                 "current": 0.0, "voltage": 0.0, "position": 0.0,
                                 "temperature": 0.0})[10:] for i in range(first, first + count)]
        writer.append(MOTOR, block, T0 + first * MS)

    send(0, 500)
    writer.fsync()
    first = view.columns("motor", "speed", T0, T0 + 2 * 10**9, 2000)
    assert first.count.sum() == 500 and first.max.max() == 499
    send(500, 700)
    writer.fsync()
    second = view.columns("motor", "speed", T0, T0 + 2 * 10**9, 2000)
    assert second.count.sum() == 1200 and second.max.max() == 1199
    (grown,) = view._growing.values()
    assert grown.entries == 2
    writer.close()


def test_incremental_equals_whole(tmp_path: Path) -> None:
    times, _ = write_cache(tmp_path, 20.0, rotate_seconds=3600, jitter=True)
    (cached,) = Catalogue(tmp_path).files(["motor"])
    from speeddata.cache import index
    from speeddata.cache.layout import index_path

    entries = index.unpack(index_path(cached.path).read_bytes())
    whole = summary.summarize(cached, MOTOR, entries)
    part = summary.summarize(cached, MOTOR, entries[:333])
    part = summary.summarize(cached, MOTOR, entries, part)
    for width in summary.LEVELS:
        a, b = whole.levels[width], part.levels[width]
        assert np.array_equal(a.start, b.start) and np.array_equal(a.count, b.count)
        assert np.array_equal(a.min, b.min, equal_nan=True)
        assert np.array_equal(a.max, b.max, equal_nan=True)
        assert np.array_equal(a.last, b.last, equal_nan=True)
    assert np.array_equal(whole.block_first, part.block_first)
    assert whole.span() == (int(times.min()), int(times.max()))
    path = tmp_path / "x.sum.npz"
    whole.save(path)
    back = summary.Summary.load(path)
    assert back.signals == whole.signals and back.entries == len(entries)
    assert np.array_equal(back.levels[summary.LEVELS[0]].max, whole.levels[summary.LEVELS[0]].max,
                          equal_nan=True)


def test_retention_deletes_the_summary_with_its_file(cache, tmp_path: Path) -> None:
    write_cache(tmp_path, 180.0)
    CacheView(tmp_path, registry()).columns("motor", "speed", T0, T0 + 180 * 10**9, 10)
    catalogue = Catalogue(tmp_path, protected=lambda: [])
    oldest = catalogue.files(["motor"])[0]
    assert summary_path(oldest.path).exists()
    catalogue.enforce(catalogue.size() - 1, set())
    assert not oldest.path.exists() and not summary_path(oldest.path).exists()


def test_bad_requests_are_refused(cache) -> None:
    from speeddata.errors import NotFoundError, SpeeddataError

    view = CacheView(cache[0], registry())
    with pytest.raises(SpeeddataError, match="columns must be"):
        view.columns("motor", "speed", T0, T0, 10)
    with pytest.raises(SpeeddataError, match="columns must be"):
        view.columns("motor", "speed", T0, T0 + 10, 10**6)
    with pytest.raises(NotFoundError):
        view.columns("motor", "nosuch", T0, T0 + 10**9, 10)
    with pytest.raises(NotFoundError, match="no channel 'nochannel'"):  # never known: 404
        view.columns("nochannel", "x", T0, T0 + 10**9, 10)
