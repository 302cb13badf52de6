"""Tags: named receive-time ranges, kept in SQLite (WAL) in the cache directory.

A tag not yet exported protects its range from retention. An open tag (started, not
stopped) protects everything from its start onwards.

Tags are shared by every relay of a deployment: a store made with ``announce`` says each
change (add, stop, delete) as a tag message on the control multicast group, and each
relay applies what it hears to its own store (``TagStore.apply``, idempotent), with the
host it came from and when it was made and received.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from speeddata.errors import ConflictError, NotFoundError, SpeeddataError

log = logging.getLogger("speeddata.tags")

DB_NAME = "tags.sqlite"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # whole names only (fullmatch)
MAX_NOTE = 4096  # characters
MAX_CHANNELS = 1000
LATEST_NS = 2**63 - 1  # the last moment an int64 of ns holds (2262-04-11)
_RELATIVE = re.compile(r"^([+-])\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?$")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "": 10**9, "m": 60 * 10**9, "min": 60 * 10**9,
            "h": 3600 * 10**9, "d": 86400 * 10**9}


class TagError(SpeeddataError):
    """A tag with a bad name, note or range."""


class TagNotFound(TagError, NotFoundError):
    """No tag has that name."""


class TagExists(TagError, ConflictError):
    """A tag of that name exists already."""


def check_time(ns: int, what: str) -> int:
    """``ns`` if it is a moment the cache can hold (1970 to 2262), else TagError."""
    if not 0 <= ns <= LATEST_NS:
        raise TagError(f"{what} is outside 1970-01-01 to 2262-04-11, the times the cache holds")
    return ns


def parse_time(text: str, now_ns: int) -> int:
    """ns since the epoch from ``now``, ``-5m``, ``+30s`` or ISO 8601 (UTC unless zoned)."""
    text = text.strip()
    if text == "now":
        return now_ns
    match = _RELATIVE.fullmatch(text)
    if match:
        sign, number, unit = match.groups()
        delta = float(number) * _UNIT_NS[unit or ""]
        if delta > LATEST_NS:
            raise TagError(f"time {text!r} is outside 1970-01-01 to 2262-04-11")
        moment = now_ns - int(delta) if sign == "-" else now_ns + int(delta)
        return check_time(moment, f"time {text!r}")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TagError(
            f"cannot read time {text!r}: write 'now', a relative time like '-5m' or '-30s', "
            "or ISO 8601 like 2026-11-22T17:30:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        seconds = int(moment.timestamp())
    except (OverflowError, OSError, ValueError):
        raise TagError(f"time {text!r} is outside 1970-01-01 to 2262-04-11") from None
    return check_time(seconds * 10**9 + moment.microsecond * 1000, f"time {text!r}")


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
    origin: str = ""  # the host the tag was made on, when another host's relay got it
    received_ns: int | None = None  # when this store heard of it from the control group

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "start_ns": self.start_ns, "end_ns": self.end_ns,
            "start": format_time(self.start_ns), "end": format_time(self.end_ns),
            "note": self.note, "channels": list(self.channels),
            "created": format_time(self.created_ns),
            "exported": format_time(self.exported_ns) if self.exported_ns else None,
            "origin": self.origin or None,
            "received": format_time(self.received_ns) if self.received_ns else None,
        }


def check_name(name: str) -> str:
    """``name`` if it is a usable tag name (it becomes a file name), else TagError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TagError(
            f"bad tag name {name[:140]!r}: use up to 128 letters, digits, '_', '-' and '.', "
            "starting with a letter or digit")
    return name


COLUMNS = ("name, start_ns, end_ns, note, channels, created_ns, exported_ns, origin, "
           "received_ns")


