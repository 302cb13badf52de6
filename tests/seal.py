"""The seal: nothing a test runs may reach the default ports and groups a live instance uses.

A ``./start`` instance on this host listens on UDP 26000 and the groups 239.255.26.1-3
(ports 26001-26003); a test that sends there adds phantom senders and tags to it. The
seal watches for the whole session, in this process and every process it starts:

- as root, a raw UDP socket with a kernel filter sees every datagram delivered on this
  host to those ports or to 239.255.26.0/24 (the groups are joined on loopback so that
  the kernel delivers them), whoever holds the port, even a running instance;
- without root, it binds 0.0.0.0:26000 (when free) and joins the three default groups;
  when an instance already holds 26000, datagrams sent to it there are not seen;
- either way, it looks in ``/proc/net/udp`` for sockets bound on those ports or groups
  every 0.25 s and at each test's end (a socket bound and closed in between is missed).

Each datagram and socket is traced to its process through ``/proc``: one started by
this session (a descendant, or one with the session's token in its environment) is a
finding; one of a running instance is not. A datagram whose socket closed before it
could be traced is a finding, unless another instance is seen using the defaults or a
speeddata or pytest process outside the session runs (then it is listed as a warning: it
may be that instance's ``speeddata tag``, or another checkout's tests). Traffic to other
hosts, and inside network namespaces, is not seen: the namespace tests have their own
kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORTS = range(26000, 26004)
DEFAULT_NETWORK = "239.255.26.0/24"
TOKEN_VARIABLE = "SPEEDDATA_TEST_SEAL"
SO_ATTACH_FILTER = 26
POLL_SECONDS = 0.25
RECHECK_SECONDS = 2.0  # a traced source is traced again after this (ports are reused)
MAX_WARNINGS = 100
GROUPS_PER_SOCKET = 20  # net.ipv4.igmp_max_memberships' default


@dataclass(frozen=True)
class Finding:
    """A datagram sent, or a socket bound, on a default port or group by the session."""

    what: str
    pid: int | None
    command: str
    test: str

    def __str__(self) -> str:
        who = f"pid {self.pid} ({self.command})" if self.pid else self.command
        return f"{self.what} by {who} during {self.test or 'the session'}"


@functools.cache
def _local(host: str) -> bool:
    """Whether ``host`` is an address of this host (only it can bind there): a datagram
    from anywhere else (a DNS answer to a port that happens to be 26002) is not a test's."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


def _filter(ports: range, network: ipaddress.IPv4Network) -> bytes:
    """Classic BPF on an IPv4 packet: keep UDP to ``network`` or to a port in ``ports``."""
    code = [
        (0x20, 0, 0, 16),                            # A = destination address
        (0x54, 0, 0, int(network.netmask)),          # A &= mask
        (0x15, 6, 0, int(network.network_address)),  # in the network: keep
        (0x28, 0, 0, 6),                             # A = flags and fragment offset
        (0x45, 5, 0, 0x1FFF),                        # a later fragment: drop
        (0xB1, 0, 0, 0),                             # X = IP header length
        (0x48, 0, 0, 2),                             # A = destination port
        (0x35, 0, 2, ports.start),                   # below the first: drop
        (0x25, 1, 0, ports.stop - 1),                # above the last: drop
        (0x06, 0, 0, 0xFFFF),                        # keep
        (0x06, 0, 0, 0),                             # drop
    ]
    return b"".join(struct.pack("HBBI", *op) for op in code)


def udp_sockets() -> dict[int, tuple[str, int]]:
    """Every IPv4 UDP socket of this network namespace: inode to bound address."""
    out = {}
    with contextlib.suppress(OSError), open("/proc/net/udp") as table:
        next(table)
        for line in table:
            fields = line.split()
            address, port = fields[1].split(":")
            host = socket.inet_ntoa(struct.pack("<I", int(address, 16)))
            out[int(fields[9])] = (host, int(port, 16))
    return out


