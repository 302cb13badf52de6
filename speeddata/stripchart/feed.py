"""A multicast group's datagrams into the hub: read in batches, held as rows, folded in.

The socket is read with ``recvmmsg`` (``relay.netio``) into one buffer of slots; each
batch is copied once, into the rows of a preallocated matrix that the hub reads in
place at the flush (no Python object per datagram, no second copy). A reader that
has emptied the socket rests until a batch's worth is due (``READ_PAUSE`` at most), so
that a loop wake-up takes tens of datagrams, not one or a few: each wake-up costs about
10 µs however little it reads. A frame reads what the
socket holds before it folds in (``take`` then ``flush``), so it still shows every
sample received.
"""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np

from speeddata import loss
from speeddata.relay import netio
from speeddata.stripchart.hub import Hub

BATCH_SECONDS = 0.1  # datagrams are folded in at most this late, in one batch; a page's
# frame folds in what is pending first, so with pages open a batch is a frame's worth
# (larger batches cost the hub far less per sample: its cost is per call, per channel)
READ_BATCH = 64  # datagrams per system call (recvmmsg where it can be had)
READ_ROUNDS = 16  # batches read per wake-up at most: under a flood the loop's other work
# goes on, the rest waits in the kernel (the reader is called again at once)
READ_PAUSE = 0.010  # the longest the reader rests after emptying the socket; shorter when
# datagrams come fast (a READ_BATCH's worth at their rate), so a burst never fills the
# kernel's buffer (60,000 at 100 k/s lost 1,700 to a fixed 10 ms rest). In process at 10 k
# datagrams/s the reader took 18-21 % of a core with no rest (1,300-1,500 wake-ups/s),
# 6-7 % resting 4 ms, 5 % 10 ms. Frames read the socket themselves: no frame waits.
MAX_DATAGRAM = 65507  # the largest a UDP datagram on IPv4 can be
PENDING_BYTES = 4 * 2**20  # the rows held for the hub at most (bytes); when they are full
# the batch is folded in at once: a bound, never a drop
_REPORT = np.frombuffer(loss.FORWARD_REPORT_HEADER, dtype=np.uint8)
_MIN_WIDTH = 64  # the row width the lengths and senders arrays are sized for


def rest_after(came: int, since: float) -> float:
    """How long the reader rests after emptying the socket, ``came`` datagrams having
    come in the ``since`` seconds since its last wake-up: until a ``READ_BATCH`` is due
    at that rate, ``READ_PAUSE`` at most."""
    return min(READ_PAUSE, READ_BATCH * since / came) if came > 0 else READ_PAUSE


