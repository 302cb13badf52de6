"""``speeddata replay``: send a cached range again, as the datagrams that were received,
with their original spacing scaled by a speed (or as fast as possible).

To the multicast groups (the stripchart and every consumer see it; nothing is cached
again, since the relay does not read the groups) or to a relay's port (to feed a second
relay, or this one if asked). Reading is by the time index; the order is the records'
own time across channels; the bytes sent are the cached bodies behind their schema's
header, so a consumer cannot tell a replayed datagram from the original.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fastavro
import numpy as np

from speeddata import wire
from speeddata.cache.catalogue import Catalogue, plan
from speeddata.cache.check import BlockReader, Skipped
from speeddata.columns import ColumnDecoder
from speeddata.readout import NoData
from speeddata.relay.pacing import Decimator
from speeddata.schemas import Registry

WINDOW_NS = 5 * 10**9  # read this much receive time at a time: memory stays bounded
NOTICE_SECONDS = 0.25  # the replay notices again this often: a page opened meanwhile hears
Address = tuple[str, int]


def batches(cache_dir: Path, start_ns: int, end_ns: int, channels: list[str] | None,
            registry: Registry | None = None, skipped: Skipped | None = None,
            ) -> Iterator[tuple[np.ndarray, list[bytes]]]:
    """Every cached datagram received in the range, as (source times, datagrams) batches
    of a few seconds of receive time each (gaps skipped), in time order across channels.
    Damaged cache blocks are left out and noted in ``skipped``."""
    with BlockReader(skipped, registry) as reader:
        yield from _batches(reader, cache_dir, start_ns, end_ns, channels)


def _batches(reader: BlockReader, cache_dir: Path, start_ns: int, end_ns: int,
             channels: list[str] | None) -> Iterator[tuple[np.ndarray, list[bytes]]]:
    selected = plan(Catalogue(cache_dir), start_ns, end_ns, channels)
    if not selected.blocks:
        raise NoData("nothing cached in that range: check it with 'speeddata tags' or "
                     "'speeddata status'")
    versions: dict[Path, tuple | None] = {}
    lists = list(selected.blocks.values())  # each in receive-time order
    cursors = [0] * len(lists)
    while True:
        heads = [blocks[i][1].recv_ns for blocks, i in zip(lists, cursors, strict=True)
                 if i < len(blocks)]
        if not heads:
            return
        until = min(heads) + WINDOW_NS
        times: list[int] = []
        out: list[bytes] = []
        for n, blocks in enumerate(lists):
            i = cursors[n]
            while cursors[n] < len(blocks) and blocks[cursors[n]][1].recv_ns < until:
                cursors[n] += 1
            by_file: dict[Path, list] = {}  # one decode per file
            for cached, entry, data in reader.bodies(blocks[i : cursors[n]]):
                by_file.setdefault(cached.path, []).append((entry, data))
            for path, parts in by_file.items():
                if path not in versions:
                    channel = reader.channel(path)
                    versions[path] = None if channel is None else (
                        ColumnDecoder(channel), wire.header(channel.fingerprint))
                if versions[path] is None:
                    reader.skip_file(path, [e for e, _ in parts])
                    continue
                decoder, header = versions[path]
                found, _ = reader.apply(lambda data, count, d=decoder: split_block(d, data, count),
                                        path, parts)
                for block_times, bodies in found:
                    times += block_times
                    out += [header + body for body in bodies]
        if not out:  # every block of this window damaged
            continue
        order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
        yield np.asarray(times, dtype=np.int64)[order], [out[i] for i in order.tolist()]


def split_block(decoder: ColumnDecoder, data: bytes, count: int) -> tuple[list[int], list]:
    """A block's record times and its records' bodies, cut where each record ends: by
    size when every record has the same (the vectorised decode proved it), else by
    reading them one by one."""
    before = decoder.fallbacks
    times = np.asarray(decoder.decode_block(data, count)[decoder.channel.time_field]).tolist()
    if count and decoder.fallbacks == before and len(data) % count == 0:
        size = len(data) // count
        return times, [data[i * size : (i + 1) * size] for i in range(count)]
    stream = io.BytesIO(data)
    bodies, start = [], 0
    for _ in range(count):
        fastavro.schemaless_reader(stream, decoder.channel.parsed, None)
        bodies.append(data[start : stream.tell()])
        start = stream.tell()
    if start != len(data):
        raise ValueError(f"{count} records end at byte {start} of {len(data)}")
    return times, bodies


@dataclass
class Pacing:
    """What a replay did: how many it sent and how late each was against its due time."""

    sent: int = 0
    seconds: float = 0.0
    lateness_s: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.lateness_s, q)) if self.lateness_s else 0.0


def pace(items: Iterator[tuple[np.ndarray, list[bytes]]], speed: float | None,
         send: Callable[[bytes], None], clock: Callable[[], float],
         sleep: Callable[[float], None], stopping: Callable[[], bool] = lambda: False,
         started: Callable[[int], None] = lambda first: None) -> Pacing:
    """Send each datagram when its time comes: the first at once, the others at their
    distance from it divided by ``speed`` (None: as fast as possible). Whatever is due
    goes out in one burst, so the clock is read per burst, not per datagram.
    ``started(first source time)`` is called just before the first is sent."""
    out = Pacing()
    begun = clock()
    first: int | None = None
    for times, datagrams in items:
        if first is None:
            first = int(times[0])
            begun = clock()
            started(first)
        due = None if speed is None else begun + (times - first) / 1e9 / speed
        i = 0
        while i < len(datagrams):
            if stopping():
                out.seconds = clock() - begun
                return out
            if due is None:
                j = len(datagrams)
            else:
                now = clock()
                j = int(np.searchsorted(due, now, side="right"))
                if j <= i:
                    sleep(float(due[i]) - now)
                    continue
                out.lateness_s += np.maximum(0.0, now - due[i:j]).tolist()
            for datagram in datagrams[i:j]:
                send(datagram)
            out.sent += j - i
            i = j
    out.seconds = clock() - begun
    return out


class GroupSink:
    """Where a replay to the multicast groups sends (``pace``'s ``send``): every datagram
    to the full group, the decimated group's share as the relay's decimator grants it
    (per channel, ``rate_hz``), and, before them and again every NOTICE_SECONDS, the
    replay notices on both groups, so the page draws the replay as one. No sockets:
    ``send(data, address)`` is given, and the clocks: ``clock`` (monotonic seconds) paces
    the notices, ``clock_ns`` (wall ns) is the time the decimator and the notices take."""

    def __init__(self, send: Callable[[bytes, Address], object], full: Address | None,
                 decimated: Address | None, rate_hz: float, fingerprints: list[bytes],
                 speed: float | None, clock: Callable[[], float],
                 clock_ns: Callable[[], int]) -> None:
        self._send = send
        self.full, self.decimated = full, decimated
        self.groups = [group for group in (full, decimated) if group]
        self.decimator = Decimator(rate_hz)
        self.fingerprints, self.speed = fingerprints, speed
        self.clock, self.clock_ns = clock, clock_ns
        self._notices: list[bytes] = []
        self._next = 0.0
        self._counts = {"full": 0, "decimated": 0, "notices": 0}

    def started(self, first_ns: int) -> None:
        """A pass of the replay begins at source time ``first_ns``: its notices go out
        with the next datagram (``pace``'s ``started``)."""
        self._notices = wire.replay_notices(self.fingerprints, first_ns, self.clock_ns(),
                                            self.speed)
        self._next = 0.0

    def __call__(self, datagram: bytes) -> None:
        now = self.clock()
        if now >= self._next:
            for group in self.groups:
                for data in self._notices:
                    self._send(data, group)
                    self._counts["notices"] += 1
            self._next = now + NOTICE_SECONDS
        if self.full:
            self._send(datagram, self.full)
            self._counts["full"] += 1
        if self.decimated and self.decimator.grant(datagram[2:10].hex(), self.clock_ns(), 1):
            self._send(datagram, self.decimated)
            self._counts["decimated"] += 1

    def statistics(self) -> dict[str, int]:
        """Datagrams sent to each group, and notices (on both groups together)."""
        return dict(self._counts)
