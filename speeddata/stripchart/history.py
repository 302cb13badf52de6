"""Recent history per signal: min/max/last envelopes in numpy ring buffers (no I/O).

Samples fall into fixed-width time buckets aligned on the epoch. Each bucket keeps the
minimum, maximum and last value, so a one-sample spike survives however far the page
zooms out, and memory is fixed whatever the data rate. Two resolutions are kept:
fine buckets over a short span for the short windows, coarse ones over the whole
history. Every bucket update takes a sequence number, so a client is sent exactly the
buckets that changed since its last frame, however many frames it missed.
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
    """Buckets as arrays sorted by time: the payload of a frame."""

    start_ms: np.ndarray  # float64, bucket start in ms since the epoch
    low: np.ndarray
    high: np.ndarray
    last: np.ndarray
    last_ms: np.ndarray  # float64, time of the last sample in each bucket

    def __len__(self) -> int:
        return len(self.start_ms)


class EnvelopeRing:
    """One signal at one resolution."""

    BYTES_PER_BUCKET = 6 * 8

    def __init__(self, level: Level) -> None:
        self.level = level
        n = level.capacity
        self.index = np.full(n, -1, dtype=np.int64)  # absolute bucket number, -1 = empty
        self.low = np.zeros(n)
        self.high = np.zeros(n)
        self.last = np.zeros(n)
        self.last_ns = np.zeros(n, dtype=np.int64)
        self.seq = np.zeros(n, dtype=np.int64)
        self.newest = -1

    def add(self, times_ns: np.ndarray, values: np.ndarray, seq: int) -> None:
        """Fold samples in; samples older than the ring's span are ignored."""
        if len(times_ns) == 0:
            return
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
        unique, starts = np.unique(buckets, return_index=True)
        ends = np.append(starts[1:], len(buckets)) - 1
        low = np.fmin.reduceat(values, starts)
        high = np.fmax.reduceat(values, starts)
        last = values[ends]
        last_ns = times_ns[ends]
        pos = unique % self.level.capacity
        same = self.index[pos] == unique
        if same.any():
            p = pos[same]
            low[same] = np.fmin(low[same], self.low[p])
            high[same] = np.fmax(high[same], self.high[p])
            older = self.last_ns[p] > last_ns[same]  # a late sample does not replace "last"
            last[same] = np.where(older, self.last[p], last[same])
            last_ns[same] = np.where(older, self.last_ns[p], last_ns[same])
        self.index[pos] = unique
        self.low[pos] = low
        self.high[pos] = high
        self.last[pos] = last
        self.last_ns[pos] = last_ns
        self.seq[pos] = seq
        self.newest = newest

    def select(self, mask: np.ndarray) -> Buckets:
        pos = np.flatnonzero(mask)
        pos = pos[np.argsort(self.index[pos], kind="stable")]
        return Buckets(
            (self.index[pos] * self.level.width_ns / MS).astype(np.float64),
            self.low[pos], self.high[pos], self.last[pos],
            (self.last_ns[pos] / MS).astype(np.float64),
        )

    def changed_since(self, seq: int) -> Buckets:
        return self.select((self.seq > seq) & (self.index >= 0))

    def since_time(self, start_ns: int) -> Buckets:
        return self.select(self.index >= start_ns // self.level.width_ns)


class SignalHistory:
    """A numeric signal's envelopes at every level."""

    def __init__(self, levels: list[Level]) -> None:
        self.rings = [EnvelopeRing(level) for level in levels]
        self.latest_ns = 0
        self.latest = float("nan")

    def add(self, times_ns: np.ndarray, values: np.ndarray, seq: int) -> None:
        values = np.asarray(values, dtype=np.float64)
        for ring in self.rings:
            ring.add(times_ns, values, seq)
        i = int(np.argmax(times_ns))
        if int(times_ns[i]) >= self.latest_ns:
            self.latest_ns, self.latest = int(times_ns[i]), float(values[i])

    def memory_bytes(self) -> int:
        return sum(r.level.capacity * EnvelopeRing.BYTES_PER_BUCKET for r in self.rings)


class TextHistory:
    """A text or enum signal: its last values, each with its time (a bounded deque)."""

    def __init__(self, capacity: int = 200) -> None:
        self.values: deque[tuple[int, str, int]] = deque(maxlen=capacity)  # (ns, text, seq)

    def add(self, times_ns: np.ndarray, values: np.ndarray, seq: int) -> None:
        for t, v in zip(times_ns.tolist(), values.tolist(), strict=True):
            self.values.append((t, str(v), seq))

    def changed_since(self, seq: int) -> list[tuple[float, str]]:
        return [(t / MS, v) for t, v, s in self.values if s > seq]

    @property
    def latest_ns(self) -> int:
        return self.values[-1][0] if self.values else 0
