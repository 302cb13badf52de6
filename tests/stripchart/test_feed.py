"""The stripchart's feed at its socket boundary: reserved messages that are not valid
(a replay notice, a forward report) are refused and counted by reason, and never cost
another relay's pending batch; a batch that raises costs that batch only."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speeddata import loss, wire
from speeddata.schemas import Registry, load_file
from speeddata.sender import Encoder
from speeddata.stripchart.feed import Feed as _Feed
from speeddata.stripchart.hub import Hub
from tests.helpers import SCHEMAS

MOTOR = load_file(SCHEMAS / "motor.avsc")
S = 10**9
A, B, C = ("10.0.0.1", 5000), ("10.0.0.2", 5000), ("10.0.0.3", 5000)


def motor(i: int) -> bytes:
    return Encoder(MOTOR).encode({"time": i, "speed": 1.0, "torque": 2.0, "current": 3.0,
                                  "voltage": 4.0, "position": 5.0, "temperature": 6.0})


def notice(**fields: object) -> bytes:
    good = {"channels": [MOTOR.fingerprint.hex()], "first_ns": 1, "wall_ns": 2, "speed": 1.0}
    return wire.REPLAY_MARKER + json.dumps({**good, **fields}).encode()


BAD_NOTICES = {
    "first_ns Infinity": (wire.REPLAY_MARKER + b'{"channels": [], "first_ns": Infinity, '
                          b'"wall_ns": 0, "speed": 1}', "not_finite"),
    "speed NaN": (wire.REPLAY_MARKER + b'{"channels": [], "first_ns": 0, "wall_ns": 0, '
                  b'"speed": NaN}', "not_finite"),
    "speed 1e400": (wire.REPLAY_MARKER + b'{"channels": [], "first_ns": 0, "wall_ns": 0, '
                    b'"speed": 1e400}', "bad_speed"),
    "speed true": (notice(speed=True), "bad_speed"),
    "speed text": (notice(speed="fast"), "bad_speed"),
    "speed 0": (notice(speed=0), "bad_speed"),
    "speed -1": (notice(speed=-1.0), "bad_speed"),
    "speed too high": (notice(speed=wire.MAX_SPEED * 2), "bad_speed"),
    "first_ns float": (notice(first_ns=1.5), "bad_time"),
    "first_ns bool": (notice(first_ns=True), "bad_time"),
    "first_ns 10**30": (notice(first_ns=10**30), "bad_time"),
    "wall_ns missing": (wire.REPLAY_MARKER + b'{"channels": [], "first_ns": 0, "speed": 1}',
                        "bad_time"),
    "channels not hex": (notice(channels=["zz" * 8]), "bad_channels"),
    "channel too short": (notice(channels=["00"]), "bad_channels"),
    "channels not a list": (notice(channels="00" * 8), "bad_channels"),
    "too many channels": (notice(channels=["00" * 8] * (wire.MAX_NOTICE_CHANNELS + 1)),
                          "bad_channels"),
    "not an object": (wire.REPLAY_MARKER + b"[1, 2]", "bad_json"),
    "broken JSON": (wire.REPLAY_MARKER + b"{broken", "bad_json"),
    "not UTF-8": (wire.REPLAY_MARKER + b"\xff\xfe", "bad_json"),
    "nested deep": (wire.REPLAY_MARKER + b"[" * 4000 + b"]" * 4000, "bad_json"),
    "too long": (wire.REPLAY_MARKER + b" " * wire.MAX_NOTICE_BYTES, "too_long"),
}


def forward(channels: list[tuple[bytes, int]], name: str = "rig/relay") -> bytes:
    """A ForwardReport as a relay would send it, but with any channels and name."""
    import io

    import fastavro

    buffer = io.BytesIO(loss.FORWARD_REPORT_HEADER)
    buffer.seek(0, 2)
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(loss.FORWARD_REPORT), {
        "time": 1, "relay": 9, "name": name,
        "channels": [{"channel": fp, "forwarded": n} for fp, n in channels]})
    return buffer.getvalue()


BAD_REPORTS = {
    "negative count": (forward([(MOTOR.fingerprint, -5)]), "out_of_range"),
    "too many channels": (forward([(i.to_bytes(8, "little"), 1)
                                   for i in range(loss.PER_REPORT + 1)]), "too_many"),
    "a channel twice": (forward([(MOTOR.fingerprint, 1), (MOTOR.fingerprint, 2)]),
                        "duplicate"),
    "a terminal escape in the name": (forward([], "\x1b[2Jrelay"), "bad_name"),
    "a name too long": (forward([], "r" * (loss.MAX_NAME + 1)), "bad_name"),
    "truncated": (loss.forward_reports(1, 9, "r", {MOTOR.fingerprint: 1})[0][:-1], "garbled"),
    "extended": (loss.forward_reports(1, 9, "r", {MOTOR.fingerprint: 1})[0] + b"\0",
                 "garbled"),
    "too long": (loss.FORWARD_REPORT_HEADER + b"\0" * loss.MAX_REPORT_BYTES, "too_long"),
}


def give(feed: _Feed, datagram: bytes, addr: tuple[str, int]) -> None:
    """One datagram as the socket reader hands them on: a row, its length, its sender."""
    sender = int(ipaddress.IPv4Address(addr[0])) << 16 | addr[1]
    feed.received(np.frombuffer(datagram, dtype=np.uint8).reshape(1, -1).copy(),
                  np.array([len(datagram)]), np.array([sender], dtype=np.uint64))


def feed_with(bad: bytes) -> tuple[Hub, _Feed]:
    """Two relays' batches pending, then ``bad`` from a third, then the flush."""
    hub = Hub(Registry([MOTOR]))

    async def run() -> _Feed:
        feed = _Feed(hub, "full")
        for i in range(3):
            give(feed, motor(i), A)
            give(feed, motor(100 + i), B)
        give(feed, bad, C)
        feed.flush()
        return feed

    return hub, asyncio.run(run())


