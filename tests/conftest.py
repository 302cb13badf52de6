from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from speeddata.bench.procs import fresh_group
from speeddata.bench.store import Store, StoreMissing
from tests.helpers import RelayProcess, relay_settings, start_relay


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
