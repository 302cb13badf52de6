"""Clocks measured with real processes: a sender whose clock runs 3.2 s ahead is measured
within 1 ms on loopback, the relay keeps its offset series, a flood of probes is held to
its budget and counted."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from speeddata import Sender, clocks
from speeddata.cache.clocks import read_series
from speeddata.schemas import load_file
from tests.harness.asymmetric import AsymmetricPath
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


BEHIND_NS = -1_700_000_000


def test_pivot_corrected_lines_up_two_sources_with_different_clocks(tmp_path: Path) -> None:
    """Two senders, one 3.2 s ahead, one 1.7 s behind, send a record each at the same
    moments; ``pivot --clock corrected`` puts each pair within their uncertainties of
    each other (and of the true time), where ``source`` keeps them 4.9 s apart."""
    import subprocess
    import sys

    import h5py

    relay = start_relay(tmp_path, relay_settings(tmp_path))
    try:
        a = Sender(EXAMPLE, port=relay.port, clock=ahead)
        b = Sender("motor", channels_dir=SCHEMAS, port=relay.port,
                   clock=lambda: time.time_ns() + BEHIND_NS)
        assert a.sync() is not None and b.sync() is not None
        true = []
        for k in range(150):  # 1.5 s: reports with the estimates on the way
            now = time.time_ns()  # one moment, stamped by each source on its own clock
            true.append(now)
            a.send({**record(k), "counter": k, "time": now + AHEAD_NS})
            b.send(time=now + BEHIND_NS, speed=0.0, torque=0.0, current=0.0, voltage=0.0,
                   position=float(k), temperature=0.0)
            time.sleep(0.01)
        a.close()
        b.close()
        wait_until(lambda: all(len(read_series(relay.cache_dir, c, 0, time.time_ns())
                                   .offset_ns) for c in ("example", "motor")),
                   what="both senders' offset series")
    finally:
        relay.stop()

    def pivot(clock: str) -> Path:
        out = tmp_path / clock
        done = subprocess.run(
            [sys.executable, "-m", "speeddata", "pivot", "--start", "-5m", "--clock", clock,
             "--out", str(out), "--config", str(relay.config_path)],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return next(out.glob("*.h5"))

    with h5py.File(pivot("corrected")) as h5:
        assert h5.attrs["clock"] == "corrected"
        ex, mo = h5["example"], h5["motor"]
        assert ex.attrs["clock"] == mo.attrs["clock"] == "corrected"
        order_a = np.argsort(ex["counter"][()])
        order_b = np.argsort(mo["position"][()])
        ta, tb = ex["time"][()][order_a], mo["time"][()][order_b]
        assert len(ta) == len(tb) == 150
        bound = int(ex.attrs["clock_uncertainty_ns"]) + int(mo.attrs["clock_uncertainty_ns"])
        skew = np.abs(ta - tb)
        assert skew.max() <= bound, (skew.max(), bound)
        assert np.abs(ta - np.array(true)).max() <= int(ex.attrs["clock_uncertainty_ns"]) + MS
        series = ex["clock"]
        assert abs(int(series["offset"][-1]) - AHEAD_NS) < MS
        assert series["source"].asstr()[0].startswith("127.0.0.1:")
        assert "relay's clock" in ex["time"].attrs["doc"]
    with h5py.File(pivot("source")) as h5:
        gap = h5["example"]["time"][()].min() - h5["motor"]["time"][()].min()
        assert abs(gap - (AHEAD_NS - BEHIND_NS)) < 10 * MS
        assert h5["example"].attrs["clock"] == "source"


OUT_S, BACK_S = 0.020, 0.005  # 15 ms of asymmetry: the estimate is off by about 7.5 ms


def check_asymmetric(best: Any) -> None:
    error = best.offset_ns - AHEAD_NS
    half = (OUT_S - BACK_S) / 2 * 1e9
    assert abs(error) <= best.uncertainty_ns  # the bound it states holds
    assert abs(error) <= half + MS  # within the added asymmetry (half of it, in theory)
    assert abs(error + half) <= 2 * MS  # and off the way the slow way out says


def test_an_asymmetric_path_moves_the_estimate_by_half_its_asymmetry(tmp_path: Path) -> None:
    relay = start_relay(tmp_path, relay_settings(tmp_path))
    path = AsymmetricPath(("127.0.0.1", relay.port), OUT_S, BACK_S)
    try:
        with Sender(EXAMPLE, port=path.port, clock=ahead) as sender:
            best = sender.sync(timeout=2.0)
        assert best is not None
        assert abs(best.round_trip_ns - (OUT_S + BACK_S) * 1e9) < 3 * MS
        check_asymmetric(best)
    finally:
        path.close()
        relay.stop()


BOARD = """
import json, sys, time
from pathlib import Path
from speeddata import Sender
from speeddata.schemas import load_file
sender = Sender(load_file(Path(sys.argv[3])), host=sys.argv[1], port=int(sys.argv[2]),
                clock=lambda: time.time_ns() + int(sys.argv[4]))