def drawn(hub: Hub) -> int:
    history, _ = hub.numeric["motor.speed"]
    return hub.rates["motor"].datagrams if history else 0


@pytest.mark.parametrize("name", BAD_NOTICES)
def test_a_bad_replay_notice_is_counted_and_the_feed_goes_on(name: str) -> None:
    datagram, reason = BAD_NOTICES[name]
    with pytest.raises(wire.WireError) as refused:
        wire.parse_replay_notice(datagram)
    assert refused.value.reason == reason
    hub, _ = feed_with(datagram)
    assert drawn(hub) == 6  # both relays' batches were taken
    assert hub.statistics()["refused"]["replay_notice"] == {reason: 1}
    assert hub.clocks["motor"].replay is None and hub.feed_errors == 0


@pytest.mark.parametrize("name", BAD_REPORTS)
def test_a_bad_forward_report_is_counted_and_the_feed_goes_on(name: str) -> None:
    datagram, reason = BAD_REPORTS[name]
    with pytest.raises(wire.WireError) as refused:
        loss.parse_forward_report(datagram)
    assert refused.value.reason == reason
    hub, _ = feed_with(datagram)
    assert drawn(hub) == 6
    assert hub.statistics()["refused"]["forward_report"] == {reason: 1}
    assert hub.loss(S) == {"full": []}  # arrivals counted, no report taken


def test_a_batch_that_raises_costs_only_that_relays_batch(monkeypatch) -> None:
    hub = Hub(Registry([MOTOR]))
    real = hub.ingest_rows

    def ingest_rows(rows: np.ndarray, lengths: np.ndarray, now: float, **kw: object) -> None:
        if kw["source"][1].startswith(B[0]):  # type: ignore[index]
            raise OverflowError("a bug some datagram found")
        real(rows, lengths, now, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(hub, "ingest_rows", ingest_rows)

    async def run() -> None:
        feed = _Feed(hub, "full")
        for i in range(3):
            give(feed, motor(i), B)
            give(feed, motor(i), A)
        feed.flush()
        give(feed, motor(9), A)  # and it goes on
        feed.flush()

    asyncio.run(run())
    assert drawn(hub) == 4 and hub.feed_errors == 1 and hub.rejected == 3


def test_a_valid_notice_still_puts_a_channel_in_replay() -> None:
    hub, _ = feed_with(notice(first_ns=5 * S, wall_ns=6 * S, speed=2))
    assert hub.clocks["motor"].replay == wire.ReplayNotice((MOTOR.fingerprint,), 5 * S,
                                                           6 * S, 2.0)
    assert all(not v for v in hub.statistics()["refused"].values())


def test_a_forged_forward_report_from_another_address_leaves_the_relays_row() -> None:
    hub = Hub(Registry([MOTOR]), allow=[ipaddress.IPv4Network("10.0.0.0/24")])
    relay, forger = "10.0.0.1:5000", "192.168.9.9:5000"
    hub.forward_report("full", relay, loss.forward_reports(0, 9, "rig/relay",
                                                           {MOTOR.fingerprint: 0})[0], 0)
    hub.ingest([motor(i) for i in range(95)], now_ns=S, source=("full", relay))
    for n in (0, 999_995):  # what made the page claim 999,995 lost
        hub.forward_report("full", forger, loss.forward_reports(
            S, 66, "rig/relay", {MOTOR.fingerprint: n})[0], S)
    hub.forward_report("full", relay, loss.forward_reports(
        S, 9, "rig/relay", {MOTOR.fingerprint: 100})[0], S)
    rows = {r["source"]: r for r in hub.loss(S)["full"]}
    assert (rows[relay]["lost"], rows[relay]["trust"]) == (5, "allowed")
    fake = rows[forger]
    assert fake["trust"] == "outside allow" and fake["report_only"]
    assert fake["lost"] <= loss.BURST and fake["unverified"] >= 999_995 - loss.BURST


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([loss.SENDER_REPORT_HEADER, loss.FORWARD_REPORT_HEADER,
                        wire.REPLAY_MARKER + b'{"channels": ', wire.REPLAY_MARKER]),
       st.binary(max_size=300))
