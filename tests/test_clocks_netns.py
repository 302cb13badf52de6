"""Clocks across a routed path with a slower way out than back, where the kernel has no
delay qdisc (no ``sch_netem``, ``fq``, ``cake`` or ``etf`` here; ``tbf`` shapes a rate,
it does not delay): three network namespaces of the test's own, a board, a router and a
relay, joined by veth pairs made and deleted here (never the host's interfaces), the
router forwarding the board's UDP to the relay 20 ms late and the answers back 5 ms
late (``tests.harness.asymmetric``). A Python sender and the C example 3.2 s ahead, on
the board, estimate their offset within the added asymmetry, off the way it says. The
``tc netem`` test in test_clocks_e2e.py stays for kernels that have it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from speeddata import status
from speeddata.config import write_file
from tests.helpers import PROJECT, SCHEMAS, TIMEOUT, relay_settings, run_or_skip, wait_until
from tests.test_clocks_e2e import AHEAD_NS, BACK_S, BOARD, MS, OUT_S, check_asymmetric

pytestmark = pytest.mark.e2e
BOARD_IP, ROUTER_FRONT, ROUTER_UP, RELAY_IP = "10.213.10.2", "10.213.10.1", "10.213.11.1", \
    "10.213.11.2"
RELAY_PORT = 26100  # the relay namespace's own: nothing else listens there


@pytest.fixture
def namespaces() -> Iterator[dict[str, str]]:
    """Board, router and relay namespaces, the board and the relay each on a veth pair
    to the router, deleted (with their veths) after the test."""
    tag = os.getpid() % 100_000
    names = {"board": f"sdb{tag}", "router": f"sdr{tag}", "relay": f"sdl{tag}"}
    b, r, rl = names["board"], names["router"], names["relay"]
    def inside(ns: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", ns, "ip", *cmd]

    steps = [["ip", "netns", "add", n] for n in names.values()]
    steps += [inside(r, "link", "add", "vrb", "type", "veth", "peer", "name", "vbr"),
              inside(r, "link", "set", "dev", "vbr", "netns", b),
              inside(r, "link", "add", "vrl", "type", "veth", "peer", "name", "vlr"),
              inside(r, "link", "set", "dev", "vlr", "netns", rl),
              inside(b, "addr", "add", f"{BOARD_IP}/24", "dev", "vbr"),
              inside(r, "addr", "add", f"{ROUTER_FRONT}/24", "dev", "vrb"),
              inside(r, "addr", "add", f"{ROUTER_UP}/24", "dev", "vrl"),
              inside(rl, "addr", "add", f"{RELAY_IP}/24", "dev", "vlr")]
    steps += [inside(n, "link", "set", "dev", dev, "up") for n, dev in (
        (b, "vbr"), (b, "lo"), (r, "vrb"), (r, "vrl"), (r, "lo"), (rl, "vlr"), (rl, "lo"))]
    steps += [inside(b, "route", "add", "default", "via", ROUTER_FRONT),
              inside(rl, "route", "add", "default", "via", ROUTER_UP)]  # multicast goes out
    try:
        run_or_skip(steps, "three network namespaces joined by veth pairs")
        yield names
    finally:
        for n in names.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def start(ns: str, *argv: str, **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=PROJECT, **kwargs)


@pytest.fixture
def path(namespaces: dict[str, str], tmp_path: Path) -> Iterator[tuple[dict[str, str], int]]:
    """The relay running in its namespace and the router's delaying forwarder: the
    namespaces and the port the board sends to."""
    settings = relay_settings(tmp_path, relay={"host": "0.0.0.0", "port": RELAY_PORT})
    config = write_file(tmp_path / "relay.toml", settings)
    cache = Path(settings["cache"]["dir"])
    with (tmp_path / "relay.log").open("w") as log:
        relay = start(namespaces["relay"], sys.executable, "-m", "speeddata", "relay",
                      "--config", str(config), stdout=log, stderr=subprocess.STDOUT)
    forwarder = start(namespaces["router"], sys.executable, "-m", "tests.harness.asymmetric",
                      ROUTER_FRONT, ROUTER_UP, RELAY_IP, str(RELAY_PORT), str(OUT_S),
                      str(BACK_S), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (s := status.read_all(cache).get("relay")) and s["running"]
                   and s["pid"] == relay.pid, what="the relay in its namespace")
        assert forwarder.stdout is not None
        yield namespaces, int(forwarder.stdout.readline())
    finally:
        assert forwarder.stdin is not None
        forwarder.stdin.close()
        forwarder.wait(TIMEOUT)
        relay.terminate()
        relay.wait(TIMEOUT)


def test_a_python_board_behind_a_router_estimates_within_the_asymmetry(
        path: tuple[dict[str, str], int]) -> None:
    namespaces, port = path
    done = subprocess.run(
        ["ip", "netns", "exec", namespaces["board"], sys.executable, "-c", BOARD, ROUTER_FRONT,
         str(port), str(SCHEMAS / "example.avsc"), str(AHEAD_NS)],
        capture_output=True, text=True, timeout=30, cwd=PROJECT)
    assert done.returncode == 0, done.stderr
    offset, uncertainty, round_trip = json.loads(done.stdout)
    assert abs(round_trip - (OUT_S + BACK_S) * 1e9) < 3 * MS
    check_asymmetric(SimpleNamespace(offset_ns=offset, uncertainty_ns=uncertainty))


@pytest.mark.parametrize("target", ["x86-64", "armhf"])
def test_a_c_board_behind_a_router_estimates_within_the_asymmetry(
        path: tuple[dict[str, str], int], tmp_path: Path, target: str) -> None:
    """The C example, built for x86-64, and for armhf and run under qemu-arm-static."""
    from tests.test_codegen import QEMU_ENV
    from tests.test_codegen_clocks_e2e import build_example

    namespaces, port = path
    exe, runner = build_example(target, tmp_path)
    done = subprocess.run(
        ["ip", "netns", "exec", namespaces["board"], *runner, str(exe), ROUTER_FRONT,
         str(port), "50", "100"], capture_output=True, text=True, timeout=30,
        env={**os.environ, **QEMU_ENV, "SPEEDDATA_CLOCK_OFFSET_NS": str(AHEAD_NS)})
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "sent 50, failed 0"
    words = second.split()
    offset, uncertainty = int(words[1]), int(words[4])
    assert abs(2 * uncertainty - (OUT_S + BACK_S) * 1e9) < 3 * MS  # half the round trip
    check_asymmetric(SimpleNamespace(offset_ns=offset, uncertainty_ns=uncertainty))
