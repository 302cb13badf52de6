"""Joining channels of different rates onto one: the rule, written down once.

The first input of a block is its primary: each of its samples makes one row. Every
other input is joined onto those rows by **hold-last**: the row at time ``t`` takes the
other channel's last value at or before ``t`` (by the samples' own ``time``), and NaN
(None for text) while that channel has had no sample at or before ``t``. Numbers are
given as float64 (so NaN can stand for "none yet"; an int above 2**53 loses its last
bits), text as objects.

No clock, no sockets: ``Held`` keeps a bounded run of each other channel's recent
samples, and what is added and asked is all it knows."""

from __future__ import annotations

import numpy as np

Columns = dict[str, np.ndarray]
HELD_SAMPLES = 65_536  # samples of one joined channel kept at most; the oldest go first


def as_joinable(column: np.ndarray) -> np.ndarray:
    """A decoded column as a join gives it: numbers (and booleans) as float64, the rest
    as objects."""
    if column.dtype.kind in "fiub":
        return column.astype(np.float64, copy=False)
    return column.astype(object, copy=False)


def _missing(like: np.ndarray, count: int) -> np.ndarray:
    if like.dtype == object:
        return np.full(count, None, dtype=object)
    return np.full(count, np.nan, dtype=np.float64)


def join_last(times: np.ndarray, other_times: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each of ``times``, ``other``'s value at the last of ``other_times`` at or
    before it (NaN or None where there is none). ``other_times`` need not be sorted: equal
    times keep their order, the later one wins."""
    other = as_joinable(other)
    if len(other_times) and np.any(np.diff(other_times) < 0):
        order = np.argsort(other_times, kind="stable")
        other_times, other = other_times[order], other[order]
    at = np.searchsorted(other_times, times, side="right") - 1
    out = _missing(other, len(times))
    found = at >= 0
    out[found] = other[at[found]]
    return out


def concat(parts: list[Columns]) -> Columns:
    """Column dicts one after the other; a column missing from a part (its schema had
    another set of fields) is NaN or None there."""
    if len(parts) == 1:
        return parts[0]
    names = list(dict.fromkeys(name for part in parts for name in part))
    counts = [len(next(iter(part.values()))) if part else 0 for part in parts]
    out: Columns = {}
    for name in names:
        like = next(part[name] for part in parts if name in part)
        pieces = [part[name] if name in part else _missing(as_joinable(like), n)
                  for part, n in zip(parts, counts, strict=True)]
        kinds = {p.dtype.kind for p in pieces}
        if len(kinds) > 1:  # a field that changed type, or filled with NaN: as a join has it
            pieces = [as_joinable(p) for p in pieces]
        out[name] = np.concatenate(pieces)
    return out


class Held:
    """The recent samples of one joined channel: added as they are decoded, joined onto
    the primary's times, trimmed to what a later row can still need. At most ``capacity``
    samples are kept; beyond, the oldest are dropped and counted (``dropped``)."""

    def __init__(self, capacity: int = HELD_SAMPLES) -> None:
        self.capacity = capacity
        self.times = np.zeros(0, dtype=np.int64)
        self.columns: Columns = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.times)

    def add(self, times: np.ndarray, columns: Columns) -> None:
        """Samples at ``times`` with their ``columns`` (the time column left out)."""
        new = {name: as_joinable(column) for name, column in columns.items()}
        for name, column in self.columns.items():
            new.setdefault(name, _missing(column, len(times)))
        for name, column in new.items():
            old = self.columns.get(name)
            if old is None:
                old = _missing(column, len(self.times))
            elif old.dtype != column.dtype:
                old, column = old.astype(object), column.astype(object)
            self.columns[name] = np.concatenate([old, column])
        self.times = np.concatenate([self.times, times.astype(np.int64, copy=False)])
        if np.any(np.diff(self.times) < 0):  # kept in time order: join and trim need it
            order = np.argsort(self.times, kind="stable")
            self.times = self.times[order]
            self.columns = {n: c[order] for n, c in self.columns.items()}
        if len(self.times) > self.capacity:
            self._keep_from(len(self.times) - self.capacity, counted=True)

    def join(self, times: np.ndarray) -> Columns:
        """Each held column's value at each of ``times``, by hold-last."""
        return {name: join_last(times, self.times, column)
                for name, column in self.columns.items()}

    def trim(self, done: int) -> None:
        """The rows up to time ``done`` are made: keep the last sample at or before it (a
        later row may still take it) and all after it."""
        start = int(np.searchsorted(self.times, done, side="right")) - 1
        if start > 0:
            self._keep_from(start, counted=False)

    def _keep_from(self, start: int, counted: bool) -> None:
        if counted:
            self.dropped += start
        self.times = self.times[start:]
        self.columns = {n: c[start:] for n, c in self.columns.items()}
