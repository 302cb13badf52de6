"""The relay loop's core and its worker, with a fake clock and no sleeps: batches in,
writes and forwards out; timers due at exact times; slow jobs queued one per kind."""

from __future__ import annotations

import threading

import pytest

from speeddata.relay.engine import STALL_BOUNDS_MS, RelayCore, StallHistogram, Timers
from speeddata.relay.jobs import Jobs
from speeddata.schemas import Registry, channel_from_schema
from speeddata.sender import Encoder
from tests.relay.test_core import EXAMPLE, MOTOR, example_body, motor, received

PERIODS = {"watch": 0.25, "status": 1.0, "fsync": 5.0, "retention": 10.0}


def core(now: float = 100.0, **first: float) -> RelayCore:
    from speeddata.relay.core import Router

    return RelayCore(Router(Registry([MOTOR, EXAMPLE]), {7: EXAMPLE}), PERIODS, now, first)


def test_a_batch_becomes_one_write_per_channel_and_forwards_by_slot() -> None:
    c = core()
    actions = c.handle_batch(received([bytes(motor(1)), bytes(motor(2)),
                                       b"\xc3\x01" + bytes(8) + b"body"]),
                             26000, 5)
    assert [(ch.name, bytes(payload), n) for ch, payload, n in actions.writes] == [
        ("motor", bytes(motor(1))[10:] + bytes(motor(2))[10:], 2)]
    assert actions.routed.full.tolist() == [0, 1]
    assert c.counts["batches"] == 1 and c.counts["datagrams"] == 3
    assert c.counts["cached_bytes"] == 2 * (len(motor(1)) - 10)
    assert c.router.rejected["unknown_schema"] == 1


def test_legacy_bodies_are_written_and_forwarded_with_their_header() -> None:
    c = core()
    actions = c.handle_batch(received([bytes(example_body(3))]), 7, 5)
    assert [(ch.name, n) for ch, _, n in actions.writes] == [("example", 1)]
    assert len(actions.routed.other.full) == 1


def test_an_empty_batch_does_nothing() -> None:
    c = core()
    actions = c.handle_batch(received([]), 26000, 5)
    assert actions.writes == [] and c.counts["batches"] == 0


def test_timers_fire_at_their_deadlines_and_once_however_late() -> None:
    c = core(100.0, status=0.0, retention=0.0)
    assert c.get_timer() == 100.0
    assert sorted(c.handle_timer(100.0)) == ["retention", "status"]
    assert c.get_timer() == 100.25
    assert c.handle_timer(100.2) == []
    assert c.handle_timer(100.25) == ["watch"]
    # a loop 30 s late runs each job once, and the next round is one period later
    assert sorted(c.handle_timer(130.0)) == ["fsync", "retention", "status", "watch"]
    assert c.get_timer() == 130.25
    assert c.timers.deadlines["retention"] == 140.0


def test_no_timers_means_wait_for_datagrams_only() -> None:
    assert Timers({}, 0.0).next() == float("inf")


def test_a_new_registry_routes_from_the_next_batch_on() -> None:
    rig = channel_from_schema({"type": "record", "name": "rig", "fields": [
        {"name": "time", "type": "long"}, {"name": "pressure", "type": "double"}]})
    datagram = Encoder(rig).encode({"time": 5, "pressure": 2.5})
    c = core()
    assert c.handle_batch(received([datagram]), 26000, 1).writes == []
    c.swap_registry(Registry([MOTOR, EXAMPLE, rig]))
    assert [ch.name for ch, _, _ in c.handle_batch(received([datagram]), 26000, 2).writes] == [
        "rig"]
    assert c.counts["registry_swaps"] == 1


def test_the_stall_histogram_counts_each_iteration_in_its_log_bucket() -> None:
    h = StallHistogram()
    for seconds in (0.00005, 0.0001, 0.0002, 0.002, 0.35, 5.0):
        h.record(seconds)
    stats = h.statistics()
    assert stats["bounds_ms"] == list(STALL_BOUNDS_MS)
    # <=0.1 twice (0.05, 0.1), <=0.3, <=3, <=1000, and the open bucket
    assert stats["counts"] == [2, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1]
    assert stats["longest_ms"] == 5000.0
    c = core()
    c.record_stall(0.012)
    assert c.statistics()["loop_stalls"]["counts"][5] == 1  # (10, 30] ms


def test_status_shows_the_stall_histogram_on_one_line() -> None:
    from speeddata.cli.render import format_stalls
    from speeddata.snapshots import Stalls

    h = StallHistogram()
    for seconds in (0.00005, 0.002, 0.35):
        h.record(seconds)
    assert format_stalls(Stalls(**h.statistics())) == (
        "loop stalls (ms): <=0.1:1 <=0.3:0 <=1:0 <=3:1 <=10:0 <=30:0 <=100:0 <=300:0 "
        "<=1000:1; longest 350.0 ms")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_at_most_one_job_of_each_kind_waits_and_the_rest_are_counted() -> None:
    jobs = Jobs(FakeClock())
    done: list[str] = []
    assert jobs.submit("status", lambda: done.append("status 1"))
    assert not jobs.submit("status", lambda: done.append("status 2"))  # one waits already
    assert jobs.submit("retention", lambda: done.append("retention"))
    assert jobs.pending() == ["status", "retention"]
    assert jobs.run_one() == "status"
    assert jobs.submit("status", lambda: done.append("status 3"))  # the first one ran
    while jobs.run_one():
        pass
    assert done == ["status 1", "retention", "status 3"]
    stats = jobs.statistics()
    assert stats["submitted"] == {"status": 2, "retention": 1}
    assert stats["skipped"] == {"status": 1} and stats["pending"] == []


def test_a_status_job_behind_a_long_one_writes_the_newest_snapshot() -> None:
    """A status job waiting behind a 4 s retention scan: the snapshots taken meanwhile
    replace it, so the file written after the scan is not 4 s old (the stall benchmark
    read 0 kernel drops from such a file while the relay had dropped 56,582)."""
    jobs = Jobs(FakeClock())
    written: list[int] = []
    jobs.submit("retention", lambda: None)
    for snapshot in range(1, 5):
        jobs.submit("status", lambda s=snapshot: written.append(s), newest=True)
    assert jobs.pending() == ["retention", "status"]
    while jobs.run_one():
        pass
    assert written == [4]
    assert jobs.statistics()["skipped"] == {"status": 3}


def test_a_failing_job_is_counted_and_the_worker_goes_on() -> None:
    clock = FakeClock()
    jobs = Jobs(clock)

    def slow_then_fail() -> None:
        clock.now += 0.331  # a retention scan of 10,000 files
        raise OSError("disk gone")

    jobs.submit("retention", slow_then_fail)
    jobs.submit("status", lambda: None)
    assert jobs.run_one() == "retention" and jobs.run_one() == "status"
    stats = jobs.statistics()
    assert stats["failed"] == {"retention": 1}
    assert stats["longest_ms"] == {"retention": pytest.approx(331.0), "status": 0.0}


def test_the_worker_thread_runs_what_waits_and_finishes_it_at_stop() -> None:
    jobs = Jobs()
    gate, ran = threading.Event(), []
    jobs.start()
    jobs.submit("channels", gate.wait)  # blocks the worker until the test lets it go
    jobs.submit("status", lambda: ran.append("status"))
    gate.set()
    jobs.stop()
    assert ran == ["status"] and jobs.pending() == []
