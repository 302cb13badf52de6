"""Tags: named receive-time ranges, kept in SQLite (WAL) in the cache directory.

A tag not yet exported protects its range from retention. An open tag (started, not
stopped) protects everything from its start onwards.

Tags are shared by every relay of a deployment: a store made with ``announce`` says each
change (add, stop, delete) as a ``TagRecord`` that ``speeddata.control`` seals and sends
on the control group, and each relay applies what it hears to its own store
(``TagStore.apply``), with the host it came from and when it was received.

**The convergence rule.** Each change carries ``changed_ns``, the wall-clock time of the
host that made it (never earlier than the name's previous change there): the record's
version. A store keeps, for every name it ever heard of, the record with the highest
version, ``(changed_ns, add before delete, content hash)``, and ignores any record not
newer than that. A delete is kept as a tombstone with its time, so a peer's stale
re-announce of the tag (older) cannot bring it back, while a tag made again under that
name later (newer) replaces the tombstone. Applying is idempotent and order-free, so
stores that have heard the same records hold the same set, whatever the order and the
repeats: the digest exchange (``speeddata.control``) re-announces until they have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from speeddata.errors import ConflictError, ControlError, NotFoundError, SpeeddataError
from speeddata.logs import Throttle
from speeddata.tagrecord import (
    CHANNEL,
    MAX_CHANNELS,
    MAX_NOTE,
    MAX_ORIGIN,
    NAME,
    TagRecord,
    is_time,
)
from speeddata.times import (
    LATEST_NS,
    TimeError,
    check_time,
    format_time,
    parse_time,
    range_name,
)

log = logging.getLogger("speeddata.tags")

DB_NAME = "tags.sqlite"
class TagError(SpeeddataError):
    """A tag with a bad name, note or range."""


class TagNotFound(TagError, NotFoundError):
    """No tag has that name."""


class TagExists(TagError, ConflictError):
    """A tag of that name exists already."""


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
    changed_ns: int | None = None  # its version (None: a store from before versions)

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
    if not isinstance(name, str) or not NAME.fullmatch(name):
        shown = name[:140] if isinstance(name, str) else type(name).__name__
        raise TagError(
            f"bad tag name {shown!r}: use up to 128 letters, digits, '_', '-' and '.', "
            "starting with a letter or digit")
    return name


COLUMNS = ("name, start_ns, end_ns, note, channels, created_ns, exported_ns, origin, "
           "received_ns, changed_ns")
_BAD_ROW_LOG_SECONDS = 60.0


class TagStore:
    """The tags of one cache directory; ``announce`` (if given) is told each change made
    here, as a TagRecord, to share it with the other relays."""

    def __init__(self, cache_dir: Path,
                 announce: Callable[[TagRecord], None] | None = None) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / DB_NAME
        self.announce = announce
        self._bad_log = Throttle(_BAD_ROW_LOG_SECONDS)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS tags (name TEXT PRIMARY KEY, start_ns INTEGER NOT "
                "NULL, end_ns INTEGER, note TEXT NOT NULL DEFAULT '', channels TEXT NOT NULL "
                "DEFAULT '[]', created_ns INTEGER NOT NULL, exported_ns INTEGER)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS removed (name TEXT PRIMARY KEY, "
                       "changed_ns INTEGER NOT NULL, origin TEXT NOT NULL DEFAULT '')")
            have = {row[1] for row in db.execute("PRAGMA table_info(tags)")}
            for column, kind in (("origin", "TEXT NOT NULL DEFAULT ''"),
                                 ("received_ns", "INTEGER"), ("changed_ns", "INTEGER")):
                if column not in have:  # a store from before tags were shared
                    db.execute(f"ALTER TABLE tags ADD COLUMN {column} {kind}")
        self._repair()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def _repair(self) -> None:
        """Rows no valid write makes (a text end_ns stored by an old version from the
        network): repaired so that they protect more, never less, and logged."""
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT rowid, {COLUMNS} FROM tags").fetchall()
            bad = [row for row in rows if self._row(row[1:]) is None]
            if not bad:
                return
            try:
                with db:
                    for rowid, name, start, end, note, channels, created, exported, origin, \
                            received, changed in bad:
                        fixed = (
                            name if isinstance(name, str) and NAME.fullmatch(name)
                            else f"repaired-{rowid}",
                            start if is_time(start) else 0,
                            end if is_time(end) and is_time(start) and end >= start else None,
                            note if isinstance(note, str) else "",
                            channels if _channels(channels) is not None else "[]",
                            created if is_time(created) else 0,
                            exported if is_time(exported) else None,
                            origin if isinstance(origin, str) else "",
                            received if is_time(received) else None,
                            changed if is_time(changed) else None)
                        db.execute("UPDATE tags SET name = ?, start_ns = ?, end_ns = ?, "
                                   "note = ?, channels = ?, created_ns = ?, exported_ns = ?, "
                                   "origin = ?, received_ns = ?, changed_ns = ? WHERE rowid = ?",
                                   (*fixed, rowid))
                        log.warning("tag %r in %s held a value of the wrong type (start %r, "
                                    "end %r): repaired to start %s, end %s (it protects more, "
                                    "never less; 'speeddata tag stop' or 'untag' fixes it)",
                                    name, self.path, start, end, format_time(fixed[1]),
                                    format_time(fixed[2]))
            except sqlite3.Error as exc:  # a reader without write access: rows are skipped
                log.warning("%d bad rows in %s could not be repaired (%s); they are skipped",
                            len(bad), self.path, exc)

    def _row(self, row: tuple) -> Tag | None:
        """The row as a Tag, or None for one with a value of the wrong type (logged)."""
        name, start, end, note, channels, created, exported, origin, received, changed = row
        listed = _channels(channels)
        if (not isinstance(name, str) or not NAME.fullmatch(name) or not is_time(start)
                or not (end is None or (is_time(end) and end >= start))
                or not isinstance(note, str) or listed is None or not is_time(created)
                or not (exported is None or is_time(exported))
                or not isinstance(origin, str) or not (received is None or is_time(received))
                or not (changed is None or is_time(changed))):
            if self._bad_log.ready(time.monotonic()):
                log.warning("skipped tag row %r of %s: a value of the wrong type", name,
                            self.path)
            return None
        return Tag(name, start, end, note, listed, created, exported, origin, received, changed)

    def _share(self, record: TagRecord) -> None:
        if self.announce is None:
            return
        try:
            self.announce(record)
        except OSError as exc:  # the tag stands here; the digest exchange brings it later
            log.error("tag %s could not be shared on the control group: %s", record.name, exc)

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
        return [tag for tag in map(self._row, rows) if tag is not None]

    @staticmethod
    def _record(tag: Tag, action: str) -> TagRecord:
        """A stored tag as the record it is shared as (channel names this version would
        not take are left out: fewer names protect more, all when none is left)."""
        channels = tuple(c for c in tag.channels if CHANNEL.fullmatch(c))[:MAX_CHANNELS]
        return TagRecord(action, tag.name, tag.changed_ns or tag.created_ns,
                         (tag.origin or socket.gethostname())[:MAX_ORIGIN], tag.start_ns,
                         tag.end_ns, tag.note[:MAX_NOTE], channels, tag.created_ns)

    def _current(self, db: sqlite3.Connection, name: str) -> TagRecord | None:
        """The record this store holds for ``name``: its tag, its tombstone, or None."""
        row = db.execute(f"SELECT {COLUMNS} FROM tags WHERE name = ?", (name,)).fetchone()
        tag = None if row is None else self._row(row)
        if tag is not None:
            return self._record(tag, "stop" if tag.end_ns is not None else "add")
        gone = db.execute("SELECT changed_ns, origin FROM removed WHERE name = ?",
                          (name,)).fetchone()
        if gone is not None and is_time(gone[0]) and isinstance(gone[1], str):
            return TagRecord("delete", name, gone[0], gone[1][:MAX_ORIGIN])
        return None

    def records(self) -> list[TagRecord]:
        """Every record this store holds, tombstones included, ordered by name: what it
        re-announces and what its digest is made of."""
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT {COLUMNS} FROM tags").fetchall()
            removed = db.execute("SELECT name, changed_ns, origin FROM removed").fetchall()
        records = {}
        for tag in map(self._row, rows):
            if tag is not None:
                records[tag.name] = self._record(tag, "stop" if tag.end_ns is not None
                                                 else "add")
        for name, changed, origin in removed:
            if name not in records and is_time(changed) and isinstance(origin, str):
                try:
                    records[name] = TagRecord("delete", name, changed, origin[:MAX_ORIGIN])
                except ControlError:  # not a name this version writes: left out
                    continue
        return [records[name] for name in sorted(records)]

    def digest(self) -> tuple[str, int]:
        """A hash of every record's version and how many: equal digests, equal sets."""
        records = self.records()
        total = hashlib.sha256()
        for record in records:
            total.update(record.content().encode() + b"\n")
        return total.hexdigest(), len(records)

    @staticmethod
    def _next_version(current: TagRecord | None, now_ns: int) -> int:
        """A change's version: now, but never before the name's previous change."""
        return now_ns if current is None else max(now_ns, current.changed_ns + 1)

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
        if len(channels) > MAX_CHANNELS or not all(CHANNEL.fullmatch(c) for c in channels):
            raise TagError(f"tag {name!r}: at most {MAX_CHANNELS} channel names of up to 128 "
                           "letters, digits, '_', '-' and '.'")
        if end_ns is not None and end_ns < start_ns:
            raise TagError(
                f"tag {name!r}: end {format_time(end_ns)} is before start {format_time(start_ns)}"
            )
        now_ns = time.time_ns() if now_ns is None else now_ns
        with closing(self._connect()) as db, db:
            current = self._current(db, name)
            if current is not None and not current.deleted:
                raise TagExists(f"tag {name!r} exists already; choose another name or "
                                f"'speeddata untag {name}'")
            changed = self._next_version(current, now_ns)
            try:
                db.execute(
                    "INSERT INTO tags (name, start_ns, end_ns, note, channels, created_ns, "
                    "changed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, start_ns, end_ns, note, json.dumps(list(channels)), now_ns, changed))
            except sqlite3.IntegrityError:  # a row this version cannot read holds the name
                raise TagExists(f"tag {name!r} exists already; choose another name or "
                                f"'speeddata untag {name}'") from None
            db.execute("DELETE FROM removed WHERE name = ?", (name,))
        tag = self.get(name)
        self._share(self._record(tag, "add"))
        return tag

    def stop(self, name: str, end_ns: int) -> Tag:
        check_time(end_ns, f"tag {name!r}: stop time")
        tag = self.get(name)
        if tag.end_ns is not None:
            raise TagError(f"tag {name!r} is not open (it ended at {format_time(tag.end_ns)})")
        if end_ns < tag.start_ns:
            raise TagError(f"tag {name!r}: stop time is before its start")
        with closing(self._connect()) as db, db:
            changed = self._next_version(self._current(db, name), time.time_ns())
            db.execute("UPDATE tags SET end_ns = ?, changed_ns = ? WHERE name = ?",
                       (end_ns, changed, name))
        tag = self.get(name)
        self._share(self._record(tag, "stop"))
        return tag

    def delete(self, name: str) -> None:
        self.get(name)
        with closing(self._connect()) as db, db:
            changed = self._next_version(self._current(db, name), time.time_ns())
            db.execute("DELETE FROM tags WHERE name = ?", (name,))
            db.execute("INSERT OR REPLACE INTO removed (name, changed_ns, origin) "
                       "VALUES (?, ?, '')", (name, changed))
        self._share(TagRecord("delete", name, changed, socket.gethostname()))

    def apply(self, record: TagRecord, received_ns: int) -> str:
        """Take one record heard on the control group (``apply_many`` of one)."""
        return self.apply_many([record], received_ns)[0]

    def apply_many(self, records: list[TagRecord], received_ns: int) -> list[str]:
        """Take records heard on the control group, in one transaction; never
        re-announced. Each says what it did: added, stopped, replaced, deleted, known
        (this version is here) or older (a newer one is here: left alone)."""
        with closing(self._connect()) as db, db:
            return [self._apply(db, record, received_ns) for record in records]

    def _apply(self, db: sqlite3.Connection, record: TagRecord, received_ns: int) -> str:
        current = self._current(db, record.name)
        if current is not None:
            mine, theirs = current.version(), record.version()
            if theirs <= mine:
                return "known" if theirs == mine else "older"
        if record.deleted:
            db.execute("DELETE FROM tags WHERE name = ?", (record.name,))
            db.execute("INSERT OR REPLACE INTO removed (name, changed_ns, origin) VALUES "
                       "(?, ?, ?)", (record.name, record.changed_ns, record.origin))
            return "deleted" if current is not None and not current.deleted else "known"
        exported = None
        if current is not None and not current.deleted and (
                current.start_ns, current.end_ns) == (record.start_ns, record.end_ns):
            row = db.execute("SELECT exported_ns FROM tags WHERE name = ?",
                             (record.name,)).fetchone()
            exported = row[0] if row and is_time(row[0]) else None
        db.execute(
            "INSERT OR REPLACE INTO tags (name, start_ns, end_ns, note, channels, created_ns, "
            "exported_ns, origin, received_ns, changed_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.name, record.start_ns, record.end_ns, record.note,
             json.dumps(list(record.channels)), record.created_ns, exported, record.origin,
             received_ns, record.changed_ns))
        db.execute("DELETE FROM removed WHERE name = ?", (record.name,))
        if current is None or current.deleted:
            return "added"
        if current.end_ns is None and record.end_ns is not None and (
                current.start_ns == record.start_ns):
            return "stopped"
        return "replaced"

    def mark_exported(self, name: str, now_ns: int) -> None:
        with closing(self._connect()) as db, db:
            db.execute("UPDATE tags SET exported_ns = ? WHERE name = ?", (now_ns, name))

    def protected_ranges(self) -> list[tuple[int, int]]:
        """Ranges retention must keep: every tag not exported (open ones to the end of time).
        Only the two times are read: this runs in the relay's loop. A value of the wrong
        type protects more, never less (from 1970, to the end of time)."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT start_ns, end_ns FROM tags WHERE exported_ns IS NULL "
                              "OR typeof(exported_ns) != 'integer'").fetchall()
        ranges = []
        for start, end in rows:
            start = start if is_time(start) else 0
            ranges.append((start, end if is_time(end) and end >= start else LATEST_NS))
        return ranges


def _channels(text: object) -> tuple[str, ...] | None:
    """A stored channel list (JSON), or None if it is not a list of channel names."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        return None
    return tuple(value)


