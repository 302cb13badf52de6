"""The time probe and the offset estimate, driven by fake clocks (no sockets)."""

from __future__ import annotations

import io
import random

import fastavro
import pytest

from speeddata import clocks
from speeddata.errors import WireError

SECOND = 10**9


class Path:
    """A fake network path: one-way delays in ns, the sender's clock ``offset`` ahead."""

    def __init__(self, offset: int, out: int, back: int, turnaround: int = 20_000) -> None:
        self.offset, self.out, self.back, self.turnaround = offset, out, back, turnaround

    def exchange(self, prober: clocks.Prober, true_ns: int) -> clocks.Estimate | None:
        request = prober.request(true_ns + self.offset, true_ns / 1e9)
        probe = clocks.parse(request)
        t1 = true_ns + self.out
        t2 = t1 + self.turnaround
        return prober.take(clocks.answer(probe, t1, t2), t2 + self.back + self.offset)


def test_the_layout_is_fixed_and_avro() -> None:
    """42 bytes, int64 little-endian stamps a C sender writes with memcpy, and an
    ordinary Avro single-object datagram of the reserved schema (fastavro reads it)."""
    datagram = clocks.encode(b"ABCDEFGH", 1, 2, -3)
    assert len(datagram) == clocks.PROBE_SIZE == 42
    assert datagram[10:] == b"ABCDEFGH" + (1).to_bytes(8, "little") + (2).to_bytes(
        8, "little") + (-3).to_bytes(8, "little", signed=True)
    record = fastavro.schemaless_reader(io.BytesIO(datagram[10:]),
                                        fastavro.parse_schema(clocks.TIME_PROBE), None)
    assert record["nonce"] == b"ABCDEFGH" and record["t0"] == (1).to_bytes(8, "little")
    assert clocks.parse(datagram) == clocks.Probe(b"ABCDEFGH", 1, 2, -3)


@pytest.mark.parametrize("datagram, reason", [
    (clocks.encode(b"n" * 8, 1)[:-1], "bad_size"),
    (clocks.encode(b"n" * 8, 1) + b"\0", "bad_size"),
    (b"\xc3\x01" + b"\0" * 40, "not_a_probe"),
])
def test_hostile_probes_are_refused_with_a_reason(datagram: bytes, reason: str) -> None:
    with pytest.raises(WireError) as caught:
        clocks.parse(datagram)
    assert caught.value.reason == reason


def test_a_symmetric_path_gives_the_offset_exactly() -> None:
    prober = clocks.Prober()
    best = Path(3_200_000_000, 150_000, 150_000).exchange(prober, 1000 * SECOND)
    assert best is not None and best.offset_ns == 3_200_000_000
    assert best.round_trip_ns == 300_000 and best.uncertainty_ns == 150_000


def test_asymmetry_moves_the_estimate_by_half_of_it_within_the_uncertainty() -> None:
    """The one error no probe can see: the estimate is off by (out - back) / 2, which is
    never more than half the round trip, the uncertainty it says."""
    prober = clocks.Prober()
    best = Path(-5 * SECOND, 9_000_000, 1_000_000).exchange(prober, 1000 * SECOND)
    assert best is not None
    assert best.offset_ns - -5 * SECOND == -(9_000_000 - 1_000_000) // 2
    assert abs(best.offset_ns - -5 * SECOND) <= best.uncertainty_ns


def test_the_lowest_round_trip_of_recent_probes_wins() -> None:
    """Queues delay some probes by up to 50 ms, one way or the other; the estimate
    comes from the quickest probe of the last ``KEEP``, so it is as good as that one."""
    rng = random.Random(7)
    prober = clocks.Prober()
    offset = 3_200_000_000
    for k in range(40):
        delay = 100_000 if k == 17 else 100_000 + rng.randrange(50_000_000)
        out, back = (delay, 100_000) if rng.random() < 0.5 else (100_000, delay)
        Path(offset, out, back).exchange(prober, (1000 + k) * SECOND)
        if k == 17:
            assert prober.estimate().offset_ns == offset  # type: ignore[union-attr]
    best = prober.estimate()
    assert best is not None and abs(best.offset_ns - offset) <= best.uncertainty_ns
    assert len(prober.estimator.samples) == clocks.KEEP  # the quick one aged out by now


