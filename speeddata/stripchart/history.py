"""Recent history per channel: min/max/last envelopes in numpy ring buffers (no I/O).

Samples fall into fixed-width time buckets aligned on the epoch. Each bucket keeps the
minimum, maximum and last value of every signal of the channel, so a one-sample spike
survives however far the page zooms out, and memory is fixed whatever the data rate.
The signals of a channel share their time axis, so one ring holds them all as 2-D
arrays: folding a batch in costs a few numpy calls per channel, not per signal.

Two resolutions are kept: fine buckets over a short span for the short windows,
coarse ones over the whole history. Every bucket update takes a sequence number, so a
client is sent exactly the buckets that changed since its last frame, however many
frames it missed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

MS = 1_000_000  # ns


@dataclass(frozen=True)
class Level:
    width_ns: int
    capacity: int  # buckets

    @property
    def span_seconds(self) -> float:
        return self.width_ns * self.capacity / 1e9


def default_levels(history_seconds: float = 600.0, detail_seconds: float = 60.0) -> list[Level]:
    """10 ms buckets over the last minute, 250 ms buckets over ten minutes (defaults)."""
    fine = Level(10 * MS, int(detail_seconds * 100))
    coarse = Level(250 * MS, int(history_seconds * 4))
    return [fine, coarse]


@dataclass
class Buckets:
    """Buckets sorted by time: one row per bucket, one column per signal."""

    start_ms: np.ndarray  # float64 (rows), bucket start in ms since the epoch
    low: np.ndarray  # (rows, signals)
    high: np.ndarray
    last: np.ndarray
    last_ms: np.ndarray  # float64 (rows), time of the last sample in each bucket

    def __len__(self) -> int:
        return len(self.start_ms)

    def signal(self, column: int) -> Buckets:
        """The buckets of one signal (1-D arrays)."""
        return Buckets(self.start_ms, self.low[:, column], self.high[:, column],
                       self.last[:, column], self.last_ms)


class EnvelopeRing:
    """The signals of one channel at one resolution."""

    def __init__(self, level: Level, signals: int = 1) -> None:
        self.level = level
        n = level.capacity
        self.index = np.full(n, -1, dtype=np.int64)  # absolute bucket number, -1 = empty
        self.low = np.zeros((n, signals))
        self.high = np.zeros((n, signals))
        self.last = np.zeros((n, signals))
        self.last_ns = np.zeros(n, dtype=np.int64)
        self.seq = np.zeros(n, dtype=np.int64)
        self.newest = -1
        self.max_seq = 0
        # (seq, oldest bucket it touched) of recent updates: a client's next frame then
        # scans only the buckets updated since its last one, not the whole ring
        self.updates: deque[tuple[int, int]] = deque(maxlen=256)

    def memory_bytes(self) -> int:
        return sum(a.nbytes for a in (self.index, self.low, self.high, self.last, self.last_ns,
                                      self.seq))

    def add(self, times_ns: np.ndarray, values: np.ndarray, seq: int) -> None:
        """Fold samples in (``values``: one row per sample); older than the span: ignored."""
        if len(times_ns) == 0:
            return
        values = values.reshape(len(times_ns), -1)
        buckets = times_ns // self.level.width_ns
        if len(buckets) > 1 and np.any(buckets[1:] < buckets[:-1]):
            order = np.argsort(times_ns, kind="stable")
            times_ns, values, buckets = times_ns[order], values[order], buckets[order]
        newest = max(self.newest, int(buckets[-1]))
        keep = buckets > newest - self.level.capacity
        if not keep.all():
            times_ns, values, buckets = times_ns[keep], values[keep], buckets[keep]
            if len(buckets) == 0:
                return
        if len(buckets) == 1 or buckets[0] == buckets[-1]:  # the usual case: one bucket
            unique = buckets[:1]
            low = np.fmin.reduce(values, axis=0, keepdims=True)
            high = np.fmax.reduce(values, axis=0, keepdims=True)
            last, last_ns = values[-1:], times_ns[-1:]
        else:
            # sorted: each bucket's run starts where the number changes (np.unique sorts
            # again, a third of this function's time)
            starts = np.flatnonzero(buckets[1:] != buckets[:-1]) + 1
            starts = np.concatenate((np.zeros(1, dtype=starts.dtype), starts))
            unique = buckets[starts]
            ends = np.append(starts[1:], len(buckets)) - 1
            low = np.fmin.reduceat(values, starts, axis=0)
            high = np.fmax.reduceat(values, starts, axis=0)
            last, last_ns = values[ends], times_ns[ends]
        pos = unique % self.level.capacity
        same = self.index[pos] == unique
        if same.any():
            p = pos[same]
            low[same] = np.fmin(low[same], self.low[p])
            high[same] = np.fmax(high[same], self.high[p])
            older = self.last_ns[p] > last_ns[same]  # a late sample does not replace "last"
            last[same] = np.where(older[:, None], self.last[p], last[same])
            last_ns = last_ns.copy()
            last_ns[same] = np.where(older, self.last_ns[p], last_ns[same])
        self.index[pos] = unique
        self.low[pos] = low
        self.high[pos] = high
        self.last[pos] = last
        self.last_ns[pos] = last_ns
        self.seq[pos] = seq
        self.newest = newest
        self.max_seq = max(self.max_seq, seq)
        self.updates.append((seq, int(unique[0])))

    def select(self, mask: np.ndarray) -> Buckets:
        pos = np.flatnonzero(mask)
        return self._buckets(pos[np.argsort(self.index[pos], kind="stable")])

    def _buckets(self, pos: np.ndarray) -> Buckets:
        return Buckets(
            (self.index[pos] * (self.level.width_ns / MS)).astype(np.float64),
            self.low[pos], self.high[pos], self.last[pos],
            (self.last_ns[pos] / MS).astype(np.float64),
        )

    def changed_since(self, seq: int) -> Buckets:
        """Buckets updated after update ``seq``, oldest first."""
        if self.max_seq <= seq:
            return self._buckets(np.empty(0, dtype=np.int64))
        oldest = None
        for update_seq, bucket in reversed(self.updates):
            if update_seq <= seq:
                break
            oldest = bucket if oldest is None else min(oldest, bucket)
        else:  # the log does not reach back to ``seq``: scan everything
            return self.select((self.seq > seq) & (self.index >= 0))
        first = max(oldest, self.newest - self.level.capacity + 1)
        wanted = np.arange(first, self.newest + 1)
        pos = wanted % self.level.capacity
        return self._buckets(pos[(self.index[pos] == wanted) & (self.seq[pos] > seq)])

    def since_time(self, start_ns: int) -> Buckets:
        return self.select(self.index >= start_ns // self.level.width_ns)


class ChannelHistory:
    """The numeric signals of a channel, at every level."""

    def __init__(self, levels: list[Level], signals: list[str]) -> None:
        self.signals = signals
        self.rings = [EnvelopeRing(level, len(signals)) for level in levels]

    def add(self, times_ns: np.ndarray, values: np.ndarray, seq: int) -> None:
        for ring in self.rings:
            ring.add(times_ns, values, seq)

    def memory_bytes(self) -> int:
        return sum(r.memory_bytes() for r in self.rings)


class TextHistory:
    """A text or enum signal: its last values, each with its time (a bounded deque)."""

    def __init__(self, capacity: int = 200) -> None:
        self.values: deque[tuple[int, str, int]] = deque(maxlen=capacity)  # (ns, text, seq)

    def add(self, times_ns: np.ndarray, values: np.ndarray, seq: int) -> None:
        for t, v in zip(times_ns.tolist(), values.tolist(), strict=True):
            self.values.append((t, str(v), seq))

    def changed_since(self, seq: int) -> list[tuple[float, str]]:
        return [(t / MS, v) for t, v, s in self.values if s > seq]