class TagStore:
    """The tags of one cache directory; ``announce`` (if given) is told each change made
    here, as a tag message, to share it with the other relays."""

    def __init__(self, cache_dir: Path,
                 announce: Callable[[dict[str, Any]], None] | None = None) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / DB_NAME
        self.announce = announce
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS tags (name TEXT PRIMARY KEY, start_ns INTEGER NOT "
                "NULL, end_ns INTEGER, note TEXT NOT NULL DEFAULT '', channels TEXT NOT NULL "
                "DEFAULT '[]', created_ns INTEGER NOT NULL, exported_ns INTEGER)"
            )
            have = {row[1] for row in db.execute("PRAGMA table_info(tags)")}
            for column, kind in (("origin", "TEXT NOT NULL DEFAULT ''"),
                                 ("received_ns", "INTEGER")):
                if column not in have:  # a store from before tags were shared
                    db.execute(f"ALTER TABLE tags ADD COLUMN {column} {kind}")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    @staticmethod
    def _row(row: tuple) -> Tag:
        name, start, end, note, channels, created, exported, origin, received = row
        return Tag(name, start, end, note, tuple(json.loads(channels)), created, exported,
                   origin, received)

    def _share(self, action: str, tag: Tag | str) -> None:
        if self.announce is None:
            return
        message: dict[str, Any] = {"action": action, "origin": socket.gethostname(),
                                   "wall_ns": time.time_ns()}
        if isinstance(tag, Tag):
            message.update(name=tag.name, start_ns=tag.start_ns, end_ns=tag.end_ns,
                           note=tag.note, channels=list(tag.channels),
                           created_ns=tag.created_ns)
        else:
            message["name"] = tag
        try:
            self.announce(message)
        except OSError as exc:  # the tag stands here; the other relays miss it (logged)
            log.error("tag %s could not be shared on the control group: %s", message["name"],
                      exc)

    def find(self, name: str) -> Tag | None:
        with closing(self._connect()) as db:
            row = db.execute(f"SELECT {COLUMNS} FROM tags WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._row(row)

    def get(self, name: str) -> Tag:
        tag = self.find(name)
        if tag is None:
            known = ", ".join(t.name for t in self.list()) or "none yet"
            raise TagNotFound(f"no tag named {name!r} (tags: {known}); see 'speeddata tags'")
        return tag

    def list(self) -> list[Tag]:
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT {COLUMNS} FROM tags ORDER BY start_ns").fetchall()
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
        check_name(name)
        check_time(start_ns, f"tag {name!r}: start")
        if end_ns is not None:
            check_time(end_ns, f"tag {name!r}: end")
        if len(note) > MAX_NOTE:
            raise TagError(f"tag {name!r}: the note has {len(note)} characters, at most "
                           f"{MAX_NOTE} are kept (put longer texts in a file beside the export)")
        if len(channels) > MAX_CHANNELS or any(len(c) > 128 for c in channels):
            raise TagError(f"tag {name!r}: at most {MAX_CHANNELS} channel names of up to 128 "
                           "characters")
        if end_ns is not None and end_ns < start_ns:
            raise TagError(
                f"tag {name!r}: end {format_time(end_ns)} is before start {format_time(start_ns)}"
            )
        now_ns = time.time_ns() if now_ns is None else now_ns
        try:
            with closing(self._connect()) as db, db:
                db.execute(
                    "INSERT INTO tags (name, start_ns, end_ns, note, channels, created_ns) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (name, start_ns, end_ns, note, json.dumps(list(channels)), now_ns),
                )
        except sqlite3.IntegrityError:
            raise TagExists(
                f"tag {name!r} exists already; choose another name or 'speeddata untag {name}'"
            ) from None
        tag = self.get(name)
        self._share("add", tag)
        return tag

    def stop(self, name: str, end_ns: int) -> Tag:
        check_time(end_ns, f"tag {name!r}: stop time")
        tag = self.get(name)
        if tag.end_ns is not None:
            raise TagError(f"tag {name!r} is not open (it ended at {format_time(tag.end_ns)})")
        if end_ns < tag.start_ns:
            raise TagError(f"tag {name!r}: stop time is before its start")
        with closing(self._connect()) as db, db:
            db.execute("UPDATE tags SET end_ns = ? WHERE name = ?", (end_ns, name))
        tag = self.get(name)
        self._share("stop", tag)
        return tag

    def delete(self, name: str) -> None:
        self.get(name)
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM tags WHERE name = ?", (name,))
        self._share("delete", name)

    def apply(self, message: dict[str, Any], received_ns: int) -> str:
        """Take a tag message another host (or this one) announced; idempotent, never
        re-announced. Returns what it did, for the log: added, stopped, deleted, known,
        or why it was left alone."""
        try:
            name = check_name(message["name"])
            action = message["action"]
            existing = self.find(name)
            if action == "delete":
                if existing is None:
                    return "known"
                with closing(self._connect()) as db, db:
                    db.execute("DELETE FROM tags WHERE name = ?", (name,))
                return "deleted"
            start, end = int(message["start_ns"]), message["end_ns"]
            check_time(start, f"tag {name!r}: start")
            if end is not None:
                check_time(int(end), f"tag {name!r}: end")
            if existing is not None:
                if existing.start_ns != start:
                    return (f"left alone: tag {name!r} from {message.get('origin')} starts "
                            f"at {format_time(start)}, the one here at "
                            f"{format_time(existing.start_ns)}")
                if existing.end_ns is None and end is not None:
                    with closing(self._connect()) as db, db:
                        db.execute("UPDATE tags SET end_ns = ? WHERE name = ?", (end, name))
                    return "stopped"
                return "known"
            channels = [str(c)[:128] for c in message.get("channels", [])][:MAX_CHANNELS]
            with closing(self._connect()) as db, db:
                db.execute(
                    "INSERT INTO tags (name, start_ns, end_ns, note, channels, created_ns, "
                    "origin, received_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, start, end, str(message.get("note", ""))[:MAX_NOTE],
                     json.dumps(channels), int(message.get("created_ns", received_ns)),
                     str(message.get("origin", ""))[:255], received_ns))
            return "added"
        except (KeyError, TypeError, ValueError, TagError) as exc:
            return f"left alone: a bad tag message ({exc})"

    def mark_exported(self, name: str, now_ns: int) -> None:
        with closing(self._connect()) as db, db:
            db.execute("UPDATE tags SET exported_ns = ? WHERE name = ?", (now_ns, name))

    def protected_ranges(self) -> list[tuple[int, int]]:
        """Ranges retention must keep: every tag not exported (open ones to the end of time).
        Only the two times are read: this runs in the relay's loop."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT start_ns, end_ns FROM tags WHERE exported_ns IS NULL"
                              ).fetchall()
        return [(start, LATEST_NS if end is None else end) for start, end in rows]


def protected_ranges(cache_dir: Path) -> list[tuple[int, int]]:
    """Retention's hook: the protected ranges of a cache directory (none without tags)."""
    if not (cache_dir / DB_NAME).exists():
        return []
    return TagStore(cache_dir).protected_ranges()


TAG_MARKER = b"SDTAG"  # not C3 01: a tag message never passes for data
TAG_REPEATS = 3  # each message is sent this many times: multicast may lose one


def tag_message(message: dict[str, Any]) -> bytes:
    return TAG_MARKER + json.dumps(message).encode()


def read_tag_message(datagram: bytes) -> dict[str, Any] | None:
    if not datagram.startswith(TAG_MARKER):
        return None
    try:
        message = json.loads(datagram[len(TAG_MARKER):])
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def announcer(multicast_config: Any) -> Callable[[dict[str, Any]], None] | None:
    """What a TagStore of this host announces through: the control group (None: off)."""
    group = getattr(multicast_config, "control", None)
    if group is None:
        return None

    def announce(message: dict[str, Any]) -> None:
        from speeddata import multicast

        with closing(multicast.sender(multicast_config.interface, multicast_config.ttl)) as out:
            out.setblocking(True)
            for _ in range(TAG_REPEATS):
                out.sendto(tag_message(message), (group.host, group.port))

    return announce
