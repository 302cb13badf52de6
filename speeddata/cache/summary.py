"""Summaries beside cache files, so a chart scrolls back over hours of cache without
decoding it.

``<file>.sum.npz`` holds, for one cache file: the source-time span of every block (in
index order, so a short range finds its blocks without decoding), and per 100 ms and
per 10 s bucket of source time, the count and the min, max and last value of every
numeric signal. A range is then drawn from the coarsest level whose buckets are no wider
than a pixel column, or from the records themselves when even 100 ms is too wide.

They are made off the relay's receive path (by the stripchart server, in a thread, for
files the relay has closed), written whole or not at all, and deleted with their file.
Everything here is pure numpy over arrays and files: no sockets, no clocks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speeddata.cache import index
from speeddata.cache.catalogue import CachedFile
from speeddata.cache.check import BlockReader
from speeddata.columns import ColumnDecoder
from speeddata.schemas import Channel

LEVELS = (100_000_000, 10_000_000_000)  # bucket widths, ns: 100 ms and 10 s
CHUNK_RECORDS = 200_000  # records decoded at once: bounds the memory of a summary


@dataclass
class Rows:
    """Rows of (start, count, min, max, last), sorted by start; one column per signal."""

    start: np.ndarray  # int64 ns: the bucket's start, or a sample's time
    count: np.ndarray  # int64
    min: np.ndarray  # float64 [rows, signals]
    max: np.ndarray
    last: np.ndarray

    @classmethod
    def of_samples(cls, time: np.ndarray, values: np.ndarray) -> Rows:
        """Each sample as a row of its own."""
        order = np.argsort(time, kind="stable")
        values = values[order]
        return cls(time[order], np.ones(len(time), dtype=np.int64), values, values, values)

    @classmethod
    def empty(cls, signals: int) -> Rows:
        nothing = np.zeros((0, signals))
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), nothing, nothing,
                   nothing)

    def __len__(self) -> int:
        return len(self.start)

    def select(self, keep: np.ndarray) -> Rows:
        return Rows(self.start[keep], self.count[keep], self.min[keep], self.max[keep],
                    self.last[keep])

    def reduce(self, keys: np.ndarray, start_of: Callable[[np.ndarray], np.ndarray]) -> Rows:
        """Rows with equal ``keys`` (non-decreasing) merged into one starting at
        ``start_of(key)``: min of the mins, max of the maxes, the last row's last, counts
        summed. NaN (a sample that was not a number) never wins a min or a max."""
        if not len(self):
            return self
        first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        final = np.r_[first[1:] - 1, len(keys) - 1]
        return Rows(start_of(keys[first]), np.add.reduceat(self.count, first),
                    np.fmin.reduceat(self.min, first, axis=0),
                    np.fmax.reduceat(self.max, first, axis=0), self.last[final])

    def buckets(self, width: int) -> Rows:
        """Merged into buckets of ``width`` ns aligned on the epoch."""
        return self.reduce(self.start // width, lambda keys: keys * width)


def concat(parts: Iterable[Rows], signals: int) -> Rows:
    """Rows of several parts in one, sorted by start (a stable sort keeps each part's
    order, so the later part's row is the last of a tie)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Rows.empty(signals)
    whole = Rows(*(np.concatenate([getattr(p, f) for p in parts]) for f in Rows.__annotations__))
    return whole.select(np.argsort(whole.start, kind="stable"))


def columns(rows: Rows, start: int, end: int, count: int) -> Rows:
    """Rows merged into ``count`` equal columns over ``[start, end)``; columns without
    data are left out. Each column's start is its left edge."""
    inside = rows.select((rows.start >= start) & (rows.start < end))
    if not len(inside):
        return inside
    width = (end - start) / count  # float: no int64 overflow for long windows
    keys = np.minimum(((inside.start - start) / width).astype(np.int64), count - 1)
    return inside.reduce(keys, lambda k: start + (k * width).astype(np.int64))


@dataclass
class Summary:
    """One cache file's summary (see the module's docstring)."""

    signals: list[str]
    entries: int  # index entries it covers: fewer than the file has means it is behind
    block_first: np.ndarray  # int64 ns, per block: its earliest and latest source time
    block_last: np.ndarray  # (a damaged block: an empty span, first > last)
    levels: dict[int, Rows]
    damage: list[dict] = field(default_factory=list)  # ranges skipped: start, end,
    # reason, records (``speeddata.cache.check.Damage`` without the file)

    def span(self) -> tuple[int, int] | None:
        if not len(self.block_first):
            return None
        return int(self.block_first.min()), int(self.block_last.max())

    def save(self, path: Path) -> None:
        """Whole or not at all: a reader never sees half a summary."""
        arrays = {"signals": np.array(self.signals, dtype=str),
                  "entries": np.array(self.entries), "block_first": self.block_first,
                  "block_last": self.block_last, "damage": np.array(json.dumps(self.damage))}
        for width, rows in self.levels.items():
            for name in Rows.__annotations__:
                arrays[f"{width}_{name}"] = getattr(rows, name)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, widths: Iterable[int] = LEVELS) -> Summary:
        """Read back; only the levels in ``widths`` are read from the file."""
        with np.load(path, allow_pickle=False) as data:
            levels = {w: Rows(*(data[f"{w}_{name}"] for name in Rows.__annotations__))
                      for w in widths}
            # a summary older than the damage list was made without meeting any
            damage = json.loads(str(data["damage"])) if "damage" in data.files else []
            return cls(list(data["signals"]), int(data["entries"]), data["block_first"],
                       data["block_last"], levels, damage)