def owners(inodes: set[int]) -> dict[int, int]:
    """The process holding each socket inode (those found)."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    found: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    inode = wanted.get(os.readlink(fd.path))
                    if inode is not None:
                        found[inode] = int(entry.name)
        if len(found) == len(wanted):
            break
    return found


def command_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "a process that has ended"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160]


class Seal:
    """Watches ``ports`` and ``network`` from ``start`` to ``stop``; ``take`` the findings."""

    def __init__(self, ports: range = DEFAULT_PORTS, network: str = DEFAULT_NETWORK,
                 raw: bool = True) -> None:
        self.ports = ports
        self.network = ipaddress.IPv4Network(network)
        self.token = f"{os.getpid()}-{time.time_ns()}"
        self.want_raw = raw
        self.mode = ""
        self.test = ""  # the test running now, named in findings
        self.foreign = False  # another instance uses the defaults (a ./start)
        self.warnings: list[str] = []
        self._findings: list[Finding] = []
        self._sockets: list[socket.socket] = []
        self._own: set[int] = set()  # inodes of the seal's own sockets
        self._checked: set[int] = set()  # inodes of bound sockets traced already
        self._sources: dict[tuple[str, int], float] = {}  # source address: when traced
        self._plain: list[socket.socket] = []
        self._reported: set[tuple[str, int | None]] = set()
        self._lock = threading.Lock()
        self._bound_lock = threading.Lock()  # the poller's and drain's checks, one at a time
        self._receivers: list[socket.socket] = []
        self._busy = False
        self._other_at, self._other_seen = -RECHECK_SECONDS, ""  # _other's last answer
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Seal:
        os.environ[TOKEN_VARIABLE] = self.token  # every process started from now on
        self._watch_bound()  # a running instance's sockets are there already
        receiver = self._open_raw() if self.want_raw else None
        if receiver is None:
            receiver = self._open_plain()
        self._receivers = [receiver] if receiver.type == socket.SOCK_RAW else self._plain
        self._threads = [threading.Thread(target=self._receive, args=(receiver,), daemon=True),
                         threading.Thread(target=self._poll, daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        for sock in self._sockets:
            sock.close()
        os.environ.pop(TOKEN_VARIABLE, None)

    def drain(self, timeout: float = 2.0) -> None:
        """Finish with what has arrived and what is bound now, so that a test's datagrams
        (queued on loopback before its send returned) are named with that test."""
        if self._stop.is_set():
            return
        self._watch_bound()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._busy and not select.select(self._receivers, [], [], 0)[0]:
                return
            time.sleep(0.005)

    def take(self) -> list[Finding]:
        """The findings since the last call."""
        with self._lock:
            found, self._findings = self._findings, []
        return found

    # -- sockets ---------------------------------------------------------------------

    def _keep(self, sock: socket.socket) -> socket.socket:
        self._sockets.append(sock)
        self._own.add(os.fstat(sock.fileno()).st_ino)
        return sock

    def _open_raw(self) -> socket.socket | None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        except PermissionError:
            return None
        code = _filter(self.ports, self.network)
        program = ctypes.create_string_buffer(code, len(code))
        fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(program))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:  # what arrived before the filter was on: any UDP at all
                sock.recv(65535)
        sock.setblocking(True)
        self._keep(sock)
        # The kernel delivers a group's datagrams only where the host is a member.
        hosts = [str(h) for h in self.network.hosts()]
        for first in range(0, len(hosts), GROUPS_PER_SOCKET):
            member = self._keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            for host in hosts[first:first + GROUPS_PER_SOCKET]:
                with contextlib.suppress(OSError):
                    member.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                      socket.inet_aton(host) + socket.inet_aton("127.0.0.1"))
        self.mode = f"raw socket: every datagram to UDP {self._ports()} or {self.network}"
        return sock

    def _open_plain(self) -> socket.socket:
        """Without root: listen where the defaults are, on a socket per port."""
        listeners = []
        first = self._keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        try:
            first.bind(("0.0.0.0", self.ports.start))
            listeners.append(first)
            watched = [f"UDP {self.ports.start}"]
        except OSError:
            watched = []
            self.warnings.append(f"UDP {self.ports.start} is held by another process (a "
                                 "./start instance?): datagrams sent to it are not seen")
        for offset, port in enumerate(self.ports[1:], start=1):
            group = str(self.network.network_address + offset)
            sock = self._keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((group, port))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            socket.inet_aton(group) + socket.inet_aton("127.0.0.1"))
            listeners.append(sock)
            watched.append(f"{group}:{port}")
        self.mode = "listeners (no root for a raw socket): " + ", ".join(watched)
        self._plain = listeners
        return listeners[0]

    def _ports(self) -> str:
        return f"{self.ports.start}-{self.ports.stop - 1}"

    # -- threads ---------------------------------------------------------------------

    def _receive(self, first: socket.socket) -> None:
        raw = first.type == socket.SOCK_RAW
        while not self._stop.is_set():
            ready, _, _ = select.select(self._receivers, [], [], POLL_SECONDS)
            for sock in ready:
                self._busy = True  # before the datagram leaves the queue drain looks at
                try:
                    data, peer = sock.recvfrom(65535)
                    local = sock.getsockname()
                except OSError:
                    self._busy = False
                    continue
                if raw:
                    header = (data[0] & 0x0F) * 4
                    source = (socket.inet_ntoa(data[12:16]),
                              struct.unpack("!H", data[header:header + 2])[0])
                    target = (socket.inet_ntoa(data[16:20]),
                              struct.unpack("!H", data[header + 2:header + 4])[0])
                else:
                    source, target = peer, local
                if (target[1] in self.ports or self._watched(target[0])) and _local(source[0]):
                    self._datagram(source, target)
                self._busy = False

    def _datagram(self, source: tuple[str, int], target: tuple[str, int]) -> None:
        known = self._sources.get(source)
        if known is not None and time.monotonic() - known < RECHECK_SECONDS:
            return  # a socket traced already (a running instance's, or reported)
        self._sources[source] = time.monotonic()
        what = f"a datagram {source[0]}:{source[1]} -> {target[0]}:{target[1]}"
        inodes = {i for i, (host, port) in udp_sockets().items()
                  if port == source[1] and host in (source[0], "0.0.0.0")} - self._own
        pids = owners(inodes)
        if not pids:
            del self._sources[source]  # nothing cached: the next one is traced again
            other = "another instance uses the defaults" if self.foreign else self._other()
            if other:
                if len(self.warnings) < MAX_WARNINGS and (what, None) not in self._reported:
                    self._reported.add((what, None))  # said once; past the first 100, not
                    self.warnings.append(f"{what} from a socket closed before it could be "
                                         f"traced ({other}: maybe its own)")
            else:
                self._found(what, None, "a process whose socket closed before it was traced")
            return
        for pid in pids.values():
            if self._ours(pid):
                self._found(what, pid, command_of(pid))
                return
        self.foreign = True

    def _other(self) -> str:
        """A speeddata or pytest process outside the session that may have sent an
        untraced datagram (a ./start, another checkout's tests), named; or ''."""
        now = time.monotonic()
        if now - self._other_at < RECHECK_SECONDS:
            return self._other_seen
        self._other_at, self._other_seen = now, ""
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            command = command_of(pid)
            if ("speeddata" in command or "pytest" in command) and not self._ours(pid):
                self._other_seen = f"pid {pid} ({command[:60]}) runs outside this session"
                break
        return self._other_seen

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._watch_bound()

    def _watch_bound(self) -> None:
        """Sockets bound on a watched port or group: the session's are findings."""
        with self._bound_lock:
            self._check_bound()

    def _check_bound(self) -> None:
        bound = {i: a for i, a in udp_sockets().items() if i not in self._checked
                 and i not in self._own and (a[1] in self.ports or self._watched(a[0]))}
        if not bound:
            return
        pids = owners(set(bound))
        for inode, (host, port) in bound.items():
            self._checked.add(inode)
            pid = pids.get(inode)
            if pid is not None and self._ours(pid):
                self._found(f"a socket bound on {host}:{port}", pid, command_of(pid))
            elif pid is not None:
                self.foreign = True

    def _watched(self, host: str) -> bool:
        return ipaddress.IPv4Address(host) in self.network

    def _ours(self, pid: int) -> bool:
        """Whether ``pid`` belongs to the session: this process, a descendant, or one
        that inherited the session's token (a daemon that left its parent)."""
        return pid == os.getpid() or self._descends(pid) or self._has_token(pid)

    @staticmethod
    def _descends(pid: int) -> bool:
        me = os.getpid()
        for _ in range(64):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return False
            pid = int(stat.rsplit(")", 1)[1].split()[1])
            if pid == me:
                return True
            if pid <= 1:
                return False
        return False

    def _has_token(self, pid: int) -> bool:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        return f"{TOKEN_VARIABLE}={self.token}".encode() in environ.split(b"\0")

    def _found(self, what: str, pid: int | None, command: str) -> None:
        if (what, pid) in self._reported:
            return
        self._reported.add((what, pid))
        with self._lock:
            self._findings.append(Finding(what, pid, command, self.test))
