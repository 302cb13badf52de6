"""Routing and decimation, with literal bytes and a fake clock."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from speeddata import wire
from speeddata.relay.core import BatchRouter, Received, Router
from speeddata.relay.pacing import Decimator, Linger
from speeddata.schemas import Registry, load_file
from speeddata.sender import Encoder
from tests.helpers import SCHEMAS

MOTOR = load_file(SCHEMAS / "motor.avsc")
EXAMPLE = load_file(SCHEMAS / "example.avsc")
MS = 10**6


def motor(i: int) -> memoryview:
    return memoryview(Encoder(MOTOR).encode({
        "time": i, "speed": 1.0, "torque": 2.0, "current": 3.0, "voltage": 4.0,
        "position": 5.0, "temperature": 6.0}))


def example_body(i: int) -> memoryview:
    return memoryview(Encoder(EXAMPLE).encode({
        "time": i, "message": "hi", "counter": i, "sine_wave": 0.0, "ramp": 0.0,
        "square_wave": 0.0, "noise": 0.0})[wire.HEADER_SIZE:])


def router(**kwargs) -> Router:
    return Router(Registry([MOTOR, EXAMPLE]), **kwargs)


def test_a_batch_is_grouped_by_channel_and_forwarded_unchanged() -> None:
    batch = [motor(1), motor(2)]
    routed = router().route(batch, 26000, 0)
    assert list(routed.bodies) == [MOTOR]
    assert [bytes(b) for b in routed.bodies[MOTOR]] == [bytes(d[10:]) for d in batch]
    assert [bytes(d) for d in routed.full] == [bytes(d) for d in batch]


def test_bad_datagrams_are_counted_by_reason_and_never_routed() -> None:
    r = router(max_datagram=200)
    batch = [memoryview(b"\xc3"), memoryview(b"xx" + bytes(20)),
             memoryview(b"\xc3\x01" + bytes(8) + b"body"), memoryview(bytes(300))]
    routed = r.route(batch, 26000, 0)
    assert routed.bodies == {} and routed.full == [] and routed.rejected == 4
    assert r.rejected == {"too_short": 1, "bad_marker": 1, "unknown_schema": 1, "too_long": 1,
                          "bad_body": 0, "bad_legacy_body": 0, "not_allowed": 0,
                          "bad_report": 0}
    assert "0000000000000000" in r.last_rejection["unknown_schema"]


def test_legacy_port_takes_bare_bodies_and_still_routes_single_object() -> None:
    r = router(legacy_ports={26000: EXAMPLE})
    routed = r.route([example_body(1), motor(2), memoryview(b"\x01garbage")], 26000, 0)
    assert [bytes(b) for b in routed.bodies[EXAMPLE]] == [bytes(example_body(1))]
    assert len(routed.bodies[MOTOR]) == 1
    # multicast consumers get a header on legacy bodies: the groups carry one format only
    assert bytes(routed.full[0]) == wire.header(EXAMPLE.fingerprint) + bytes(example_body(1))
    assert r.rejected["bad_legacy_body"] == 1


def test_bare_bodies_on_another_port_are_rejected() -> None:
    r = router(legacy_ports={26001: EXAMPLE})
    assert r.route([example_body(1)], 26000, 0).rejected == 1


def test_decimator_limits_rate_per_channel_with_small_bursts() -> None:
    d = Decimator(rate_hz=50)
    forwarded = sum(d.grant("motor", t * MS, 1) for t in range(10_000))  # 10 s at 1 kHz
    assert 500 <= forwarded <= 505  # 50 Hz, plus the initial burst of 5
    assert d.grant("env", 10_000 * MS, 1) == 1  # another channel has its own budget


def test_decimator_survives_a_clock_stepping_backwards() -> None:
    d = Decimator(rate_hz=100)
    assert d.grant("m", 10**12, 50) == 10
    assert d.grant("m", 0, 50) == 0  # NTP stepped the clock back: nothing, not negative
    assert d.grant("m", 10**12 + 20 * MS, 50) == 2


def test_decimator_grants_a_batch_its_share() -> None:
    d = Decimator(rate_hz=100)
    assert d.grant("m", 0, 50) == 10  # the burst: 100 Hz x 0.1 s
    assert d.grant("m", 10 * MS, 50) == 1  # 10 ms later: one more token
    assert d.grant("m", 1000 * MS, 500) == 10  # the bucket never holds more than its burst


def test_decimated_group_gets_a_rate_limited_share_of_batches() -> None:
    r = router(decimated_rate_hz=10)
    total = 0
    for batch_no in range(100):  # 100 batches of 10 datagrams, 10 ms apart: 1 kHz for 1 s
        routed = r.route([motor(i) for i in range(10)], 26000, batch_no * 10 * MS)
        total += len(routed.decimated)
        assert len(routed.full) == 10
    assert 10 <= total <= 11
    assert r.counters["motor"].decimated == total


def received(datagrams: list[bytes], slot: int = 400) -> Received:
    buffer = np.zeros(len(datagrams) * slot, dtype=np.uint8)
    for i, d in enumerate(datagrams):
        buffer[i * slot : i * slot + len(d)] = np.frombuffer(d[:slot], dtype=np.uint8)
    return Received(buffer, slot, np.array([min(len(d), slot) for d in datagrams],
                                           dtype=np.int64))


kinds = st.sampled_from(["motor", "example", "legacy", "garbage", "unknown", "short", "long",
                         "truncated", "extended", "garbled"])


@given(st.lists(st.tuples(kinds, st.integers(0, 1000)), max_size=60))
def test_batch_router_decides_exactly_like_the_datagram_router(items) -> None:
    def make(kind: str, i: int) -> bytes:
        return {"motor": lambda: bytes(motor(i)),
                "example": lambda: wire.header(EXAMPLE.fingerprint) + bytes(example_body(i)),
                "legacy": lambda: bytes(example_body(i)),
                "garbage": lambda: b"\x01garbage" * (i % 5),
                "unknown": lambda: b"\xc3\x01" + i.to_bytes(8, "little") + b"x",
                "short": lambda: b"\xc3\x01\x00",
                "long": lambda: bytes(motor(i)) + bytes(300),
                "truncated": lambda: bytes(motor(i))[:-1 - i % 40],
                "extended": lambda: bytes(motor(i)) + bytes(1 + i % 3),
                "garbled": lambda: bytes(motor(i))[:10] + b"\xff" * 11}[kind]()

    datagrams = [make(kind, i) for kind, i in items]
    slow = router(legacy_ports={26000: EXAMPLE}, max_datagram=200)
    fast = router(legacy_ports={26000: EXAMPLE}, max_datagram=200)
    expected = slow.route([memoryview(d) for d in datagrams], 26000, 0)
    got = BatchRouter(fast).route(received(datagrams), 26000, 0)
    bodies = {c.name: (bytes(payload), n) for c, payload, n in got.writes}
    for c, extra in got.other.bodies.items():
        joined, n = bodies.get(c.name, (b"", 0))
        bodies[c.name] = (joined + b"".join(bytes(b) for b in extra), n + len(extra))
    # legacy bodies come through the datagram router after the batch's own; order within a
    # channel is kept, and every datagram is cached and forwarded exactly once
    assert {c.name: len(v) for c, v in expected.bodies.items()} == {
        k: n for k, (_, n) in bodies.items()}
    for channel, expected_bodies in expected.bodies.items():
        assert sorted(bytes(b) for b in expected_bodies) == sorted(
            _split(channel, bodies[channel.name][0]))
    full = [bytes(got_received) for got_received in (
        received(datagrams).datagram(int(i)) for i in got.full)] + [
        bytes(d) for d in got.other.full]
    assert sorted(full) == sorted(bytes(d) for d in expected.full)
    assert fast.rejected == slow.rejected
    assert {k: (v.datagrams, v.bad_body) for k, v in fast.counters.items()} == {
        k: (v.datagrams, v.bad_body) for k, v in slow.counters.items()}


def test_a_body_that_is_not_one_record_is_rejected_never_cached() -> None:
    """One short, one long and one garbled body among good ones: only the good are
    cached and forwarded, each bad one counted as bad_body for its channel."""
    good = [bytes(motor(i)) for i in range(8)]
    bad = [good[0][:-1], good[1] + b"\x00", good[2][:10] + b"\x80" * 60]
    for batch in (good[:5] + bad[:1] + good[5:], good + bad):  # uniform path, mixed path
        r = router()
        got = BatchRouter(r).route(received(batch), 26000, 0)
        [(channel, payload, count)] = got.writes
        assert (channel.name, count) == ("motor", 8)
        assert payload == b"".join(d[wire.HEADER_SIZE:] for d in good)
        assert sorted(bytes(received(batch).datagram(int(i))) for i in got.full) == sorted(good)
        assert set(got.decimated.tolist()) <= set(got.full.tolist())
        assert r.counters["motor"].bad_body == len(batch) - 8 == r.rejected["bad_body"]
        assert "not exactly one record" in r.last_rejection["bad_body"]


def test_a_single_object_datagram_on_a_legacy_port_is_never_blamed_on_the_legacy_body() -> None:
    r = router(legacy_ports={26000: EXAMPLE})
    unknown = b"\xc3\x01" + bytes(8) + bytes(example_body(1))[:5]
    routed = r.route([memoryview(unknown), memoryview(b"\x01garbage")], 26000, 0)
    assert routed.rejected == 2
    assert r.rejected["unknown_schema"] == 1 and r.rejected["bad_legacy_body"] == 1


def test_datagrams_from_hosts_not_allowed_are_rejected_first() -> None:
    import ipaddress

    from speeddata.relay.core import allowed_sources

    def ip(text: str) -> int:
        return int(ipaddress.IPv4Address(text))

    nets = [ipaddress.IPv4Network("192.168.1.0/24"), ipaddress.IPv4Network("10.0.0.7/32")]
    sources = np.array([ip("192.168.1.9"), ip("192.168.2.9"), ip("10.0.0.7"), ip("10.0.0.8")],
                       dtype=np.uint32)
    assert allowed_sources(sources, nets).tolist() == [True, False, True, False]
    r = router(allow=nets)
    batch = received([bytes(motor(i)) for i in range(4)])
    batch.sources = sources
    got = BatchRouter(r).route(batch, 26000, 0)
    assert got.full.tolist() == [0, 2] and [n for _, _, n in got.writes] == [2]
    assert r.rejected["not_allowed"] == 2 and "192.168.2.9" in r.last_rejection["not_allowed"]


def _split(channel, payload: bytes) -> list[bytes]:
    """Split concatenated bodies back into records (test helper, via fastavro)."""
    import io

    import fastavro

    stream, out = io.BytesIO(payload), []
    while stream.tell() < len(payload):
        start = stream.tell()
        fastavro.schemaless_reader(stream, channel.parsed, None)
        out.append(payload[start : stream.tell()])
    return out


def test_a_batch_from_one_sender_takes_the_uniform_path_with_the_same_result() -> None:
    datagram = bytes(motor(7))
    batch = received([datagram] * 100)
    fast = router(decimated_rate_hz=50.0)
    got = BatchRouter(fast).route(batch, 26000, 0)
    [(channel, payload, count)] = got.writes
    assert (channel.name, count) == ("motor", 100)
    assert payload == datagram[wire.HEADER_SIZE:] * 100
    assert got.full.tolist() == list(range(100))
    assert len(got.decimated) == 5  # the decimator's burst: 50 Hz x 0.1 s
    assert fast.counters["motor"].datagrams == 100
    # one sender with records of varying size (varints): still one write, in order
    varied = [wire.header(EXAMPLE.fingerprint) + bytes(example_body(i)) for i in range(0, 900, 9)]
    assert len({len(d) for d in varied}) > 1
    [(channel, payload, count)] = BatchRouter(router()).route(received(varied), 1, 0).writes
    assert (channel.name, count) == ("example", 100)
    assert payload == b"".join(d[wire.HEADER_SIZE:] for d in varied)
    # the same bytes under an unknown fingerprint are rejected, not cached
    unknown = b"\xc3\x01" + bytes(8) + datagram[wire.HEADER_SIZE:]
    other = router()
    rejected = BatchRouter(other).route(received([unknown] * 10), 26000, 0)
    assert not rejected.writes and not len(rejected.full)
    assert other.rejected["unknown_schema"] == 10


def test_linger_waits_at_low_rates_and_never_when_batches_are_full() -> None:
    linger = Linger(max_seconds=0.010, batch=256)
    assert linger.after(1, 0.0) == 0.010  # no rate known yet: the longest wait
    assert linger.after(12, 0.001) == 0.010  # 12 k/s: half a batch takes longer than 10 ms
    assert linger.after(256, 0.002) == 0.0  # a full batch: straight back to the socket
    fast = linger.after(100, 0.003)  # 100 k/s: wait only as long as half a batch takes
    assert 0 < fast <= 128 / 100_000
    assert Linger(max_seconds=0.0, batch=256).after(1, 0.0) == 0.0


def test_many_channels_are_all_recognised_by_the_batch_path(tmp_path) -> None:
    from tests.harness.procs import bench_schemas

    names = bench_schemas(tmp_path, 12, 3)
    registry, errors = Registry.load_dir(tmp_path)
    assert not errors
    encoders = [Encoder(load_file(tmp_path / f"{n}.avsc")) for n in names]
    datagrams = [encoders[i % 12].encode({"time": i, "s0": 1.0, "s1": 2.0, "s2": float(i)})
                 for i in range(120)]
    fast = Router(registry)
    got = BatchRouter(fast).route(received(datagrams), 26000, 0)
    assert not got.other.bodies and not got.other.full  # none fell to the per-datagram path
    assert {c.name: n for c, _, n in got.writes} == dict.fromkeys(names, 10)
    for channel, payload, _ in got.writes:  # each channel's bodies, in arrival order
        i = names.index(channel.name)
        assert payload == b"".join(d[wire.HEADER_SIZE:] for d in datagrams[i::12])
    assert sorted(got.full.tolist()) == list(range(120))


def test_unknown_fingerprints_are_listed_with_their_sender_count_and_time() -> None:
    """What a sender of an unregistered schema looks like in status: the fingerprint, who
    sends it, how many and when; on the relay port and on a legacy port alike."""
    import ipaddress

    from speeddata.relay.core import MAX_UNKNOWN

    r = router(legacy_ports={26000: EXAMPLE})
    stranger = bytes(wire.header(b"\x01" * 8)) + b"\x00" * 20
    sender = int(ipaddress.IPv4Address("192.168.1.77")) << 16 | 40000
    r.route([memoryview(stranger)] * 3, 26000, 5 * MS, [sender] * 3)  # legacy port
    r.route([memoryview(stranger)], 26999, 9 * MS, [sender])
    seen = r.statistics()["unknown_fingerprints"]
    assert seen == {"01" * 8: {"count": 4, "first_seen_ns": 5 * MS, "last_seen_ns": 9 * MS,
                               "source": "192.168.1.77:40000"}}
    assert r.rejected["unknown_schema"] == 4 and r.rejected["bad_legacy_body"] == 0
    for i in range(2 * MAX_UNKNOWN):  # a flood of random fingerprints: counted, list bounded
        r.route([memoryview(bytes(wire.header(i.to_bytes(8, "little"))) + b"\x00")], 1, 0)
    assert len(r.statistics()["unknown_fingerprints"]) == MAX_UNKNOWN
    assert r.rejected["unknown_schema"] == 4 + 2 * MAX_UNKNOWN


def test_the_batch_router_passes_the_senders_of_unknown_datagrams() -> None:
    import ipaddress

    stranger = bytes(wire.header(b"\x02" * 8)) + b"\x00" * 5
    good = bytes(motor(1))
    slot = 64
    buffer = np.zeros(2 * slot, dtype=np.uint8)
    buffer[: len(good)] = np.frombuffer(good, dtype=np.uint8)
    buffer[slot : slot + len(stranger)] = np.frombuffer(stranger, dtype=np.uint8)
    batch = Received(buffer, slot, np.array([len(good), len(stranger)]),
                     np.array([1, int(ipaddress.IPv4Address("10.0.0.9"))], dtype=np.uint32),
                     np.array([5, 26123], dtype=np.uint16))
    r = router()
    BatchRouter(r).route(batch, 26000, 0)
    assert r.statistics()["unknown_fingerprints"]["02" * 8]["source"] == "10.0.0.9:26123"
