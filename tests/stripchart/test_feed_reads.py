"""The feed's socket side: a loop wake-up takes many datagrams, each copied once into
pending rows that are bounded, and every datagram still reaches the hub, in order."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import numpy as np
import pytest

from speeddata.schemas import Registry, load_file
from speeddata.sender import Encoder
from speeddata.stripchart import feed as feed_module
from speeddata.stripchart.feed import READ_BATCH, READ_PAUSE, Feed, rest_after
from speeddata.stripchart.hub import Hub
from tests.helpers import SCHEMAS, TIMEOUT

MOTOR = load_file(SCHEMAS / "motor.avsc")
ENV = load_file(SCHEMAS / "env.avsc")
S = 10**9
MS = 10**6
T0 = 0  # each test's first time: see now()


@pytest.fixture(autouse=True)
def now() -> None:
    """Times from 5 s ago, on a 10 ms bucket's start: times the sources' clocks place as
    sent (within the tolerance), whenever the test runs."""
    global T0
    T0 = (time.time_ns() - 5 * S) // (10 * MS) * (10 * MS)


def motor(i: int) -> bytes:
    return Encoder(MOTOR).encode({"time": i, "speed": float(i), "torque": 2.0, "current": 3.0,
                                  "voltage": 4.0, "position": 5.0, "temperature": 6.0})


def env(i: int, size: int) -> bytes:
    return Encoder(ENV).encode({"time": i, "humidity": float(i), "pressure": 2.0,
                                "state": "IDLE", "message": "m" * size})


def rows_of(datagrams: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = max(len(d) for d in datagrams)
    rows = np.zeros((len(datagrams), width), dtype=np.uint8)
    for i, d in enumerate(datagrams):
        rows[i, : len(d)] = np.frombuffer(d, dtype=np.uint8)
    sender = np.uint64(0x0A000001 << 16 | 5000)
    return rows, np.array([len(d) for d in datagrams]), np.full(len(datagrams), sender)


def speeds(hub: Hub) -> list[float]:
    """motor.speed's last value of each 10 ms bucket, oldest first."""
    return hub.numeric["motor.speed"][0].rings[0].since_time(0).last[:, 0].tolist()


def at(i: int) -> int:
    return T0 + i * MS


def test_a_wake_up_takes_many_datagrams_and_every_one_reaches_the_hub() -> None:
    """2,000 datagrams sent a few at a time over about half a second: the reader rests
    when it has emptied the socket, so it wakes far fewer times than datagrams came (one
    wake-up a datagram before), and the hub has every one."""
    hub = Hub(Registry([MOTOR]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
    sock.bind(("127.0.0.1", 0))
    address = sock.getsockname()
    total = 2000

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            for i in range(total):
                out.sendto(motor(at(i)), address)
                if i % 4 == 3:
                    time.sleep(0.001)

    async def run() -> Feed:
        feed = Feed(hub, "full", sock)
        sender = threading.Thread(target=send)
        sender.start()
        await asyncio.to_thread(sender.join, TIMEOUT)  # the loop reads meanwhile
        feed.take()  # what came during the last rest
        feed.flush()
        feed.close()
        return feed

    try:
        feed = asyncio.run(run())
    finally:
        sock.close()
    assert hub.datagrams == total and hub.rejected == 0
    assert hub.rates["motor"].datagrams == total
    assert feed.wakeups < total / 4, feed.statistics()
    assert feed.reads <= feed.wakeups + 2  # the reads of the end: take() above


def test_rows_are_copied_in_so_the_socket_buffer_can_be_reused_at_once() -> None:
    hub = Hub(Registry([MOTOR]))

    async def run() -> None:
        feed = Feed(hub, "full")
        rows, lengths, senders = rows_of([motor(at(i)) for i in range(5)])
        feed.received(rows, lengths, senders)
        rows[:] = 0xFF  # the next system call writes over the slots
        lengths[:] = 3
        feed.flush()

    asyncio.run(run())
    assert hub.datagrams == 5 and hub.rejected == 0
    assert speeds(hub) == [float(at(4))]  # one 10 ms bucket
    assert hub.numeric["motor.speed"][0].rings[0].since_time(0).low[:, 0].tolist() == [
        float(at(0))]


def test_the_pending_rows_are_bounded_and_fold_in_early_when_full(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows beyond the bound fold in at once (counted), none lost and in order: the
    bound is on memory, never a drop."""
    monkeypatch.setattr(feed_module, "PENDING_BYTES", 64 * 1024)
    hub = Hub(Registry([MOTOR]))
    datagrams = [motor(at(i)) for i in range(3000)]  # about 90 bytes each

    async def run() -> Feed:
        feed = Feed(hub, "full")
        for start in range(0, len(datagrams), 64):
            feed.received(*rows_of(datagrams[start : start + 64]))
        assert feed.count * len(datagrams[0]) <= 64 * 1024
        feed.flush()
        return feed

    feed = asyncio.run(run())
    assert feed.full_flushes >= 3
    assert hub.datagrams == 3000 and hub.rejected == 0
    assert speeds(hub)[-1] == float(at(2999))
    assert hub.clocks["motor"].dropped == 0


def test_a_longer_datagram_widens_the_rows_and_keeps_those_before() -> None:
    """Short rows, then a batch with a long one, then short ones again, one flush: every
    record decoded as if given one by one."""
    hub, alone = Hub(Registry([MOTOR, ENV])), Hub(Registry([MOTOR, ENV]))
    batches = [[motor(at(i)) for i in range(3)],
               [env(at(1), 2), env(at(2), 3000), motor(at(3))],
               [motor(at(4)), env(at(3), 1)]]

    async def run() -> None:
        feed = Feed(hub, "full")
        for batch in batches:
            feed.received(*rows_of(batch))
        feed.flush()

    asyncio.run(run())
    alone.ingest([d for batch in batches for d in batch], 1.0, now_ns=time.time_ns(),
                 source=("full", "10.0.0.1:5000"))
    assert hub.datagrams == alone.datagrams == 8 and hub.rejected == 0
    assert speeds(hub) == speeds(alone)
    assert hub.text["env.message"].changed_since(-1) == alone.text["env.message"].changed_since(-1)


def test_the_reader_rests_less_the_faster_datagrams_come() -> None:
    """A batch's worth at the rate seen: a flood (60,000 at 100 k/s lost 1,700 datagrams
    to a fixed 10 ms rest) waits far less in the kernel than a trickle."""
    assert rest_after(0, 0.5) == READ_PAUSE  # nothing came: the longest rest
    assert rest_after(10, 0.010) == READ_PAUSE  # 1 k/s
    assert rest_after(100, 0.010) == pytest.approx(READ_BATCH / 10_000)  # 10 k/s: 6.4 ms
    assert rest_after(1000, 0.010) == pytest.approx(READ_BATCH / 100_000)  # 0.64 ms
    assert rest_after(10**6, 1.0) < 1e-4
