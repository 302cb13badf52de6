"""Scroll-back: a paused chart's past beyond the server's memory, read from the cache.

``CacheView.columns(channel, signal, start, end, count)`` answers "min, max and last per
pixel column over [start, end)" from the summaries beside the cache files
(``speeddata.cache.summary``): a day of a 1 kHz channel is a few hundred thousand
summary rows, never 86 million records. Summaries of closed files are made once and
kept on disk (``catch_up`` makes them ahead, newest first, in the server's background
thread); the file the relay still appends to is summarized in memory, extended by what
was appended since.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speeddata.cache import index, summary
from speeddata.cache.catalogue import CachedFile, Catalogue, maybe_open
from speeddata.cache.check import Damage, Skipped
from speeddata.cache.layout import index_path, summary_path
from speeddata.cache.reader import channel_of
from speeddata.derived import past
from speeddata.errors import NotFoundError, SpeeddataError
from speeddata.schemas import Channel, Registry

log = logging.getLogger("speeddata.stripchart")

MAX_COLUMNS = 10_000


@dataclass
class Columns:
    """What a chart draws for one signal: per non-empty column, its left edge and the
    min, max, last and count of the samples in it."""

    level: str  # "samples", "100 ms" or "10 s": what the columns were made from
    start_ns: np.ndarray
    min: np.ndarray
    max: np.ndarray
    last: np.ndarray
    count: np.ndarray
    skipped: list[dict] = field(default_factory=list)  # damaged cache ranges left out

    def as_json(self, shift_ns: int = 0) -> dict:
        return {"level": self.level, "skipped": self.skipped,
                "start_ms": ((self.start_ns + shift_ns) / 1e6).tolist(),
                "min": _finite(self.min), "max": _finite(self.max), "last": _finite(self.last),
                "count": self.count.tolist()}


def _finite(values: np.ndarray) -> list:
    """JSON has no NaN: a column whose samples were all NaN says null."""
    return [None if v != v else v for v in values.tolist()]


class CacheView:
    def __init__(self, cache_dir: Path, registry: Registry) -> None:
        self.catalogue = Catalogue(cache_dir)
        self.registry = registry
        self._growing: dict[Path, summary.Summary] = {}
        self._spans: dict[Path, tuple[int, int] | None] = {}  # closed files' source spans
        self._channels: dict[Path, Channel] = {}  # as each file's header has it
        self._lock = threading.Lock()  # the background catch-up and queries share files
        self.made = 0  # summaries written
        self.skipped = Skipped()  # damage met in the cache, each file's counted once
        self._counted: dict[Path, int] = {}  # damage entries of a file already counted
        self._unreadable: dict[Path, Damage] = {}  # files whose header cannot be read
        self.forgotten = 0  # files retention deleted, and all that was kept about them
        self._figures = {"files_known": 0, "summaries_made": 0, "files_forgotten": 0}

    def statistics(self) -> dict[str, int]:
        """What scroll-back keeps; read without waiting for a summary under way in the
        background thread (the figures of the last moment it was free, then)."""
        if self._lock.acquire(blocking=False):
            try:
                self._figures = {"files_known": len(self._known()),
                                 "summaries_made": self.made,
                                 "files_forgotten": self.forgotten}
            finally:
                self._lock.release()
        return dict(self._figures)

    def _known(self) -> set[Path]:
        return (self._growing.keys() | self._spans.keys() | self._channels.keys()
                | self._counted.keys() | self._unreadable.keys())

    def _forget_gone(self, listed: list[CachedFile]) -> None:
        """Forget the files a listing no longer shows (retention deleted them): what is
        kept per file stays as large as the cache, never as all it ever held."""
        present = {f.path for f in listed}
        gone = [path for path in self._known() if path not in present]
        for path in gone:
            for kept in (self._growing, self._spans, self._channels, self._counted,
                         self._unreadable):
                kept.pop(path, None)
        self.forgotten += len(gone)

    def columns(self, channel: str, signal: str, start: int, end: int, count: int,
                drawn: Registry | None = None) -> Columns:
        """The signal's columns over ``[start, end)`` (source time, ns); ``drawn``: the
        hub's channels, whose derived ones are computed from their cached inputs."""
        if not (0 < count <= MAX_COLUMNS) or end <= start:
            raise SpeeddataError(
                f"columns must be 1 to {MAX_COLUMNS}, over a range whose end is after its start")
        known = self.registry.get(channel)
        if known is not None and signal not in {s.name for s in known.signals
                                                 if s.kind == "number"}:
            raise NotFoundError(f"{channel}.{signal} is not a numeric signal")
        if drawn is not None and past.is_derived(drawn, channel):
            return self._derived(drawn, channel, signal, start, end, count)
        width = summary.level_for(start, end, count)
        parts = []
        skipped: list[dict] = []
        with self._lock:
            files = self.catalogue.files([channel])
            if known is None and not files:  # neither registered nor ever cached
                raise NotFoundError(f"no channel {channel[:128]!r}: /api/channels lists them")
            growing = maybe_open(files)
            for cached in files:
                span = self._spans.get(cached.path, ())
                if span is None or (span and (span[1] < start or span[0] >= end)):
                    bad = self._unreadable.get(cached.path)
                    if span is None and bad is not None and cached.overlaps(start, end):
                        skipped.append(bad.as_dict(self.catalogue.directory))
                    continue  # known not to meet the range: not even opened
                rows = self._rows(cached, cached.path in growing, signal, start, end, width,
                                  skipped)
                if rows is not None:
                    parts.append(rows)
        merged = summary.concat(parts, 1)
        out = summary.columns(merged, start, end, count)
        level = "samples" if width is None else f"{width / 1e9:g} s" if width >= 10**9 else (
            f"{width // 10**6} ms")
        return Columns(level, out.start, out.min[:, 0], out.max[:, 0], out.last[:, 0],
                       out.count, skipped)

    def _derived(self, drawn: Registry, channel: str, signal: str, start: int, end: int,
                 count: int) -> Columns:
        """A derived signal's columns: its samples computed from the cached inputs
        (speeddata/derived/past.py), folded as a file's samples are."""
        if signal not in {s.name for s in drawn[channel].signals}:
            raise NotFoundError(f"{channel}.{signal} is not a numeric signal")
        times, values, damaged = past.samples(self.catalogue.directory, drawn, channel,
                                              signal, start, end)
        out = summary.columns(summary.Rows.of_samples(times, values[:, None]), start, end,
                              count)
        return Columns("samples", out.start, out.min[:, 0], out.max[:, 0], out.last[:, 0],
                       out.count, damaged.as_list(self.catalogue.directory))

    def _rows(self, cached: CachedFile, growing: bool, signal: str, start: int, end: int,
              width: int | None, skipped: list[dict]) -> summary.Rows | None:
        found = self._summary(cached, growing, () if width is None else (width,))
        if found is None:
            bad = self._unreadable.get(cached.path)
            if bad is not None and cached.overlaps(start, end):
                skipped.append(bad.as_dict(self.catalogue.directory))
            return None
        made, channel = found
        span = made.span()
        if made.damage and (cached.overlaps(start, end) or (
                span is not None and span[0] < end and span[1] >= start)):
            # a damaged block's own times are unknown: said for a range meeting its file
            name = str(cached.path.relative_to(self.catalogue.directory))
            skipped += [{"file": name, **d} for d in made.damage]
        if signal not in made.signals:
            return None
        column = made.signals.index(signal)
        if width is None:
            entries = index.unpack(index_path(cached.path).read_bytes())
            rows = summary.samples(cached, channel, entries, made, start, end)
        else:
            rows = made.levels[width]
        return summary.Rows(rows.start, rows.count, rows.min[:, column : column + 1],
                            rows.max[:, column : column + 1], rows.last[:, column : column + 1])

    def _summary(self, cached: CachedFile, growing: bool, widths: tuple[int, ...]
                 ) -> tuple[summary.Summary, Channel] | None:
        """A file's summary with the levels in ``widths`` (made if missing or behind).
        The index is only unpacked to make one: its size says how many blocks it has."""
        idx = index_path(cached.path)
        try:
            blocks = idx.stat().st_size // index.ENTRY_SIZE
        except FileNotFoundError:  # deleted by retention meanwhile
            return None
        try:
            channel = self._channels.get(cached.path) or channel_of(cached.path, self.registry)
            self._channels[cached.path] = channel
        except FileNotFoundError:  # retention deletes the data, then the index: not damage
            return None
        except (OSError, ValueError) as exc:
            log.warning("scroll-back: %s cannot be read (%s); skipped", cached.path, exc)
            self._spans[cached.path] = None
            if cached.path not in self._unreadable:
                try:
                    size = cached.path.stat().st_size
                    lost = sum(e.count for e in index.unpack(idx.read_bytes()))
                except OSError:
                    size, lost = cached.size, None
                bad = Damage(cached.path, 0, size, "header", lost)
                self._unreadable[cached.path] = bad
                self.skipped.add(bad)
            return None
        if growing:
            before = self._growing.get(cached.path)
            if before is None or before.entries < blocks:
                before = self._growing[cached.path] = summary.summarize(
                    cached, channel, index.unpack(idx.read_bytes()), before)
            self._count(cached.path, before)
            return before, channel
        self._growing.pop(cached.path, None)
        path = summary_path(cached.path)
        try:
            made = summary.Summary.load(path, widths)
            if made.entries == blocks:
                self._spans[cached.path] = made.span()
                self._count(cached.path, made)
                return made, channel
        except (OSError, ValueError, KeyError):
            pass  # missing, or from an older layout: made again
        try:
            made = summary.summarize(cached, channel, index.unpack(idx.read_bytes()))
        except FileNotFoundError:
            return None
        if not cached.path.exists():  # deleted while read: no damage, no summary left behind
            return None
        try:
            made.save(path)
            self.made += 1
        except OSError as exc:  # a full disk: still answered, made again next time
            log.warning("scroll-back: cannot keep the summary of %s (%s)", cached.path, exc)
        self._spans[cached.path] = made.span()
        self._count(cached.path, made)
        return made, channel

    def _count(self, path: Path, made: summary.Summary) -> None:
        """The damage a summary lists, counted in ``skipped`` once per file."""
        done = self._counted.get(path, 0)
        for d in made.damage[done:]:
            self.skipped.add(Damage(path, d["start"], d["end"], d["reason"], d["records"]))
        self._counted[path] = len(made.damage)

    def catch_up(self, budget_s: float = 1.0) -> int:
        """Summarize closed files that have none yet, newest first, and extend the
        summaries of growing ones, for about ``budget_s``; how many were written. Called
        from the server's background thread. Files deleted since the last round are
        forgotten first."""
        deadline = time.monotonic() + budget_s
        made = 0
        with self._lock:  # listed under the lock: a file a query met since is listed
            files = self.catalogue.files()
            self._forget_gone(files)
        growing = maybe_open(files)
        for cached in reversed(files):
            if time.monotonic() > deadline:
                break
            if cached.path in self._spans:
                continue
            with self._lock:  # the growing ones are extended, so a query finds them ready
                before = self.made
                self._summary(cached, cached.path in growing, ())
                made += self.made - before
        return made
