"""Loss counted end to end, in-process: the reports, the matching, the relay's routing."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from speeddata import loss
from speeddata.errors import WireError
from speeddata.relay.core import BatchRouter, Received, Router
from speeddata.schemas import Registry, load_file
from speeddata.sender import Encoder
from speeddata.stripchart.hub import Hub
from tests.helpers import SCHEMAS

MOTOR = load_file(SCHEMAS / "motor.avsc")
S = 10**9


def motor(i: int) -> bytes:
    return Encoder(MOTOR).encode({"time": i, "speed": 1.0, "torque": 2.0, "current": 3.0,
                                  "voltage": 4.0, "position": 5.0, "temperature": 6.0})


def test_reports_round_trip_and_garbage_is_no_report() -> None:
    datagram = loss.sender_report(5, 77, MOTOR.fingerprint, 1000, 3)
    assert datagram[:10] == loss.SENDER_REPORT_HEADER
    assert loss.read_sender_report(datagram) == loss.SenderReport(
        5, 77, MOTOR.fingerprint, 1000, 3)
    assert loss.read_sender_report(datagram[:-1]) is None  # truncated
    assert loss.read_sender_report(datagram + b"\x00") is None  # extended
    assert loss.read_sender_report(motor(1)) is None
    many = {i.to_bytes(8, "little"): i for i in range(2 * loss.PER_REPORT + 1)}
    reports = [loss.read_forward_report(d) for d in loss.forward_reports(9, 1, "h/relay", many)]
    assert [len(r.channels) for r in reports] == [loss.PER_REPORT, loss.PER_REPORT, 1]
    assert {fp: n for r in reports for fp, n in r.channels} == many
    assert all(len(d) < 1400 for d in loss.forward_reports(9, 1, "h/relay", many))


def test_a_sender_that_loses_every_tenth_datagram_shows_ten_percent() -> None:
    hop = loss.Hop()
    key = ("10.0.0.5:4000", "motor")
    hop.report(key, epoch=1, sent=0, now_ns=0)
    for sent in range(1, 1001):
        if sent % 10:
            hop.arrived(key, 1, sent)
        if sent % 100 == 0:
            hop.report(key, epoch=1, sent=sent, now_ns=sent * S // 100)
    (row,) = hop.figures(10 * S)
    assert (row["sent"], row["arrived"], row["lost"], row["lost_percent"]) == (1000, 900, 100,
                                                                               10.0)
    assert (row["recent_sent"], row["recent_lost"]) == (1000, 100)  # all within ten seconds
    assert hop.figures(100 * S)[0]["recent_sent"] == 0  # silent since: nothing recent


def test_counts_start_at_the_first_report_seen_and_go_on_after_a_restart() -> None:
    hop = loss.Hop()
    key = ("10.0.0.5:4000", "motor")
    hop.arrived(key, 500, 0)  # the relay started late: what came before is not counted
    hop.report(key, epoch=1, sent=700, now_ns=1)
    hop.arrived(key, 100, 2)
    # a report lost on the way is harmless: the next carries the total
    hop.report(key, epoch=1, sent=810, now_ns=3)
    assert hop.figures(4)[0]["lost"] == 10
    # another epoch while this one reports (a forger rebasing the count) is refused
    assert hop.report(key, epoch=2, sent=0, now_ns=4) == "epoch_conflict"
    later = 3 + loss.EPOCH_QUIET_NS  # the sender restarted on the same port
    assert hop.report(key, epoch=2, sent=0, now_ns=later) is None
    hop.arrived(key, 50, later)
    hop.report(key, epoch=2, sent=50, now_ns=later + 1)
    (row,) = hop.figures(later + 2)
    assert (row["sent"], row["lost"]) == (160, 10)  # the restart hides no earlier loss
    assert hop.statistics()["refused"]["epoch_conflict"] == 1


def test_a_report_that_goes_backwards_is_refused_and_counted() -> None:
    hop = loss.Hop()
    key = ("10.0.0.5:4000", "motor")
    hop.report(key, epoch=1, sent=0, now_ns=0)
    hop.arrived(key, 100, S)
    hop.report(key, epoch=1, sent=110, now_ns=S)
    assert hop.report(key, epoch=1, sent=100, now_ns=2 * S) == "backwards"  # hides 10
    assert hop.report(key, epoch=1, sent=120, failed=5, now_ns=2 * S) is None
    assert hop.report(key, epoch=1, sent=130, failed=4, now_ns=3 * S) == "backwards"
    (row,) = hop.figures(3 * S)
    assert (row["sent"], row["lost"], row["failed"]) == (120, 20, 5)
    assert hop.statistics()["refused"]["backwards"] == 2


def test_a_claim_beyond_plausible_counts_only_the_plausible_part() -> None:
    """A forged report that claims a million sent: at most twice what arrived, plus
    OUTAGE_RATE_HZ for the time since the link's last report, plus BURST, is counted;
    the rest is shown as unverified."""
    hop = loss.Hop()
    key = ("10.0.0.9:4000", "motor")
    hop.report(key, epoch=1, sent=0, now_ns=0)
    hop.arrived(key, 10, S)
    assert hop.report(key, epoch=1, sent=1_000_000, now_ns=S) == "implausible"
    bound = 2 * 10 + loss.OUTAGE_RATE_HZ + loss.BURST
    (row,) = hop.figures(S)
    assert (row["sent"], row["lost"], row["unverified"]) == (bound, bound - 10,
                                                             1_000_000 - bound)
    assert row["recent_lost"] == bound - 10
    hop.arrived(key, 100, 2 * S)  # the next honest report goes on from there
    assert hop.report(key, epoch=1, sent=1_000_100, now_ns=2 * S) is None
    assert hop.figures(2 * S)[0]["lost"] == bound - 10
    # a real 10 % loss at 100 kHz passes whole
    real = ("10.0.0.5:4000", "motor")
    hop.report(real, epoch=2, sent=0, now_ns=0)
    hop.arrived(real, 90_000, S)
    hop.report(real, epoch=2, sent=100_000, now_ns=S)
    assert [r["lost"] for r in hop.figures(S) if r["source"] == real[0]] == [10_000]


def test_report_only_links_never_push_out_a_link_that_carries_data() -> None:
    hop = loss.Hop(max_links=3, max_report_only=2)
    real = ("10.0.0.5:4000", "motor")
    hop.report(real, epoch=1, sent=0, now_ns=0)
    hop.arrived(real, 9, 1)
    hop.report(real, epoch=1, sent=10, now_ns=2)
    for port in range(3000):  # a forger spraying reports from 3000 ports
        hop.report((f"10.0.0.6:{port}", "motor"), epoch=7, sent=0, now_ns=3)
    assert hop.get(real) is not None and len(hop.report_only) == 2
    rows = {r["source"]: r for r in hop.figures(3)}
    assert rows["10.0.0.5:4000"]["lost"] == 1 and not rows["10.0.0.5:4000"]["report_only"]
    assert rows["10.0.0.6:2999"]["report_only"]
    assert hop.statistics()["evicted"] == {"data": 0, "report_only": 2998}
    for i in range(10):  # data links: the least recently heard goes first, in O(1)
        hop.arrived((f"10.0.0.{i}:1", "motor"), 1, 4 + i)
        if i == 7:
            hop.arrived(real, 1, 12)
    assert set(hop.links) == {real, ("10.0.0.8:1", "motor"), ("10.0.0.9:1", "motor")}
    hop.arrived(("10.0.0.6:2999", "motor"), 1, 20)  # a report-only link that sends data
    assert ("10.0.0.6:2999", "motor") in hop.links and len(hop.report_only) == 1


def test_trust_says_whether_the_reporter_is_in_allow() -> None:
    lan = [ipaddress.IPv4Network("10.0.0.0/24")]
    assert loss.trust_of("10.0.0.5", lan) == "allowed"
    assert loss.trust_of(0x0B000001, lan) == "outside allow"
    assert loss.trust_of("not an address", lan) == "outside allow"
    assert loss.trust_of("10.0.0.5", []) == "any host"
    assert loss.trust_of("127.0.0.1", lan) == "allowed"  # this host's relay


def batch_of(datagrams: list[bytes], senders: list[int]) -> Received:
    slot = max(128, *(len(d) for d in datagrams))
    buffer = np.zeros(len(datagrams) * slot, dtype=np.uint8)
    for i, d in enumerate(datagrams):
        buffer[i * slot : i * slot + len(d)] = np.frombuffer(d, dtype=np.uint8)
    return Received(buffer, slot, np.array([len(d) for d in datagrams], dtype=np.int64),
                    np.array([s >> 16 for s in senders], dtype=np.uint32),
                    np.array([s & 0xFFFF for s in senders], dtype=np.uint16))


def test_the_relay_matches_a_report_with_what_came_before_it_in_the_batch() -> None:
    """Eight sent before the report, five of them arrived, three more sent and arrived
    after it in the same batch: three lost, not zero."""
    one = (0x0A000005 << 16) | 4000
    other = (0x0A000006 << 16) | 4000
    router = Router(Registry([MOTOR]))
    start = loss.sender_report(0, 42, MOTOR.fingerprint, 0, 0)
    BatchRouter(router).route(batch_of([start], [one]), 26000, 0)
    report = loss.sender_report(1, 42, MOTOR.fingerprint, 8, 1)
    datagrams = [motor(i) for i in range(5)] + [report] + [motor(i) for i in range(3)]
    senders = [one] * 9
    datagrams.insert(2, motor(99))  # another sender's datagram in between is not this one's
    senders.insert(2, other)
    routed = BatchRouter(router).route(batch_of(datagrams, senders), 26000, S)
    assert routed.other.rejected == 0  # the report is neither data nor a reject
    rows = {r["source"]: r for r in router.loss(S)}
    assert rows["10.0.0.5:4000"]["lost"] == 3 and rows["10.0.0.5:4000"]["failed"] == 1
    assert "10.0.0.6:4000" not in rows  # it never reported
    assert router.counters["motor"].datagrams == 9
    # the same rules one by one (the slow path)
    slow = Router(Registry([MOTOR]))
    slow.route([memoryview(start)], 26000, 0, [one])
    slow.route([memoryview(d) for d in datagrams], 26000, S, senders)
    assert slow.loss(S)[0]["lost"] == 3


def test_a_garbled_report_is_rejected_and_a_report_of_an_unknown_channel_ignored() -> None:
    router = Router(Registry([MOTOR]))
    bad = loss.sender_report(0, 1, MOTOR.fingerprint, 5, 0)[:-2]
    stranger = loss.sender_report(0, 1, b"\x07" * 8, 5, 0)
    router.route([memoryview(bad), memoryview(stranger)], 26000, 0, [1, 1])
    assert router.rejected["bad_report"] == 1 and router.rejected["unknown_schema"] == 0
    assert router.loss(0) == []


def test_the_hub_counts_what_each_relay_forwarded_on_each_group() -> None:
    hub = Hub(Registry([MOTOR]))
    relay = "10.0.0.1:5000"
    hub.forward_report("full", relay, loss.forward_reports(
        0, 9, "rig/relay", {MOTOR.fingerprint: 100})[0], 0)
    hub.ingest([motor(i) for i in range(45)], now_ns=S, source=("full", relay))
    hub.forward_report("full", relay, loss.forward_reports(
        S, 9, "rig/relay", {MOTOR.fingerprint: 150, b"\x01" * 8: 7})[0], S)
    (row,) = hub.loss(S)["full"]
    assert (row["source"], row["name"], row["sent"], row["arrived"], row["lost"]) == (
        relay, "rig/relay", 50, 45, 5)


def test_a_legacy_body_after_the_report_in_its_batch_is_not_counted_by_it() -> None:
    """Bare bodies on a legacy port are routed one by one; the first one, sent just after
    the sender's first report and read in the same batch, used to be counted before it
    (the demo showed one example datagram lost for ever)."""
    example = load_file(SCHEMAS / "example.avsc")
    one = (0x7F000001 << 16) | 4000
    router = Router(Registry([MOTOR, example]), legacy_ports={26000: example})
    body = Encoder(example).encode({"time": 1, "message": "m", "counter": 1, "sine_wave": 0.0,
                                    "ramp": 0.0, "square_wave": 0.0, "noise": 0.0})[10:]
    first = loss.sender_report(0, 5, example.fingerprint, 0, 0)
    last = loss.sender_report(1, 5, example.fingerprint, 3, 0)
    batches = [[first, body, motor(1), body], [body, last]]
    for n, datagrams in enumerate(batches):
        BatchRouter(router).route(batch_of(datagrams, [one] * len(datagrams)), 26000, n * S)
    (row,) = [r for r in router.loss(S) if r["channel"] == "example"]
    assert (row["sent"], row["arrived"], row["lost"]) == (3, 3, 0)


def raw_sender_report(sent: int, failed: int = 0, time_ns: int = 1) -> bytes:
    """A SenderReport with any counts: fastavro writes longs beyond int64 too."""
    import io

    import fastavro

    buffer = io.BytesIO()
    buffer.write(loss.SENDER_REPORT_HEADER)
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(loss.SENDER_REPORT), {
        "time": time_ns, "sender": 1, "channel": MOTOR.fingerprint, "sent": sent,
        "failed": failed})
    return buffer.getvalue()


def test_a_sender_report_out_of_range_is_refused_by_reason() -> None:
    long_varint = loss.SENDER_REPORT_HEADER + bytes([2]) + b"\x02" + MOTOR.fingerprint + (
        b"\xff" * 11 + b"\x01") + b"\x00"  # sent: a 12-byte varint, beyond int64
    cases = {"out_of_range": [raw_sender_report(-1), raw_sender_report(5, failed=-1),
                              raw_sender_report(5, time_ns=-1), long_varint],
             "garbled": [loss.sender_report(0, 1, MOTOR.fingerprint, 5, 0)[:-1]],
             "too_long": [loss.SENDER_REPORT_HEADER + b"\0" * loss.MAX_REPORT_BYTES]}
    router = Router(Registry([MOTOR]))
    for reason, datagrams in cases.items():
        for datagram in datagrams:
            try:
                loss.parse_sender_report(datagram)
            except WireError as exc:
                assert exc.reason == reason
            else:
                raise AssertionError(f"{datagram!r} taken")
        data = [motor(i) for i in range(3)]  # another sender's, in the same batch
        routed = BatchRouter(router).route(batch_of(
            [*datagrams, *data], [1] * len(datagrams) + [2] * 3), 26000, 0)
        assert routed.other.rejected == len(datagrams) and not routed.other.reports
        assert len(routed.full) == 3  # taken, and the batch goes on
    assert router.rejected["bad_report"] == 6 and router.loss(0) == []
    assert router.counters["motor"].datagrams == 9


def test_forged_reports_cannot_bend_the_real_senders_row() -> None:
    """The reproductions: a few reports claiming 999,990 lost; a spoofed restart that hid
    500 real losses; reports from 3,000 ports that pushed the real sender's row out."""
    lan = [ipaddress.IPv4Network("10.0.0.0/24")]
    real, forger = (0x0A000005 << 16) | 4000, (0x0A000063 << 16) | 4001
    router = Router(Registry([MOTOR]), allow=lan)
    batches = BatchRouter(router)
    batches.route(batch_of([loss.sender_report(0, 42, MOTOR.fingerprint, 0, 0)], [real]),
                  26000, 0)
    batches.route(batch_of([motor(i) for i in range(50)], [real] * 50), 26000, S // 2)
    forged = [loss.sender_report(0, 66, MOTOR.fingerprint, n, 0) for n in (0, 999_990)]
    forged.append(loss.sender_report(0, 43, MOTOR.fingerprint, 50, 0))  # "restarted"
    batches.route(batch_of(forged, [forger, forger, real]), 26000, S // 2)
    fake = next(r for r in router.loss(S) if r["source"] == "10.0.0.99:4001")
    assert fake["report_only"] and fake["lost"] <= loss.BURST  # its own row, own address
    batches.route(batch_of([loss.sender_report(0, 42, MOTOR.fingerprint, 550, 0)], [real]),
                  26000, S)
    for start in range(0, 3000, 100):  # 3,000 ports, one report each
        ports = [(0x0A000063 << 16) | (10000 + start + k) for k in range(100)]
        batches.route(batch_of([loss.sender_report(0, 7, MOTOR.fingerprint, 0, 0)] * 100,
                               ports), 26000, S)
    rows = {r["source"]: r for r in router.loss(S)}
    mine = rows["10.0.0.5:4000"]
    assert (mine["sent"], mine["lost"], mine["trust"]) == (550, 500, "allowed")
    assert not mine["report_only"]
    stats = router.statistics()["sender_reports"]
    assert stats["refused"]["epoch_conflict"] == 1 and stats["refused"]["implausible"] == 1
    assert stats["report_only_links"] == loss.REPORT_ONLY_LINKS
    assert stats["evicted"]["data"] == 0


def test_status_says_who_reported_a_figure_and_how_far_to_trust_it() -> None:
    from speeddata.cli.render import format_loss
    from speeddata.snapshots import LossRow

    row = {"source": "10.0.0.99:4001", "channel": "motor", "sent": 11_000, "lost": 11_000,
           "lost_percent": 100.0, "recent_sent": 0, "recent_lost": 0, "failed": 0,
           "report_only": True, "unverified": 988_990, "trust": "outside allow"}
    assert format_loss(LossRow(**row)) == (
        "10.0.0.99:4001 motor: sent 11000, lost 11000 (100.0 %) [reports only, no data "
        "arrived from it; 988990 more claimed sent than plausible, not counted; reported "
        "from outside [relay] allow: cannot be trusted]")
    plain = {**row, "report_only": False, "unverified": 0, "trust": "allowed"}
    assert format_loss(LossRow(**plain)).endswith("(100.0 %)")


def test_v2_reports_carry_the_clock_and_v1_still_counts() -> None:
    v2 = loss.sender_report(5, 77, MOTOR.fingerprint, 1000, 3, clock=(3_200_000_000, 150))
    assert v2[:10] == loss.SENDER_REPORT_V2_HEADER != loss.SENDER_REPORT_HEADER
    assert loss.parse_sender_report(v2) == loss.SenderReport(
        5, 77, MOTOR.fingerprint, 1000, 3, 3_200_000_000, 150)
    unmeasured = loss.parse_sender_report(
        loss.sender_report(5, 77, MOTOR.fingerprint, 1, 0, clock=(0, -1)))
    assert unmeasured.offset_ns is None and unmeasured.uncertainty_ns is None
    assert loss.parse_sender_report(loss.sender_report(5, 77, MOTOR.fingerprint, 1, 0)
                                    ).uncertainty_ns is None
    for clock in ((loss.MAX_OFFSET_NS + 1, 0), (0, -2), (0, loss.MAX_UNCERTAINTY_NS + 1)):
        with pytest.raises(WireError) as caught:
            loss.parse_sender_report(loss.sender_report(5, 77, MOTOR.fingerprint, 1, 0,
                                                        clock=clock))
        assert caught.value.reason == "bad_clock"
    with pytest.raises(WireError):
        loss.parse_sender_report(v2[:-1])


def test_a_forged_clock_moves_no_channel_it_does_not_carry() -> None:
    """The offset is kept only on a link that carried the channel's data: a report
    from another address (or port) claiming a clock for the channel is counted on its
    own report-only row, and never reaches the series the pivot corrects with."""
    real, forger = (0x0A000005 << 16) | 4000, (0x0A000063 << 16) | 4001
    router = Router(Registry([MOTOR]))
    batches = BatchRouter(router)
    batches.route(batch_of([motor(i) for i in range(5)], [real] * 5), 26000, S)
    batches.route(batch_of([
        loss.sender_report(0, 42, MOTOR.fingerprint, 5, 0, clock=(3 * S, 100_000)),
        loss.sender_report(0, 66, MOTOR.fingerprint, 0, 0, clock=(-1000 * S, 1))],
        [real, forger]), 26000, 2 * S)
    rows = {r["source"]: r for r in router.loss(2 * S)}
    assert rows["10.0.0.5:4000"]["clock_offset_ns"] == 3 * S
    assert rows["10.0.0.99:4001"]["clock_offset_ns"] is None
    assert list(router.clock_points) == [(2 * S, "10.0.0.5:4000", "motor", 3 * S, 100_000)]
    # and a garbled v2 report is refused like any bad report
    batches.route(batch_of([loss.sender_report(0, 42, MOTOR.fingerprint, 5, 0,
                                               clock=(0, -7))], [real]), 26000, 3 * S)
    assert router.rejected["bad_report"] == 1


def test_the_relay_answers_probes_apart_from_data() -> None:
    from speeddata import clocks

    real = (0x0A000005 << 16) | 4000
    router = Router(Registry([MOTOR]))
    request = clocks.encode(b"n" * 8, 123)
    out = BatchRouter(router).route(batch_of([motor(0), request, clocks.encode(
        b"n" * 8, 1, 2, 3)], [real] * 3), 26000, S)
    assert out.other.probes == [(real, clocks.parse(request))]
    assert out.other.probed == 2 and out.other.rejected == 0
    assert len(out.full) == 1 and router.counters["motor"].datagrams == 1
    assert router.statistics()["time_probes"]["refused"]["not_request"] == 1


def test_probes_from_a_host_allow_does_not_list_are_not_answered() -> None:
    from speeddata import clocks

    inside, outside = (0x0A000005 << 16) | 4000, (0xC0A80009 << 16) | 4000
    router = Router(Registry([MOTOR]), allow=[ipaddress.IPv4Network("10.0.0.0/24")])
    request = clocks.encode(b"n" * 8, 123)
    out = BatchRouter(router).route(batch_of([request, request], [inside, outside]), 26000, S)
    assert [sender for sender, _ in out.other.probes] == [inside]
    assert router.rejected["not_allowed"] == 1
