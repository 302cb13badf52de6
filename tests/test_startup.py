"""Start-up failures a new user meets: a port in use, a child that cannot start under
'speeddata up', a batch I/O path that does not fit the platform."""

from __future__ import annotations

import ctypes
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from speeddata.bench.services import free_port
from speeddata.config import write_file
from speeddata.configvalues import parse_group
from speeddata.errors import SpeeddataError
from speeddata.relay import netio
from speeddata.schemas import Registry
from speeddata.supervisor import Child, Supervisor
from tests.helpers import SCHEMAS, TIMEOUT, relay_settings, sealed_flags, wait_until


def speeddata(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "speeddata", *args], capture_output=True,
                          text=True, timeout=TIMEOUT)


@pytest.mark.e2e
def test_a_port_in_use_is_named_with_what_to_do(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        relay = speeddata("relay", "--relay-host", "127.0.0.1", "--relay-port",
                          str(udp.getsockname()[1]), "--cache-dir", str(tmp_path / "c"),
                          *sealed_flags())
        serve = speeddata("serve", "--web-port", str(tcp.getsockname()[1]),
                          "--cache-dir", str(tmp_path / "c"), *sealed_flags())
    for result, kind, flag in ((relay, "UDP", "--relay-port"), (serve, "TCP", "--web-port")):
        assert result.returncode == 2, result.stderr
        assert f"{kind} port" in result.stderr and "is in use" in result.stderr
        assert flag in result.stderr and "Traceback" not in result.stderr


def test_the_supervisor_stops_when_a_child_cannot_start() -> None:
    """Exit code 2 (configuration, port taken) is not retried forever."""
    children = [Child("broken", [sys.executable, "-c", "import sys; sys.exit(2)"]),
                Child("fine", [sys.executable, "-c", "import time; time.sleep(30)"])]
    assert Supervisor(children).run() == 2
    assert all(c.process.poll() is not None for c in children)  # type: ignore[union-attr]
    assert children[0].restarts == 0


def test_a_source_starts_only_once_the_services_are_ready() -> None:
    never = Child("demo", [sys.executable, "-c", "pass"])
    children = [Child("relay", [sys.executable, "-c", "import sys; sys.exit(2)"])]
    assert Supervisor(children, [never], lambda _: False).run() == 2
    assert never.process is None  # a relay that could not start: nothing was sent

    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]
    source = Child("demo", sleep)
    asked = []

    def ready(started: list[Child]) -> bool:
        asked.append(source.process)  # the source while the services are not ready yet
        return len(asked) == 3

    supervisor = Supervisor([Child("relay", sleep)], [source], ready)
    runner = threading.Thread(target=supervisor.run)
    runner.start()
    try:
        wait_until(lambda: source.process, what="the source to start")
    finally:
        supervisor.stop()
        runner.join(TIMEOUT)
    assert asked == [None, None, None]


@pytest.mark.e2e
@pytest.mark.parametrize("taken", ["relay", "web"])
def test_up_with_a_port_taken_sends_nothing_and_says_which(tmp_path: Path, taken: str) -> None:
    """A second ``up`` on a taken port (a running instance's) exits at once with the port
    named, and its demo sent nothing: not to the relay port, not through the groups."""
    settings = relay_settings(tmp_path)
    demo = {c.fingerprint for c in Registry.load_dir(SCHEMAS)[0]}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as data, socket.socket() as web:
        data.bind(("127.0.0.1", 0))
        if taken == "relay":  # held as a running relay holds it: the demo would send here
            settings["relay"]["port"] = data.getsockname()[1]
        else:
            settings["relay"]["port"] = free_port()
            web.bind(("127.0.0.1", 0))
            web.listen()
            settings["web"]["port"] = web.getsockname()[1]
        from speeddata import multicast

        full = multicast.listener(parse_group(settings["multicast"]["full"]), "127.0.0.1")
        config = write_file(tmp_path / "up.toml", settings)
        up = subprocess.run([sys.executable, "-m", "speeddata", "up", "--demo", "--config",
                             str(config)], capture_output=True, text=True, timeout=3 * TIMEOUT)
        received = []
        for sock in (data, full):
            sock.setblocking(False)
            while True:
                try:
                    received.append(sock.recv(65535))
                except BlockingIOError:
                    break
        full.close()
    assert up.returncode == 2, up.stderr
    kind, flag = ("UDP", "--relay-port") if taken == "relay" else ("TCP", "--web-port")
    assert f"{kind} port" in up.stderr and "is in use" in up.stderr and flag in up.stderr
    assert "demo not started" in up.stderr
    assert [d for d in received if d[2:10] in demo or taken == "relay"] == []