class Feed:
    """Reads one group's socket a batch at a time and hands the datagrams to the hub in
    batches (before each page's frame, and every ``BATCH_SECONDS`` at most), per relay
    that sent them, with the time of the flush; a relay's ForwardReport is taken after
    the data that came before it."""

    def __init__(self, hub: Hub, group: str, sock: socket.socket | None = None) -> None:
        self.hub = hub
        self.group = group
        self.loop = asyncio.get_running_loop()
        self._flush_at: asyncio.TimerHandle | None = None
        self._resume_at: asyncio.TimerHandle | None = None
        # the pending datagrams: row i of the matrix, lengths[i] bytes, from senders[i]
        self._store = np.empty(PENDING_BYTES, dtype=np.uint8)
        self._lengths = np.empty(PENDING_BYTES // _MIN_WIDTH, dtype=np.int64)
        self._senders = np.empty(PENDING_BYTES // _MIN_WIDTH, dtype=np.uint64)
        self._rows = self._store[:0].reshape(0, 0)
        self.count = 0  # rows pending
        self.reads = 0  # system calls that returned datagrams
        self.wakeups = 0  # times the loop called the reader
        self.full_flushes = 0  # batches folded in early: the pending rows were full
        self.io = None
        self.reading = False
        self._woke_at = self.loop.time()
        self._came = 0  # datagrams read since the reader's last wake-up
        if sock is not None:
            sock.setblocking(False)
            self.io = netio.open_io("auto", sock, READ_BATCH, MAX_DATAGRAM, sources=True)
            self._resume()

    # -- reading --------------------------------------------------------------------------
    def readable(self) -> None:
        """The socket has datagrams: read them; once it is empty, rest until about
        ``READ_BATCH`` more are due at the rate they came since the last wake-up
        (``READ_PAUSE`` at most), so that a flood never waits long in the kernel."""
        self.wakeups += 1
        more = self.take()
        now = self.loop.time()
        since, self._woke_at = now - self._woke_at, now
        came, self._came = self._came, 0  # read since the last wake-up, frames' reads too
        if more or not self.reading:
            return
        rest = rest_after(came, since)
        self.loop.remove_reader(self.io.sock.fileno())  # type: ignore[union-attr]
        self.reading = False
        self._resume_at = self.loop.call_later(rest, self._resume)

    def _resume(self) -> None:
        self._resume_at = None
        if self.io is not None and not self.reading:
            self.loop.add_reader(self.io.sock.fileno(), self.readable)
            self.reading = True

    def take(self) -> bool:
        """Read what the socket holds now (``READ_ROUNDS`` batches at most); True when
        the last batch was full (more may wait)."""
        if self.io is None:
            return False
        try:
            for _ in range(READ_ROUNDS):
                got = self.io.receive()
                n = len(got.lengths)
                if not n:
                    return False
                self.reads += 1
                self._came += n
                width = int(got.lengths.max())
                rows = got.buffer[: n * got.slot].reshape(n, got.slot)[:, :width]
                self.received(rows, got.lengths, got.senders())
                if n < READ_BATCH:
                    return False
            return True
        except Exception as exc:  # the socket boundary: counted, never fatal
            self.hub.feed_failed(exc, 0, "the group's socket", time.time_ns())
            return False

    def received(self, rows: np.ndarray, lengths: np.ndarray, senders: np.ndarray) -> None:
        """Datagrams ``rows[i, :lengths[i]]`` from ``senders[i]`` (IPv4 << 16 | port),
        copied into the pending rows (the caller's arrays may be reused at once)."""
        at = 0
        while at < len(lengths):
            width = max(rows.shape[1], 1)
            if width > self._rows.shape[1]:
                self._widen(width)
            take = min(len(lengths) - at, len(self._rows) - self.count)
            if not take:
                self.full_flushes += 1
                self.flush()
                continue
            end = self.count + take
            self._rows[self.count : end, :width] = rows[at : at + take]
            self._lengths[self.count : end] = lengths[at : at + take]
            self._senders[self.count : end] = senders[at : at + take]
            self.count, at = end, at + take
        if self._flush_at is None and self.count:
            self._flush_at = self.loop.call_later(BATCH_SECONDS, self.flush)

    def _widen(self, width: int) -> None:
        """Rows of ``width`` bytes from now on (the pending ones moved; fewer fit)."""
        capacity = min(PENDING_BYTES // width, len(self._lengths))
        if self.count > capacity:
            self.full_flushes += 1
            self.flush()
        old = self._rows[: self.count].copy() if self.count else None
        self._rows = self._store[: capacity * width].reshape(capacity, width)
        if old is not None:
            self._rows[: self.count, : old.shape[1]] = old

    def close(self) -> None:
        if self.io is not None and self.reading:
            self.loop.remove_reader(self.io.sock.fileno())
            self.reading = False
        for timer in (self._flush_at, self._resume_at):
            if timer is not None:
                timer.cancel()

    # -- into the hub ---------------------------------------------------------------------
    def flush(self) -> None:
        """Fold the pending datagrams into the hub, now."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        count, self.count = self.count, 0
        if not count:
            return
        rows, lengths = self._rows[:count], self._lengths[:count]
        senders = self._senders[:count]
        now, now_ns = time.monotonic(), time.time_ns()
        width = rows.shape[1]
        reports = np.flatnonzero((lengths >= len(_REPORT)) & (
            rows[:, : len(_REPORT)] == _REPORT).all(axis=1)) if width >= len(
            _REPORT) else np.zeros(0, dtype=np.int64)
        start = 0
        for cut in [*reports.tolist(), count]:  # each report after what came before
            self._data(rows[start:cut], lengths[start:cut], senders[start:cut], now, now_ns)
            if cut < count:
                relay = loss.address_name(int(senders[cut]))
                try:
                    self.hub.forward_report(self.group, relay,
                                            rows[cut, : lengths[cut]].tobytes(), now_ns)
                except Exception as exc:
                    self.hub.feed_failed(exc, 1, relay, now_ns)
            start = cut + 1
        self._rows = self._store[:0].reshape(0, 0)  # the next batch sets the width

    def _data(self, rows: np.ndarray, lengths: np.ndarray, senders: np.ndarray,
              now: float, now_ns: int) -> None:
        if not len(lengths):
            return
        first = senders[0]
        relays = [int(first)] if (senders == first).all() else np.unique(senders).tolist()
        for sender in relays:
            chosen = None if len(relays) == 1 else senders == sender
            relay = loss.address_name(sender)
            try:  # one relay's batch that raises costs that batch, not the others'
                self.hub.ingest_rows(rows if chosen is None else rows[chosen],
                                     lengths if chosen is None else lengths[chosen], now,
                                     now_ns=now_ns, source=(self.group, relay))
            except Exception as exc:
                self.hub.feed_failed(exc, len(lengths) if chosen is None
                                     else int(chosen.sum()), relay, now_ns)

    def statistics(self) -> dict[str, int]:
        """How the socket is read: wake-ups, system calls with data, early flushes."""
        return {"wakeups": self.wakeups, "reads": self.reads,
                "full_flushes": self.full_flushes, "pending": self.count}