def test_answers_that_name_no_probe_of_ours_are_refused() -> None:
    prober = clocks.Prober()
    request = prober.request(5 * SECOND, 0.0)
    probe = clocks.parse(request)
    t1 = 5 * SECOND
    assert prober.take(clocks.answer(clocks.Probe(b"x" * 8, probe.t0, 0, 0), t1, t1),
                       t1) is None  # a guessed nonce
    assert prober.take(clocks.answer(clocks.Probe(probe.nonce, probe.t0 + 1, 0, 0), t1, t1),
                       t1) is None  # the right nonce, another t0
    assert prober.take(request, t1) is None  # a request is not an answer
    assert prober.take(clocks.answer(probe, t1 + 2 * SECOND, t1), t1) is None  # t2 < t1
    assert prober.take(clocks.answer(probe, t1, t1), probe.t0 + 6 * SECOND) is None  # slow
    assert prober.refused == {"unknown_nonce": 2, "not_an_answer": 1, "bad_stamps": 1,
                              "slow": 1, "garbled": 0}
    assert prober.estimate() is None
    assert prober.take(clocks.answer(probe, t1, t1), t1 + 1000) is not None  # the real one
    assert prober.take(clocks.answer(probe, t1, t1), t1 + 1000) is None  # and a copy of it
    assert prober.refused["unknown_nonce"] == 3 and prober.answered == 1


def test_bursts_a_few_times_a_minute() -> None:
    prober = clocks.Prober(seconds=10.0, burst=4)
    sent = [t / 100 for t in range(0, 3000) if prober.due(t / 100)
            and prober.request(0, t / 100)]
    assert len(sent) == 12  # 30 s: three bursts of four
    assert sent[:4] == [0.0, 0.02, 0.04, 0.06] and sent[4] == pytest.approx(10.06)
    assert len(prober.outstanding) <= clocks.MAX_OUTSTANDING
    assert prober.waiting(20.5) and not prober.waiting(21.3)  # unanswered ones forgotten


def test_the_relay_answers_requests_within_a_budget_per_address() -> None:
    budget = clocks.ProbeBudget(per_address_hz=10, burst=20, total_hz=100)
    request = clocks.encode(b"n" * 8, 1)
    one = (0x7F000001 << 16) | 5000
    now = 1000 * SECOND
    answered = sum(budget.take(request, now, one) is not None for _ in range(50))
    assert answered == 20 and budget.refused["rate"] == 30
    other_port = (0x7F000001 << 16) | 5001  # the same host on another port: same bucket
    assert budget.take(request, now, other_port) is None
    assert budget.take(request, now + SECOND, one) is not None  # refilled at 10/s
    # many hosts: the total budget holds (100/s, so at most ~100 more at once)
    more = sum(budget.take(request, now + SECOND, (ip << 16) | 1) is not None
               for ip in range(1, 400))
    assert more <= 100 and budget.refused["busy"] == 399 - more
    assert budget.take(clocks.answer(clocks.parse(request), 5, 6), now, one) is None
    assert budget.take(request[:-1], now, one) is None
    assert budget.take(request, now, None) is None
    assert budget.refused["not_request"] == 1 and budget.refused["garbled"] == 1
    assert budget.refused["no_address"] == 1
    assert len(budget.buckets) <= clocks.MAX_ADDRESSES


def test_an_answer_whose_offset_no_report_could_carry_is_refused() -> None:
    """Beyond loss.MAX_OFFSET_NS the relay would refuse every v2 report (and the loss
    counts in it): the sender refuses the answer instead, as bad stamps."""
    prober = clocks.Prober()
    probe = clocks.parse(prober.request(10**15, 0.0))
    t1 = 10**15 + 2 * 10**18  # the relay 2e18 ns ahead: an offset of -2e18
    assert prober.take(clocks.answer(probe, t1, t1), 10**15 + 1000) is None
    assert prober.refused["bad_stamps"] == 1 and prober.estimate() is None