def protected_ranges(cache_dir: Path) -> list[tuple[int, int]]:
    """Retention's hook: the protected ranges of a cache directory (none without tags)."""
    if not (cache_dir / DB_NAME).exists():
        return []
    return TagStore(cache_dir).protected_ranges()


@dataclass(frozen=True)
class Span:
    """A range to read or export: a tag's, or one between two times (then no tag)."""

    start_ns: int
    end_ns: int
    name: str
    tag: Tag | None = None


def resolve_range(cache_dir: Path, tag: str | None, start: str | None, end: str | None,
                  now_ns: int) -> Span:
    """The range a request names, the same way for the CLI, the REST API and replay: a
    tag (open: up to now), or a start and an end (now if left out), never both."""
    if tag:
        if start or end:
            raise TimeError("give a tag, or a start and an end, not both")
        found = TagStore(cache_dir).get(check_name(tag))
        return Span(found.start_ns, now_ns if found.end_ns is None else found.end_ns,
                    found.name, found)
    if not start:
        raise TimeError("say which range: a tag, or a start (and an end, now if left out)")
    start_ns, end_ns = parse_time(start, now_ns), parse_time(end or "now", now_ns)
    if end_ns < start_ns:
        raise TimeError(f"the range ends ({format_time(end_ns)}) before it starts "
                        f"({format_time(start_ns)})")
    return Span(start_ns, end_ns, range_name(start_ns, end_ns))