def test_no_bytes_after_a_reserved_header_raise_anything_but_a_refusal(head: bytes,
                                                                      tail: bytes) -> None:
    datagram = head + tail
    for parse in (loss.parse_sender_report, loss.parse_forward_report,
                  wire.parse_replay_notice):
        with contextlib.suppress(wire.WireError):
            parse(datagram)
    hub = Hub(Registry([MOTOR]))
    hub.forward_report("full", "10.0.0.1:5000", datagram, S)
    hub.ingest([datagram, motor(1)], now=1.0, now_ns=S, source=("full", "10.0.0.1:5000"))
    assert hub.rates["motor"].datagrams == 1


def test_a_replay_on_the_group_leaves_the_live_source_of_its_channel_live() -> None:
    """The live source (relayed from A) and a replay of yesterday (from B) of the same
    channel on one group: the replay's samples are drawn when it sends them, the live
    source's on its own clock. Before, every motor datagram was placed as a replayed
    one, the live ones a day ahead: dropped, the live source vanished while it ran."""
    day = 86400 * S
    hub = Hub(Registry([MOTOR]))
    live: list[int] = []

    async def run() -> None:
        feed = _Feed(hub, "full")
        start = time.time_ns()
        for step in range(5):  # as 100 ms of each, with a notice before each
            at = start + step * S // 10
            give(feed, wire.replay_notices([MOTOR.fingerprint], start - day,
                                                       start, 1.0)[0], B)
            for i in range(10):
                give(feed, motor(at - day + i * 10**7), B)  # replayed
                give(feed, motor(at + i * 10**7), A)  # live
                live.append(at + i * 10**7)
            feed.flush()

    asyncio.run(run())
    clock = hub.clocks["motor"]
    assert clock.dropped == 0 and hub.rates["motor"].datagrams == 100
    drawn_ms = hub.numeric["motor.speed"][0].rings[0].since_time(0).last_ms
    assert {t // 10**6 for t in live} <= set(drawn_ms.astype(np.int64).tolist())
    assert clock.replay_source == "10.0.0.2:5000" and clock.replaying(time.time_ns())
    assert not clock.shifted and abs(clock.offset_ns) < S  # the live clock, still right


def test_the_hub_takes_the_time_from_its_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rates and source clocks from the ``now`` passed in, never from a clock the hub
    reads (before, ingest read time.monotonic() for rates when not given it)."""
    def no_clock() -> None:
        raise AssertionError("the hub read a clock")

    hub = Hub(Registry([MOTOR]))
    monkeypatch.setattr(time, "monotonic", no_clock)
    monkeypatch.setattr(time, "time_ns", no_clock)
    hub.ingest([motor(1000 * S + i) for i in range(10)], now_ns=1000 * S)
    hub.ingest([motor(1001 * S + i) for i in range(50)], now_ns=1001 * S)
    hub.forward_report("full", "10.0.0.1:5000", forward([(MOTOR.fingerprint, 60)]), 1001 * S)
    assert hub.rates["motor"].rate_hz == 50.0  # 50 in the second since the window began
    assert hub.describe(1001 * S)[0]["datagrams"] == 60


ENV = load_file(SCHEMAS / "env.avsc")  # a text field: bodies of several lengths


def env(i: int) -> bytes:
    return Encoder(ENV).encode({"time": i, "humidity": 1.0, "pressure": 2.0,
                                "state": "IDLE", "message": "m" * (i % 5)})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(
    st.integers(1, 10**6).map(motor), st.integers(1, 10**6).map(env),
    st.binary(max_size=40), st.just(notice()),
    st.integers(1, 10**6).map(lambda i: motor(i)[:-3]),  # cut short
    st.binary(min_size=8, max_size=8).map(lambda fp: wire.MARKER + fp + b"\0" * 40)),
    min_size=1, max_size=60))
def test_rows_and_datagrams_fold_in_alike(datagrams: list[bytes]) -> None:
    """The socket reader's matrix path and the list path leave the same hub."""
    by_list, by_rows = Hub(Registry([MOTOR, ENV])), Hub(Registry([MOTOR, ENV]))
    source = ("full", "10.0.0.1:5000")
    by_list.ingest(datagrams, 1.0, now_ns=S, source=source)
    width = max(len(d) for d in datagrams)
    rows = np.zeros((len(datagrams), width), dtype=np.uint8)
    for i, d in enumerate(datagrams):
        rows[i, : len(d)] = np.frombuffer(d, dtype=np.uint8)
    by_rows.ingest_rows(rows, np.array([len(d) for d in datagrams]), 1.0, now_ns=S,
                        source=source)
    for hub in (by_list, by_rows):
        assert hub.datagrams == len(datagrams)
    assert by_rows.rejected == by_list.rejected
    for name in ("motor", "env"):
        assert by_rows.rates[name].datagrams == by_list.rates[name].datagrams
        a = by_list.channels[name].rings[0].since_time(0)
        b = by_rows.channels[name].rings[0].since_time(0)
        assert np.array_equal(a.start_ms, b.start_ms) and np.array_equal(a.low, b.low)
        assert np.array_equal(a.high, b.high) and np.array_equal(a.last, b.last)
    assert by_rows.loss(S) == by_list.loss(S)