best = sender.sync(timeout=3.0)
print(json.dumps(None if best is None else [best.offset_ns, best.uncertainty_ns,
                                            best.round_trip_ns]))
"""


def test_in_a_namespace_with_netem_delay_the_estimate_is_within_the_asymmetry(
        tmp_path: Path) -> None:
    """A board in a network namespace behind a veth pair, ``tc netem`` delaying its way
    out by 20 ms and the way back by 5 ms (skipped where the kernel has no netem)."""
    import os
    import subprocess
    import sys
    from types import SimpleNamespace

    from speeddata.bench.services import free_port
    from tests.helpers import run_or_skip

    host_address, board_address = "10.213.9.1", "10.213.9.2"
    name = f"sdclock{os.getpid()}"
    host_end, board_end = f"sdch{os.getpid()}"[:15], f"sdcb{os.getpid()}"[:15]
    steps = [["ip", "netns", "add", name],
             ["ip", "link", "add", host_end, "type", "veth", "peer", "name", board_end],
             ["ip", "link", "set", board_end, "netns", name],
             ["ip", "addr", "add", f"{host_address}/24", "dev", host_end],
             ["ip", "link", "set", host_end, "up"],
             ["ip", "-n", name, "addr", "add", f"{board_address}/24", "dev", board_end],
             ["ip", "-n", name, "link", "set", board_end, "up"],
             ["ip", "-n", name, "link", "set", "lo", "up"],
             ["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", board_end, "root",
              "netem", "delay", f"{OUT_S * 1000:g}ms"],
             ["tc", "qdisc", "add", "dev", host_end, "root", "netem", "delay",
              f"{BACK_S * 1000:g}ms"]]
    relay = None
    try:
        run_or_skip(steps, "a network namespace with tc netem")
        relay = start_relay(tmp_path, relay_settings(
            tmp_path, relay={"host": "0.0.0.0", "port": free_port()}))
        done = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c", BOARD, host_address,
             str(relay.port), str(SCHEMAS / "example.avsc"), str(AHEAD_NS)],
            capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        offset, uncertainty, round_trip = json.loads(done.stdout)
        assert abs(round_trip - (OUT_S + BACK_S) * 1e9) < 3 * MS
        check_asymmetric(SimpleNamespace(offset_ns=offset, uncertainty_ns=uncertainty))
    finally:
        if relay is not None:
            relay.stop()
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_the_channels_page_shows_each_channels_source_clock(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from tests.helpers import start_serve
    from tests.stripchart.test_page import ARGS, CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is missing: run ./install --dev")
    relay = start_relay(tmp_path, relay_settings(tmp_path))
    serve = start_serve(tmp_path, relay.config_path)
    try:
        with Sender(EXAMPLE, port=relay.port, clock=ahead) as sender:
            assert sender.sync() is not None
            for i in range(20):
                sender.send(record(i))
        wait_until(lambda: any(r["clock_offset_ns"] for r in relay.snapshot()["senders"]),
                   what="the sender's clock in the relay's status")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 600})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(serve.url + "channels.html")
                page.wait_for_function(
                    "() => /clock \\+3\\.2 s \\(± 0\\.[0-9] ms\\)/.test(document.querySelector("
                    "'#channels tr[data-channel=example]')?.textContent ?? '')", timeout=20_000)
                motor = page.locator("#channels tr[data-channel=motor]").inner_text()
                assert "not measured" in motor
                page.screenshot(path=str(tmp_path / "clocks.png"), full_page=True)
                assert errors == []
            finally:
                browser.close()
    finally:
        serve.stop()
        relay.stop()


def test_a_sender_that_sends_seldom_still_measures_a_short_round_trip(tmp_path: Path) -> None:
    """The answers wait 0.2 s on the socket until the next send reads them; stamped with
    the kernel's receive time, their round trip is still the path's, not 0.2 s."""
    relay = start_relay(tmp_path, relay_settings(tmp_path))
    try:
        with Sender(EXAMPLE, port=relay.port, clock=ahead, probe=60.0) as sender:
            sender.prober.burst = 1  # type: ignore[union-attr]
            sender.send(record(0))  # the probe goes out with the first send
            time.sleep(0.2)
            sender.send(record(1))  # and its answer is read at the next
            best = sender.clock_estimate()
        assert best is not None, sender.statistics()
        if not sender._kernel_stamps:
            pytest.skip("no kernel receive timestamps on this platform")
        assert best.round_trip_ns < 20 * MS and abs(best.offset_ns - AHEAD_NS) < 10 * MS
    finally:
        relay.stop()