def test_the_mmsg_structures_are_read_at_this_platforms_offsets() -> None:
    """The numpy views over recvmmsg's structures agree with ctypes field by field (on
    32-bit ARM size_t and pointers are 4 bytes: hard-coded 8-byte views broke there)."""
    if not netio.MmsgIO.available():
        pytest.skip("no recvmmsg here")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        io = netio.open_io("auto", sock, 4, 100, sources=True)
        assert isinstance(io, netio.MmsgIO)
        io._siov_len[:] = [11, 22, 33, 44]
        io._siov_base[1] = 0x1234
        assert [io._siov[i].iov_len for i in range(4)] == [11, 22, 33, 44]
        assert io._siov[1].iov_base == 0x1234
        io._controllen[:] = 99
        assert all(io._rmsgs[i].msg_hdr.msg_controllen == 99 for i in range(4))
        io._names[2].sin_addr[:] = socket.inet_aton("10.1.2.3")
        assert int(io._source_view[2]) == int.from_bytes(socket.inet_aton("10.1.2.3"), "big")
        assert io._controllen.dtype.itemsize == ctypes.sizeof(ctypes.c_size_t)
        assert isinstance(netio.open_io("portable", sock, 4, 100), netio.PortableIO)


# Offsets of <sys/socket.h> and <bits/uio.h> as the compilers lay them out: 32-bit ARM
# (ILP32, armhf Raspberry Pi OS) and 64-bit Linux (LP64, x86_64 and aarch64).
ABI = {
    "ILP32": {"iovec": 8, "msghdr": 28, "mmsghdr": 32, "msg_namelen": 4, "msg_iov": 8,
              "msg_iovlen": 12, "msg_control": 16, "msg_controllen": 20, "msg_flags": 24,
              "msg_len": 28, "iov_len": 4},
    "LP64": {"iovec": 16, "msghdr": 56, "mmsghdr": 64, "msg_namelen": 8, "msg_iov": 16,
             "msg_iovlen": 24, "msg_control": 32, "msg_controllen": 40, "msg_flags": 48,
             "msg_len": 56, "iov_len": 8},
}
WIDTHS = {"ILP32": ctypes.c_uint32, "LP64": ctypes.c_uint64}


@pytest.mark.parametrize("abi", ["ILP32", "LP64"])
def test_the_mmsg_structures_follow_each_abi(abi: str) -> None:
    iovec, msghdr, mmsghdr = netio.mmsg_structures(WIDTHS[abi], WIDTHS[abi])
    want = ABI[abi]
    got = {"iovec": ctypes.sizeof(iovec), "msghdr": ctypes.sizeof(msghdr),
           "mmsghdr": ctypes.sizeof(mmsghdr), "msg_len": mmsghdr.msg_len.offset,
           "iov_len": iovec.iov_len.offset,
           **{name: getattr(msghdr, name).offset for name in (
               "msg_namelen", "msg_iov", "msg_iovlen", "msg_control", "msg_controllen",
               "msg_flags")}}
    assert got == want
    # the numpy views write exactly the fields ctypes reads, at that ABI's widths
    messages = (mmsghdr * 3)()
    lengths = netio.struct_view(messages, mmsghdr.msg_hdr.offset + msghdr.msg_controllen.offset,
                                WIDTHS[abi])
    received = netio.struct_view(messages, mmsghdr.msg_len.offset, ctypes.c_uint)
    lengths[:] = [7, 8, 2**32 - 1]
    received[:] = [100, 200, 300]
    assert [m.msg_hdr.msg_controllen for m in messages] == [7, 8, 2**32 - 1]
    assert [m.msg_len for m in messages] == [100, 200, 300]
    assert all(m.msg_hdr.msg_flags == 0 and m.msg_hdr.msg_iovlen == 0 for m in messages)


def test_this_platform_has_one_of_the_known_layouts() -> None:
    abi = "LP64" if ctypes.sizeof(ctypes.c_void_p) == 8 else "ILP32"
    assert ctypes.sizeof(netio._Mmsghdr) == ABI[abi]["mmsghdr"]
    assert netio._Msghdr.msg_controllen.offset == ABI[abi]["msg_controllen"]


def test_auto_io_falls_back_and_says_why_when_the_fast_path_fails(monkeypatch, caplog) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("offset out of bounds")  # what numpy raised on 32-bit ARM

    monkeypatch.setattr(netio.MmsgIO, "__init__", broken)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, caplog.at_level("WARNING"):
        assert isinstance(netio.open_io("auto", sock, 4, 100), netio.PortableIO)
        with pytest.raises(SpeeddataError, match="io = mmsg: recvmmsg cannot be used here"):
            netio.open_io("mmsg", sock, 4, 100)
    assert "offset out of bounds" in caplog.text and "portable path" in caplog.text


@pytest.mark.e2e
def test_the_relay_receives_on_both_paths_from_a_fresh_port() -> None:
    """open_io's two paths take the same datagrams, with their sources."""
    for kind in ("auto", "portable"):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, socket.socket(
                socket.AF_INET, socket.SOCK_DGRAM) as out:
            sock.bind(("127.0.0.1", port))
            sock.setblocking(False)  # as the relay's socket is
            io = netio.open_io(kind, sock, 8, 100, sources=True)
            for i in range(3):
                out.sendto(bytes([i]) * 5, ("127.0.0.1", port))
            select.select([sock], [], [], TIMEOUT)
            time.sleep(0.05)  # all three queued
            batch = io.receive()
            assert batch.lengths.tolist() == [5, 5, 5]
            assert batch.sources is not None and set(batch.sources.tolist()) == {0x7F000001}
