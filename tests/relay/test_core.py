"""Routing and decimation, with literal bytes and a fake clock."""

from __future__ import annotations

from speeddata import wire
from speeddata.relay.core import Decimator, Router
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
                          "bad_legacy_body": 0}
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
    forwarded = sum(d.allow("motor", t * MS) for t in range(10_000))  # 10 s at 1 kHz
    assert 500 <= forwarded <= 505  # 50 Hz, plus the initial burst of 5
    assert d.allow("env", 10_000 * MS)  # another channel has its own budget


def test_decimated_group_gets_a_rate_limited_share_of_batches() -> None:
    r = router(decimated_rate_hz=10)
    total = 0
    for batch_no in range(100):  # 100 batches of 10 datagrams, 10 ms apart: 1 kHz for 1 s
        routed = r.route([motor(i) for i in range(10)], 26000, batch_no * 10 * MS)
        total += len(routed.decimated)
        assert len(routed.full) == 10
    assert 10 <= total <= 11
    assert r.counters["motor"].decimated == total
