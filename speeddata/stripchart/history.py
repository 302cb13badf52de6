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


@dataclass
class Folded:
    """A batch's samples folded into buckets of one width: one row per bucket, in time
    order. What a ring merges in; a coarser level is folded from a finer one's, not from
    the samples again (min of mins, max of maxes, the last of lasts: exact)."""

    width_ns: int
    buckets: np.ndarray  # int64 (rows): absolute bucket numbers, increasing
    env: np.ndarray  # (rows, 3, signals): min, max, last
    last_ns: np.ndarray  # int64 (rows): time of the last sample in each bucket


def _runs(numbers: np.ndarray) -> np.ndarray | None:
    """Where each run of equal (sorted) numbers starts; None for a single run."""
    ends = (numbers[1:] != numbers[:-1]).nonzero()[0]
    if not len(ends):
        return None
    starts = np.empty(len(ends) + 1, dtype=np.intp)  # intp: reduceat takes no int64 on armhf
    starts[0] = 0
    np.add(ends, 1, out=starts[1:])
    return starts


def fold(times_ns: np.ndarray, values: np.ndarray, width_ns: int) -> Folded:
    """Samples (``times_ns`` increasing, ``values`` one row each) into buckets of
    ``width_ns``: a few numpy calls whatever the batch's size."""
    buckets = times_ns // width_ns
    starts = _runs(buckets)
    if starts is None:  # the usual case at display rate: one bucket
        env = np.empty((1, 3, values.shape[1]))
        np.fmin.reduce(values, axis=0, out=env[0, 0])
        np.fmax.reduce(values, axis=0, out=env[0, 1])
        env[0, 2] = values[-1]
        return Folded(width_ns, buckets[-1:], env, times_ns[-1:].copy())  # merge changes it
    return _reduce(width_ns, buckets, starts, values, values, values, times_ns)


def coarsen(fine: Folded, width_ns: int) -> Folded:
    """``fine`` into buckets of ``width_ns`` (a multiple of its width: a coarse bucket is
    whole fine buckets)."""
    buckets = fine.buckets // (width_ns // fine.width_ns)
    starts = _runs(buckets)
    if starts is None:
        env = np.empty((1, 3, fine.env.shape[2]))
        np.fmin.reduce(fine.env[:, 0], axis=0, out=env[0, 0])
        np.fmax.reduce(fine.env[:, 1], axis=0, out=env[0, 1])
        env[0, 2] = fine.env[-1, 2]
        return Folded(width_ns, buckets[-1:], env, fine.last_ns[-1:].copy())
    return _reduce(width_ns, buckets, starts, fine.env[:, 0], fine.env[:, 1],
                   fine.env[:, 2], fine.last_ns)


def _reduce(width_ns: int, buckets: np.ndarray, starts: np.ndarray, low: np.ndarray,
            high: np.ndarray, last: np.ndarray, last_ns: np.ndarray) -> Folded:
    ends = np.empty_like(starts)
    np.subtract(starts[1:], 1, out=ends[:-1])
    ends[-1] = len(buckets) - 1
    env = np.empty((len(starts), 3, low.shape[1]))
    np.fmin.reduceat(low, starts, axis=0, out=env[:, 0])
    np.fmax.reduceat(high, starts, axis=0, out=env[:, 1])
    env[:, 2] = last[ends]
    return Folded(width_ns, buckets[ends], env, last_ns[ends])