def numeric_signals(channel: Channel) -> list[str]:
    return [s.name for s in channel.signals if s.kind == "number"]


def as_matrix(decoded: dict[str, np.ndarray], signals: list[str], rows: int) -> np.ndarray:
    """The numeric signals as float64 columns of one matrix (a missing one is NaN)."""
    matrix = np.full((rows, len(signals)), np.nan)
    for i, name in enumerate(signals):
        column = decoded.get(name)
        if column is not None and column.dtype != object:
            matrix[:, i] = column
    return matrix


def summarize(cached: CachedFile, channel: Channel, entries: list[index.Entry],
              before: Summary | None = None) -> Summary:
    """The summary of ``entries`` of one cache file, extending ``before`` (which covers
    the first ``before.entries`` of them) so that a growing file is decoded once.
    Damaged blocks are skipped, with an empty span, and listed in ``damage``."""
    signals = numeric_signals(channel)
    done = before.entries if before is not None else 0
    decoder = ColumnDecoder(channel)
    firsts, lasts = [before.block_first] if before else [], [before.block_last] if before else []
    levels = {w: [before.levels[w]] if before else [] for w in LEVELS}
    pending: list[tuple[index.Entry, bytes | None]] = []
    reader = BlockReader()

    def flush() -> None:
        good = [(e, d) for e, d in pending if d is not None]
        decoded, kept = reader.decode(decoder, cached.path, good)
        counts = iter([e.count if ok else 0 for (e, _), ok in zip(good, kept, strict=True)])
        sizes = [next(counts) if d is not None else 0 for _, d in pending]
        count = sum(sizes)
        times = np.asarray(decoded[channel.time_field], dtype=np.int64)
        ends = np.cumsum(sizes, dtype=np.int64)
        starts = ends - sizes
        nonempty = starts < ends
        block_min = np.full(len(pending), np.iinfo(np.int64).max)
        block_max = np.full(len(pending), np.iinfo(np.int64).min)
        if count:
            # reduceat wants indices of the platform's type (int32 on 32-bit ARM, where
            # int64 ones are a TypeError)
            at = starts[nonempty].astype(np.intp)
            block_min[nonempty] = np.minimum.reduceat(times, at)
            block_max[nonempty] = np.maximum.reduceat(times, at)
        firsts.append(block_min)
        lasts.append(block_max)
        samples = Rows.of_samples(times, as_matrix(decoded, signals, count))
        for width in LEVELS:
            levels[width].append(samples.buckets(width))
        pending.clear()

    waiting = 0
    with reader:
        for entry in entries[done:]:
            pending.append((entry, reader.body(cached.path, entry)))
            waiting += entry.count
            if waiting >= CHUNK_RECORDS:
                flush()
                waiting = 0
        if pending:
            flush()
    damage = (before.damage if before else []) + [
        {k: v for k, v in d.as_dict().items() if k != "file"} for d in reader.skipped.damage]
    return Summary(
        signals, len(entries),
        np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64),
        np.concatenate(lasts) if lasts else np.zeros(0, dtype=np.int64),
        {w: concat(parts, len(signals)).buckets(w) for w, parts in levels.items()}, damage)


def level_for(start: int, end: int, count: int) -> int | None:
    """The coarsest bucket width no wider than a column, or None: read the samples."""
    column = (end - start) / count
    fitting = [w for w in LEVELS if w <= column]
    return max(fitting) if fitting else None


def samples(cached: CachedFile, channel: Channel, entries: list[index.Entry],
            summary: Summary, start: int, end: int) -> Rows:
    """The samples of the blocks whose source-time span meets ``[start, end)``."""
    signals = summary.signals
    hit = np.flatnonzero((summary.block_first < end) & (summary.block_last >= start))
    chosen = [entries[i] for i in hit if i < len(entries)]
    if not chosen:
        return Rows.empty(len(signals))
    with BlockReader() as reader:  # what is damaged here is in the summary's damage
        good = [(e, d) for _, e, d in reader.bodies([(cached, e) for e in chosen])]
        decoded, kept = reader.decode(ColumnDecoder(channel), cached.path, good)
    count = sum(e.count for (e, _), ok in zip(good, kept, strict=True) if ok)
    times = np.asarray(decoded[channel.time_field], dtype=np.int64)
    return Rows.of_samples(times, as_matrix(decoded, signals, count))
