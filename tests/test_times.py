"""Times in integer ns: read as written, checked against what the cache holds, and one
resolver of a tag or a range for the CLI, the REST API and replay."""

from __future__ import annotations

from pathlib import Path

import pytest

from speeddata.tags import TagNotFound, TagStore, resolve_range
from speeddata.times import (
    LATEST_NS,
    TimeError,
    check_time,
    format_time,
    parse_duration,
    parse_time,
)

NOW = 1_795_000_000_123_456_789


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW), ("-5m", NOW - 300 * 10**9), ("+30s", NOW + 30 * 10**9),
    ("-1.1s", NOW - 1_100_000_000),  # exactly: a float gives 1_100_000_000.0000002
    ("-0.001ms", NOW - 1_000), ("-2d", NOW - 2 * 86400 * 10**9),
    ("2026-11-22T17:30:00Z", 1_795_368_600 * 10**9),
    ("2026-11-22T17:30:00.000001", 1_795_368_600 * 10**9 + 1_000),
    ("2026-11-22T18:30:00+01:00", 1_795_368_600 * 10**9),
    ("1970-01-01T00:00:00Z", 0),
])
def test_times_read_as_written(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", [
    "1969-12-31T23:59:59.999999Z", "0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z",
    "-999999999d", "+999999999d", "yesterday", "", "-5 weeks",
])
def test_times_the_cache_cannot_hold_or_nobody_can_read_are_refused(text: str) -> None:
    with pytest.raises(TimeError):
        parse_time(text, NOW)


def test_times_are_written_to_the_millisecond_cut_not_rounded() -> None:
    assert format_time(1_795_368_600 * 10**9 + 999_999_999) == "2026-11-22T17:30:00.999Z"
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(None) == "open"
    assert parse_time(format_time(NOW), 0) == NOW - NOW % 10**6
    assert check_time(LATEST_NS, "t") == LATEST_NS
    with pytest.raises(TimeError, match="1970-01-01 to 2262-04-11"):
        check_time(-1, "t")


def test_one_resolver_for_a_tag_or_a_range(tmp_path: Path) -> None:
    span = resolve_range(tmp_path, None, "-5m", None, NOW)
    assert (span.start_ns, span.end_ns, span.tag) == (NOW - 300 * 10**9, NOW, None)
    assert ":" not in span.name and span.name.startswith("2026-")
    TagStore(tmp_path).add("run42", NOW - 10**9, None, "", (), NOW)
    span = resolve_range(tmp_path, "run42", None, None, NOW + 5)
    assert (span.start_ns, span.end_ns, span.name) == (NOW - 10**9, NOW + 5, "run42")
    with pytest.raises(TimeError, match="not both"):
        resolve_range(tmp_path, "run42", "-5m", None, NOW)
    with pytest.raises(TimeError, match="before it starts"):
        resolve_range(tmp_path, None, "-1m", "-2m", NOW)
    with pytest.raises(TimeError, match="say which range"):
        resolve_range(tmp_path, None, None, None, NOW)
    with pytest.raises(TagNotFound):
        resolve_range(tmp_path, "nosuch", None, None, NOW)


def test_durations_read_as_exact_ns() -> None:
    assert parse_duration("10s") == 10 * 10**9 and parse_duration(" 500ms ") == 5 * 10**8
    assert parse_duration("1.5h") == 5400 * 10**9 and parse_duration(2.5) == 25 * 10**8
    assert parse_duration("7") == 7 * 10**9 and parse_duration("1d") == 86400 * 10**9
    for bad in ("-1s", "ten", "1 week", "", "1e3s"):
        with pytest.raises(TimeError, match="cannot read duration"):
            parse_duration(bad)
    for bad in ("0s", 0, "300000d"):
        with pytest.raises(TimeError, match="more than 0"):
            parse_duration(bad)
