"""Tags: named receive-time ranges, kept in SQLite (WAL) in the cache directory.

A tag not yet exported protects its range from retention. An open tag (started, not
stopped) protects everything from its start onwards.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from speeddata.errors import SpeeddataError

DB_NAME = "tags.sqlite"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_RELATIVE = re.compile(r"^([+-])\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?$")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "": 10**9, "m": 60 * 10**9, "min": 60 * 10**9,
            "h": 3600 * 10**9, "d": 86400 * 10**9}


class TagError(SpeeddataError):
    """A tag that does not exist, already exists, or has a bad name or range."""


def parse_time(text: str, now_ns: int) -> int:
    """ns since the epoch from ``now``, ``-5m``, ``+30s`` or ISO 8601 (UTC unless zoned)."""
    text = text.strip()
    if text == "now":
        return now_ns
    match = _RELATIVE.match(text)
    if match:
        sign, number, unit = match.groups()
        delta = int(float(number) * _UNIT_NS[unit or ""])
        return now_ns - delta if sign == "-" else now_ns + delta
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TagError(
            f"cannot read time {text!r}: write 'now', a relative time like '-5m' or '-30s', "
            "or ISO 8601 like 2026-11-22T17:30:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


def format_time(ns: int | None) -> str:
    if ns is None:
        return "open"
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass(frozen=True)
class Tag:
    name: str
    start_ns: int
    end_ns: int | None  # None while the tag is open
    note: str
    channels: tuple[str, ...]  # empty: all channels
    created_ns: int
    exported_ns: int | None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "start_ns": self.start_ns, "end_ns": self.end_ns,
            "start": format_time(self.start_ns), "end": format_time(self.end_ns),
            "note": self.note, "channels": list(self.channels),
            "created": format_time(self.created_ns),
            "exported": format_time(self.exported_ns) if self.exported_ns else None,
        }


class TagStore:
    """The tags of one cache directory."""

    def __init__(self, cache_dir: Path) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / DB_NAME
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS tags (name TEXT PRIMARY KEY, start_ns INTEGER NOT "
                "NULL, end_ns INTEGER, note TEXT NOT NULL DEFAULT '', channels TEXT NOT NULL "
                "DEFAULT '[]', created_ns INTEGER NOT NULL, exported_ns INTEGER)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    @staticmethod
    def _row(row: tuple) -> Tag:
        name, start, end, note, channels, created, exported = row
        return Tag(name, start, end, note, tuple(json.loads(channels)), created, exported)

    def get(self, name: str) -> Tag:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM tags WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = ", ".join(t.name for t in self.list()) or "none yet"
            raise TagError(f"no tag named {name!r} (tags: {known}); see 'speeddata tags'")
        return self._row(row)

    def list(self) -> list[Tag]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM tags ORDER BY start_ns").fetchall()
        return [self._row(r) for r in rows]

    def add(
        self,
        name: str,
        start_ns: int,
        end_ns: int | None,
        note: str = "",
        channels: tuple[str, ...] = (),
        now_ns: int | None = None,
    ) -> Tag:
        """Create a tag; an ``end_ns`` of None leaves it open until ``stop``."""
        if not _NAME.match(name):
            raise TagError(
                f"bad tag name {name!r}: use letters, digits, '_', '-' and '.', "
                "starting with a letter or digit"
            )
        if end_ns is not None and end_ns < start_ns:
            raise TagError(
                f"tag {name!r}: end {format_time(end_ns)} is before start {format_time(start_ns)}"
            )
        now_ns = time.time_ns() if now_ns is None else now_ns
        try:
            with closing(self._connect()) as db, db:
                db.execute(
                    "INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (name, start_ns, end_ns, note, json.dumps(list(channels)), now_ns),
                )
        except sqlite3.IntegrityError:
            raise TagError(
                f"tag {name!r} exists already; choose another name or 'speeddata untag {name}'"
            ) from None
        return self.get(name)

    def stop(self, name: str, end_ns: int) -> Tag:
        tag = self.get(name)
        if tag.end_ns is not None:
            raise TagError(f"tag {name!r} is not open (it ended at {format_time(tag.end_ns)})")
        if end_ns < tag.start_ns:
            raise TagError(f"tag {name!r}: stop time is before its start")
        with closing(self._connect()) as db, db:
            db.execute("UPDATE tags SET end_ns = ? WHERE name = ?", (end_ns, name))
        return self.get(name)

    def delete(self, name: str) -> None:
        self.get(name)
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM tags WHERE name = ?", (name,))

    def mark_exported(self, name: str, now_ns: int) -> None:
        with closing(self._connect()) as db, db:
            db.execute("UPDATE tags SET exported_ns = ? WHERE name = ?", (now_ns, name))

    def protected_ranges(self) -> list[tuple[int, int]]:
        """Ranges retention must keep: every tag not exported (open ones to the end of time)."""
        return [
            (t.start_ns, t.end_ns if t.end_ns is not None else 2**63 - 1)
            for t in self.list()
            if t.exported_ns is None
        ]


def protected_ranges(cache_dir: Path) -> list[tuple[int, int]]:
    """Retention's hook: the protected ranges of a cache directory (none without tags)."""
    if not (cache_dir / DB_NAME).exists():
        return []
    return TagStore(cache_dir).protected_ranges()