def in_order(times_ns: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The samples sorted by time (stable: of equal times the later stays last)."""
    if len(times_ns) > 1 and (times_ns[1:] < times_ns[:-1]).any():
        order = np.argsort(times_ns, kind="stable")
        return times_ns[order], values[order]
    return times_ns, values


class EnvelopeRing:
    """The signals of one channel at one resolution."""

    def __init__(self, level: Level, signals: int = 1) -> None:
        self.level = level
        n = level.capacity
        self.index = np.full(n, -1, dtype=np.int64)  # absolute bucket number, -1 = empty
        self.env = np.zeros((n, 3, signals))  # min, max, last: one write per batch
        self.low, self.high, self.last = self.env[:, 0], self.env[:, 1], self.env[:, 2]
        self.last_ns = np.zeros(n, dtype=np.int64)
        self.seq = np.zeros(n, dtype=np.int64)
        self.newest = -1
        self.max_seq = 0
        # (seq, oldest bucket it touched) of recent updates: a client's next frame then
        # scans only the buckets updated since its last one, not the whole ring
        self.updates: deque[tuple[int, int]] = deque(maxlen=256)

    def memory_bytes(self) -> int:
        return sum(a.nbytes for a in (self.index, self.env, self.last_ns, self.seq))

    def add(self, times_ns: np.ndarray, values: np.ndarray, seq: int) -> None:
        """Fold samples in (``values``: one row per sample); older than the span: ignored."""
        if len(times_ns) == 0:
            return
        times_ns, values = in_order(times_ns, values.reshape(len(times_ns), -1))
        self.merge(fold(times_ns, values, self.level.width_ns), seq)

    def merge(self, folded: Folded, seq: int) -> None:
        """Merge a batch folded at this ring's width (``folded`` is used up: its arrays
        may be changed); buckets older than the span are ignored, and a bucket the ring
        holds is combined with the batch's."""
        buckets, env, last_ns = folded.buckets, folded.env, folded.last_ns
        capacity = self.level.capacity
        before = self.newest
        newest = max(before, int(buckets[-1]))
        if buckets[0] <= newest - capacity:  # sorted: what is too old is a prefix
            cut = int(np.searchsorted(buckets, newest - capacity, side="right"))
            if cut == len(buckets):
                return
            buckets, env, last_ns = buckets[cut:], env[cut:], last_ns[cut:]
        pos = buckets % capacity
        first = int(buckets[0])
        if first == before and (len(buckets) == 1 or buckets[1] > before):
            # the usual case: a batch goes on in the bucket the last one ended in
            at = int(pos[0])
            if self.index[at] == first:
                row, old = env[0], self.env[at]
                np.fmin(row[0], old[0], out=row[0])
                np.fmax(row[1], old[1], out=row[1])
                if self.last_ns[at] > last_ns[0]:  # a late sample does not replace "last"
                    row[2] = old[2]
                    last_ns[0] = self.last_ns[at]
        elif first <= before:  # late samples: any of the first buckets may be held
            held = int(np.searchsorted(buckets, before, side="right"))
            p = pos[:held]
            same = self.index[p] == buckets[:held]
            if same.any():
                p = p[same]
                mine = env[:held][same]
                old = self.env[p]
                np.fmin(mine[:, 0], old[:, 0], out=mine[:, 0])
                np.fmax(mine[:, 1], old[:, 1], out=mine[:, 1])
                times = last_ns[:held][same]
                older = self.last_ns[p] > times
                mine[older, 2] = old[older, 2]
                times[older] = self.last_ns[p][older]
                env[:held][same] = mine
                last_ns[:held][same] = times
        self.index[pos] = buckets
        self.env[pos] = env
        self.last_ns[pos] = last_ns
        self.seq[pos] = seq
        self.newest = newest
        self.max_seq = max(self.max_seq, seq)
        self.updates.append((seq, int(buckets[0])))

    def select(self, mask: np.ndarray) -> Buckets:
        return self._buckets(self.ordered(mask))

    def ordered(self, mask: np.ndarray) -> np.ndarray:
        """The positions where ``mask`` is true, oldest bucket first."""
        pos = np.flatnonzero(mask)
        return pos[np.argsort(self.index[pos], kind="stable")]

    def _buckets(self, pos: np.ndarray) -> Buckets:
        return Buckets(
            (self.index[pos] * (self.level.width_ns / MS)).astype(np.float64),
            self.low[pos], self.high[pos], self.last[pos],
            (self.last_ns[pos] / MS).astype(np.float64),
        )

    def block(self, pos: np.ndarray, columns: list[int] | None = None) -> np.ndarray:
        """The buckets at ``pos`` as a frame wants them: for each signal (``columns``;
        None: all, in order) its five arrays (``frames.FIELDS``), one (signals, 5, n)
        array made with a few copies, not a dozen arrays per signal."""
        env = self.env[pos].transpose(2, 1, 0)  # (signals, 3, n)
        if columns is not None:
            env = env[columns]
        out = np.empty((len(env), 5, len(pos)))
        np.multiply(self.index[pos], self.level.width_ns / MS, out=out[:, 0])
        out[:, 1:4] = env
        np.divide(self.last_ns[pos], MS, out=out[:, 4])
        return out

    def changed_positions(self, seq: int) -> np.ndarray:
        """Where the buckets updated after update ``seq`` are, oldest first."""
        if self.max_seq <= seq:
            return np.empty(0, dtype=np.int64)
        oldest = None
        for update_seq, bucket in reversed(self.updates):
            if update_seq <= seq:
                break
            oldest = bucket if oldest is None else min(oldest, bucket)
        else:  # the log does not reach back to ``seq``: scan everything
            return self.ordered((self.seq > seq) & (self.index >= 0))
        first = max(oldest, self.newest - self.level.capacity + 1)
        wanted = np.arange(first, self.newest + 1)
        pos = wanted % self.level.capacity
        return pos[(self.index[pos] == wanted) & (self.seq[pos] > seq)]

    def changed_since(self, seq: int) -> Buckets:
        """Buckets updated after update ``seq``, oldest first."""
        return self._buckets(self.changed_positions(seq))

    def positions_since(self, start_ns: int) -> np.ndarray:
        """Where the buckets from ``start_ns`` on are, oldest first."""
        return self.ordered(self.index >= start_ns // self.level.width_ns)

    def since_time(self, start_ns: int) -> Buckets:
        return self._buckets(self.positions_since(start_ns))


class ChannelHistory:
    """The numeric signals of a channel, at every level."""

    def __init__(self, levels: list[Level], signals: list[str]) -> None:
        self.signals = signals
        self.rings = [EnvelopeRing(level, len(signals)) for level in levels]

    def add(self, times_ns: np.ndarray, values: np.ndarray, seq: int) -> None:
        """Fold samples in at every level: the samples are folded once, at the finest
        width, and each coarser level that is a multiple of the one before from that."""
        if len(times_ns) == 0:
            return
        times_ns, values = in_order(times_ns, values.reshape(len(times_ns), -1))
        folded: list[Folded] = []
        for ring in self.rings:
            width, before = ring.level.width_ns, folded[-1] if folded else None
            folded.append(coarsen(before, width) if before is not None and (
                width >= before.width_ns and width % before.width_ns == 0)
                else fold(times_ns, values, width))
        for ring, batch in zip(self.rings, folded, strict=True):  # after: merge uses it up
            ring.merge(batch, seq)

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
