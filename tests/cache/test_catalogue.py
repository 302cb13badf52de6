"""Retention and time-range lookup, from file names and indexes only."""

from __future__ import annotations

from pathlib import Path

from speeddata.cache import reader
from speeddata.cache.catalogue import (
    QUOTA_FILE,
    CachedFile,
    Catalogue,
    auto_quota,
    fixed_quota,
    plan_retention,
)
from speeddata.cache.store import CacheWriter
from speeddata.tags import TagStore
from tests.cache.test_store import EXAMPLE, T0, bodies

S = 10**9


def cached(name: str, start: int, end: int, size: int = 100) -> CachedFile:
    return CachedFile("c", Path(name), size, start, end)


def test_retention_deletes_oldest_first_until_under_quota() -> None:
    files = [cached("a", 0, 9), cached("b", 10, 19), cached("c", 20, 29), cached("d", 30, 39)]
    doomed = plan_retention(files, quota=250, protected=[], keep=set())
    assert [f.path.name for f in doomed] == ["a", "b"]


def test_retention_skips_protected_ranges_and_open_files() -> None:
    files = [cached("a", 0, 9), cached("b", 10, 19), cached("c", 20, 29), cached("d", 30, 39)]
    doomed = plan_retention(files, quota=150, protected=[(12, 15)], keep={Path("a")})
    assert [f.path.name for f in doomed] == ["c", "d"]


def test_retention_may_stay_over_quota_rather_than_lose_tagged_data() -> None:
    files = [cached("a", 0, 9), cached("b", 10, 19)]
    assert plan_retention(files, quota=0, protected=[(0, 100)], keep=set()) == []


def _fill(cache: Path) -> CacheWriter:
    writer = CacheWriter(cache, rotate_bytes=600, rotate_seconds=600)
    for i in range(30):
        writer.append(EXAMPLE, bodies(i, 1), T0 + i * S)
    writer.close()
    return writer


