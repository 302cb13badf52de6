"""Clocks measured with real processes: a sender whose clock runs 3.2 s ahead is measured
within 1 ms on loopback, the relay keeps its offset series, a flood of probes is held to
its budget and counted."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from speeddata import Sender, clocks
from speeddata.cache.clocks import read_series
from speeddata.schemas import load_file
from tests.helpers import SCHEMAS, relay_settings, start_relay, wait_until

pytestmark = pytest.mark.e2e
EXAMPLE = load_file(SCHEMAS / "example.avsc")
AHEAD_NS = 3_200_000_000
MS = 1_000_000


def record(i: int) -> dict[str, Any]:
    return {"message": "m", "counter": i, "sine_wave": 0.0, "ramp": 0.0,
            "square_wave": 0.0, "noise": 0.0}


def ahead() -> int:
    return time.time_ns() + AHEAD_NS


def test_a_clock_3_2_s_ahead_is_measured_within_a_millisecond(tmp_path: Path) -> None:
    relay = start_relay(tmp_path, relay_settings(tmp_path))
    try:
        sender = Sender(EXAMPLE, port=relay.port, clock=ahead)
        best = sender.sync()
        assert best is not None, sender.statistics()
        assert abs(best.offset_ns - AHEAD_NS) < MS, best
        assert best.uncertainty_ns < MS
        # the probes go on while it sends, and the estimate travels in its reports
        for i in range(300):
            sender.send(record(i))
            time.sleep(0.005)
        port = sender._socket.getsockname()[1]
        sender.close()

        def row() -> dict[str, Any] | None:
            rows = [r for r in relay.snapshot().get("senders", [])
                    if r["source"] == f"127.0.0.1:{port}" and r["clock_offset_ns"] is not None]
            return rows[0] if rows else None

        found = wait_until(row, what="the sender's clock in the relay's status")
        assert abs(found["clock_offset_ns"] - AHEAD_NS) < MS
        assert 0 <= found["clock_uncertainty_ns"] < MS
        assert sender.statistics()["probes_answered"] >= clocks.BURST
        snap = wait_until(lambda: (s := relay.snapshot())["channels"].get("example", {}).get(
            "datagrams") == 300 and s, what="the 300 records counted")  # probes are not data
        assert snap["time_probes"]["answered"] >= clocks.BURST
        assert snap["rejected"]["unknown_schema"] == 0

        def series() -> Any:
            found = read_series(relay.cache_dir, "example", 0, time.time_ns())
            return found if len(found.offset_ns) else None

        points = wait_until(series, what="the offset series beside the cache")
        assert points.source[0] == f"127.0.0.1:{port}"
        assert abs(int(points.offset_ns[-1]) - AHEAD_NS) < MS
    finally:
        relay.stop()


def test_a_probe_flood_is_held_to_its_budget(tmp_path: Path) -> None:
    """300 requests at once from one host (on many ports) get the per-address burst of
    answers, the rest refused as ``rate``; answers and replies to answers never loop."""
    relay = start_relay(tmp_path, relay_settings(tmp_path))
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for s in socks:
            s.settimeout(0.5)
            for k in range(100):
                s.sendto(clocks.encode(k.to_bytes(8, "little"), 1), ("127.0.0.1", relay.port))
        s.sendto(clocks.encode(b"a" * 8, 1, 5, 6), ("127.0.0.1", relay.port))  # an answer
        answers = 0
        for s in socks:
            try:
                while True:
                    data = s.recv(100)
                    assert len(data) == clocks.PROBE_SIZE and not clocks.parse(data).request
                    answers += 1
            except TimeoutError:
                pass

        def counted() -> dict[str, Any] | None:
            probes = relay.snapshot().get("time_probes", {})
            return probes if sum(probes.get("refused", {}).values()) >= 281 else None

        probes = wait_until(counted, what="the refused probes in the relay's status")
        assert answers == probes["answered"] == clocks.PER_ADDRESS_BURST
        assert probes["refused"]["rate"] == 300 - answers
        assert probes["refused"]["not_request"] == 1
        assert relay.snapshot()["rejected"]["unknown_schema"] == 0
    finally:
        for s in socks:
            s.close()
        relay.stop()
