"""Moments as integer nanoseconds since the epoch: read from what a user writes, checked
against what the cache can hold, written back. Integer arithmetic throughout, so a
written time reads back to the nanosecond it names and nothing rounds across 1970."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

from speeddata.errors import SpeeddataError

LATEST_NS = 2**63 - 1  # the last moment an int64 of ns holds (2262-04-11)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RELATIVE = re.compile(r"^([+-])\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?$")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "": 10**9, "m": 60 * 10**9, "min": 60 * 10**9,
            "h": 3600 * 10**9, "d": 86400 * 10**9}
_SPAN = "1970-01-01 to 2262-04-11, the times the cache holds"


class TimeError(SpeeddataError):
    """A time or a range that cannot be read, or that the cache cannot hold."""


def check_time(ns: int, what: str) -> int:
    """``ns`` if it is a moment the cache can hold (1970 to 2262), else TimeError."""
    if not 0 <= ns <= LATEST_NS:
        raise TimeError(f"{what} is outside {_SPAN}")
    return ns


def parse_time(text: str, now_ns: int) -> int:
    """ns since the epoch from ``now``, ``-5m``, ``+1.5h`` or ISO 8601 (UTC unless zoned)."""
    text = text.strip()
    if text == "now":
        return now_ns
    match = _RELATIVE.fullmatch(text)
    if match:
        sign, number, unit = match.groups()
        delta = int(Decimal(number) * _UNIT_NS[unit or ""])
        if delta > LATEST_NS:
            raise TimeError(f"time {text!r} is outside {_SPAN}")
        return check_time(now_ns - delta if sign == "-" else now_ns + delta, f"time {text!r}")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeError(
            f"cannot read time {text!r}: write 'now', a relative time like '-5m' or '-30s', "
            "or ISO 8601 like 2026-11-22T17:30:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        since = moment - EPOCH
    except OverflowError:
        raise TimeError(f"time {text!r} is outside {_SPAN}") from None
    ns = (since.days * 86400 + since.seconds) * 10**9 + since.microseconds * 1000
    return check_time(ns, f"time {text!r}")


def format_time(ns: int | None) -> str:
    """ISO 8601 in UTC to the millisecond (cut, never rounded up); None: "open"."""
    if ns is None:
        return "open"
    seconds, rest = divmod(ns, 10**9)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def range_name(start_ns: int, end_ns: int) -> str:
    """The name of an export of a range that no tag names: safe as a file name."""
    return f"{format_time(start_ns)}_{format_time(end_ns)}".replace(":", "")


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?$")


def parse_duration(text: str | float) -> int:
    """ns in a positive duration: ``"10s"``, ``"500ms"``, ``"1.5h"``, or seconds as a number."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        ns = int(Decimal(str(text)) * 10**9)
    else:
        match = _DURATION.fullmatch(str(text).strip())
        if not match:
            raise TimeError(f"cannot read duration {text!r}: write it like '10s', '500ms', "
                            "'5m' or '1h'")
        number, unit = match.groups()
        ns = int(Decimal(number) * _UNIT_NS[unit or ""])
    if not 0 < ns <= LATEST_NS:
        raise TimeError(f"duration {text!r} must be more than 0 and at most 292 years")
    return ns
