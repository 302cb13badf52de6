"""The seal itself (tests/seal.py), on ports and groups of its own: it finds what the
session sends or binds there, in this process and in the ones it starts, and leaves a
running instance's traffic alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from speeddata.bench.services import free_port
from tests.helpers import TIMEOUT, wait_until
from tests.seal import Seal

NETWORK = "239.255.108.0/24"  # this suite's own, never the defaults
GROUP = "239.255.108.1"

# Sends to the group a datagram a second until killed, from one socket.
SENDER = """
import socket, sys, time
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
print("ready", flush=True)
while True:
    out.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.05)
"""


def _ports() -> range:
    """Two ports, as free as can be: the first for unicast, the second for the group."""
    for _ in range(20):
        first = free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("0.0.0.0", first + 1))
            return range(first, first + 2)
        except OSError:
            continue
    raise AssertionError("no two free ports in a row")


@pytest.fixture(params=["raw", "plain"])
def seal(request: pytest.FixtureRequest) -> Iterator[Seal]:
    if request.param == "raw" and os.geteuid() != 0:
        pytest.skip("a raw socket needs root")
    token = os.environ.get("SPEEDDATA_TEST_SEAL")
    watching = Seal(_ports(), NETWORK, raw=request.param == "raw").start()
    yield watching
    watching.stop()
    if token:  # the session's seal keeps its token for the processes started after this
        os.environ["SPEEDDATA_TEST_SEAL"] = token


def _group_sender(seal: Seal, **popen: object) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", SENDER, GROUP, str(seal.ports[1])],
                               stdout=subprocess.PIPE, text=True, **popen)  # type: ignore[call-overload]
    assert process.stdout.readline() == "ready\n"
    return process


def test_a_datagram_to_a_watched_port_from_this_process_is_found(seal: Seal) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        out.bind(("127.0.0.1", 0))

        def found() -> list:
            out.sendto(b"x", ("127.0.0.1", seal.ports[0]))
            return seal.take()

        (finding,) = wait_until(found, what="the seal to find the datagram")
    assert finding.pid == os.getpid()
    assert f"-> {'127.0.0.1' if seal.mode.startswith('raw') else '0.0.0.0'}:" \
           f"{seal.ports[0]}" in finding.what


def test_a_child_sending_to_a_watched_group_is_found_with_its_command(seal: Seal) -> None:
    child = _group_sender(seal)
    try:
        findings = wait_until(seal.take, what="the seal to find the child")
    finally:
        child.kill()
        child.wait(TIMEOUT)
    assert findings[0].pid == child.pid
    assert f"-> {GROUP}:{seal.ports[1]}" in findings[0].what
    assert "-c" in findings[0].command


def test_a_socket_bound_on_a_watched_port_is_found(seal: Seal) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bound:
        bound.bind(("127.0.0.1", seal.ports[1]))
        (finding,) = wait_until(seal.take, what="the seal to find the bound socket")
    assert finding.what == f"a socket bound on 127.0.0.1:{seal.ports[1]}"


def test_a_running_instance_that_is_not_the_sessions_is_left_alone(seal: Seal) -> None:
    """A process outside the session (not a descendant, no token: a ./start) sends to the
    watched group all along: no finding, and the seal knows another instance is there."""
    env = {k: v for k, v in os.environ.items() if k != "SPEEDDATA_TEST_SEAL"}
    daemon = subprocess.run(
        [sys.executable, "-c", "import os, subprocess, sys; "
         "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, "
         "start_new_session=True); print(p.pid)",
         sys.executable, "-c", SENDER, GROUP, str(seal.ports[1])],
        capture_output=True, text=True, env=env, timeout=TIMEOUT, check=True)
    pid = int(daemon.stdout)  # its parent has exited: it is nobody's child here
    try:
        wait_until(lambda: seal.foreign, what="the seal to trace the other instance")
        assert seal.take() == []
    finally:
        os.kill(pid, 9)


def test_only_datagrams_from_this_host_can_be_a_tests() -> None:
    from tests.seal import _local

    assert _local("127.0.0.1")
    assert not _local("198.51.100.7")  # TEST-NET-2: a packet from there came from outside