def test_enforce_keeps_unexported_tags_and_deletes_untagged_old_files(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _fill(cache)
    tags = TagStore(cache)
    tags.add("early", T0 + 2 * S, T0 + 4 * S)
    catalogue = Catalogue(cache, tags.protected_ranges)
    before = catalogue.files()
    assert len(before) > 4
    deleted = catalogue.enforce(quota=catalogue.size() // 2, keep=set())
    assert deleted
    left = catalogue.files()
    assert any(f.overlaps(T0 + 2 * S, T0 + 4 * S) for f in left)
    kept = [t for t, _ in reader.records(cache, "example", T0 + 2 * S, T0 + 4 * S)]
    assert kept == [T0 + 2 * S, T0 + 3 * S, T0 + 4 * S]
    # once exported, the tag no longer protects its range; the newest file of a channel
    # stays (a relay worker may have it open)
    tags.mark_exported("early", T0)
    catalogue.enforce(quota=0, keep=set())
    assert [f.path for f in catalogue.files()] == [before[-1].path]


def test_retention_deletes_nothing_when_the_tag_store_cannot_be_read(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _fill(cache)

    def unreadable() -> list[tuple[int, int]]:
        raise OSError(28, "No space left on device")

    catalogue = Catalogue(cache, unreadable)
    before = catalogue.files()
    assert catalogue.enforce(quota=0, keep=set()) == []
    assert catalogue.files() == before


def test_the_automatic_quota_is_fixed_once_and_never_shrinks(tmp_path: Path) -> None:
    # the cache's own bytes count as room for the cache: a full cache does not shrink it
    assert auto_quota(free=10 * 2**20, cache_size=54 * 2**20) == 32 * 2**20
    assert auto_quota(free=2**50, cache_size=0) == 10 * 2**30
    first = fixed_quota(tmp_path, 0, cache_size=lambda: 0)
    assert (tmp_path / QUOTA_FILE).read_text().strip() == str(first)
    # a restart after the cache grew (and the free space shrank) keeps the same quota
    assert fixed_quota(tmp_path, 0, cache_size=lambda: first) == first
    assert fixed_quota(tmp_path, 12345, cache_size=lambda: 0) == 12345  # set explicitly: that one


def test_range_lookup_uses_the_index(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _fill(cache)
    got = list(reader.records(cache, "example", T0 + 10 * S, T0 + 12 * S))
    assert [(t, r["counter"]) for t, r in got] == [(T0 + i * S, i) for i in (10, 11, 12)]
    assert list(reader.records(cache, "example", 0, T0 - 1)) == []


def test_overview_per_channel_and_the_hours_before_retention() -> None:
    import pytest

    from speeddata.cache.catalogue import CachedFile, overview

    h = 3600 * 10**9
    now = 100 * h
    files = [CachedFile("motor", Path("m1"), 3_600_000, now - 2 * h, now - h - 1),  # old
             CachedFile("motor", Path("m2"), 360_000, now - h // 10, now),  # 360 kB in 6 min
             CachedFile("env", Path("e1"), 1_000, now - 50 * h, now - 49 * h)]
    view = overview(files, 10_000_000, now)
    motor = view["channels"]["motor"]
    assert (motor["bytes"], motor["files"], motor["first_ns"], motor["last_ns"]) == (
        3_960_000, 2, now - 2 * h, now)
    assert motor["growth_bytes_per_s"] == pytest.approx(1000.0)  # the last hour's files
    assert view["channels"]["env"]["growth_bytes_per_s"] == 0.0  # nothing lately
    assert view["bytes"] == 3_961_000
    assert view["hours_before_retention"] == pytest.approx((10_000_000 - 3_961_000) / 1000
                                                           / 3600)
    assert overview(files, 0, now)["hours_before_retention"] is None  # no quota known


def test_the_disk_filling_before_the_quota_is_the_limit_said() -> None:
    import pytest

    from speeddata.cache.catalogue import CachedFile, overview
    from speeddata.captures import outlook

    h = 3600 * 10**9
    now = 100 * h
    files = [CachedFile("motor", Path("m"), 3_600_000, now - h, now)]  # 1000 B/s
    roomy = overview(files, 10_000_000, now, free_disk=100_000_000)
    assert (roomy["limit"], roomy["hours_left"]) == ("retention", pytest.approx(
        (10_000_000 - 3_600_000) / 1000 / 3600))
    assert roomy["hours_before_disk_full"] == pytest.approx(100_000_000 / 1000 / 3600)
    full = overview(files, 10_000_000, now, free_disk=360_000)  # 6 min of room on the disk
    assert (full["limit"], full["hours_left"]) == ("disk full", pytest.approx(0.1))
    assert outlook(full).startswith("the disk is full in about 0.1 h")
    assert outlook(roomy) == "retention starts deleting the oldest in about 1.8 h"
    idle = overview([CachedFile("motor", Path("m"), 10, now - 9 * h, now - 8 * h)],
                    10_000_000, now, 5)
    assert idle["hours_left"] is None and outlook(idle) == "retention is not in sight"


def test_an_exported_tag_is_warned_of_before_retention_reaches_it() -> None:
    import pytest

    from speeddata.cache.catalogue import CachedFile, hours_until_retention_reaches, overview
    from speeddata.captures import tag_state

    h = 3600 * 10**9
    now = 100 * h
    # three hours of 1000 B/s in hour files; 1 MB of room left in the quota
    files = [CachedFile("motor", Path(f"m{i}"), 3_600_000, now - (3 - i) * h,
                        now - (2 - i) * h) for i in range(3)]
    view = overview(files, 3 * 3_600_000 + 1_000_000, now, free_disk=10**12)
    assert view["growth_bytes_per_s"] == pytest.approx(1000.0)
    # a tag in the middle hour: the oldest hour file (3.6 MB) goes first, after the room
    reach = hours_until_retention_reaches(files, view, now - 2 * h + 1)
    assert reach == pytest.approx((1_000_000 + 3_600_000) / 1000 / 3600)
    tag = {"exported": "2026-11-23T10:00:00Z", "retention_reaches_hours": reach}
    assert tag_state(tag) == ("exported 2026-11-23T10:00:00Z; retention reaches its cached "
                              "data in about 1.3 h")
    assert tag_state({**tag, "retention_reaches_hours": 100.0}) == (
        "exported 2026-11-23T10:00:00Z")
    assert tag_state({"exported": None}) == "not exported (kept by retention)"
