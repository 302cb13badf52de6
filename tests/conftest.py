from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from speeddata.bench.services import fresh_group
from tests.harness.store import Store, StoreMissing
from tests.helpers import RelayProcess, relay_settings, start_relay
from tests.seal import Seal

SEALS: list[Seal] = []  # the session's seal, for the hooks below


def _loopback_multicast_works() -> bool:
    group = fresh_group()
    from speeddata import multicast

    try:
        sock = multicast.listener(group, "127.0.0.1")
    except Exception:
        return False
    sock.settimeout(2)
    out = multicast.sender("127.0.0.1", 1)
    out.sendto(b"probe", (group.host, group.port))
    try:
        return sock.recv(16) == b"probe"
    except OSError:
        return False
    finally:
        sock.close()
        out.close()


# Tests that start processes, browsers or namespaces: 'pytest -m "not e2e"' is the fast
# tier (seconds). Whole modules by name, and any test using a fixture that starts a relay.
E2E_MODULES = {"test_relay_process", "test_workers_overload", "test_tags_e2e", "test_page",
               "test_server", "test_bench"}
E2E_FIXTURES = {"relay", "stack", "shared_stack", "store"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in E2E_MODULES or E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def loopback_multicast() -> None:
    """Multicast on loopback must work for the relay tests.

    Most Linux kernels deliver it as is; where joining a group on 127.0.0.1 fails, lo
    lacks the MULTICAST flag, and we set it (root is needed, which CI has).
    """
    if _loopback_multicast_works():
        return
    subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=False)
    if not _loopback_multicast_works():
        pytest.exit("multicast on loopback does not work here and 'ip link set lo multicast "
                    "on' did not fix it", returncode=3)


@pytest.fixture(scope="session", autouse=True)
def sealed(loopback_multicast: None) -> Iterator[Seal]:
    """No test may reach a running instance: nothing sent to, or bound on, the default
    ports (26000-26003) or groups (239.255.26.x), by this process or any it starts (see
    tests/seal.py for how, and what it cannot see). Each test is failed for what was
    traced while it ran; what arrives after the last one fails the session here."""
    seal = Seal().start()
    SEALS.append(seal)
    yield seal
    seal.stop()  # kept in SEALS for the terminal summary
    late = seal.take()
    if late:
        pytest.fail("the default ports or groups were used:\n" + "\n".join(map(str, late)),
                    pytrace=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for seal in SEALS:
        seal.test = item.nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A test that used the default ports or groups fails at its teardown, naming them."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "teardown" or not SEALS:
        return
    SEALS[0].drain()
    findings = SEALS[0].take()
    if findings:
        report.outcome = "failed"
        report.longrepr = ("the default ports or groups were used (a running ./start would "
                           "get this): give the test its own, as tests/helpers.py's "
                           "relay_settings does:\n  " + "\n  ".join(map(str, findings)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for seal in SEALS:
        terminalreporter.write_line(f"seal: {seal.mode}")
        for warning in seal.warnings:
            terminalreporter.write_line(f"seal warning: {warning}")


@pytest.fixture(params=["mmsg", "portable"])
def io_path(request: pytest.FixtureRequest) -> str:
    """Every relay test runs on the batch path (recvmmsg/sendmmsg) and the fallback."""
    return request.param


@pytest.fixture
def relay(tmp_path: Path, io_path: str) -> Iterator[RelayProcess]:
    """A real relay process on a free port with its own cache and multicast groups."""
    proc = start_relay(tmp_path, relay_settings(tmp_path, relay={"io": io_path}))
    yield proc
    if proc.process.poll() is None:
        proc.stop()


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield sock
    sock.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real S3-compatible store (SeaweedFS) on loopback, stopped after the test."""
    try:
        running = Store(tmp_path / "store").start()
    except StoreMissing as exc:
        pytest.skip(str(exc))
    yield running
    running.stop()
