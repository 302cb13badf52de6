"""Multicast sockets: one to send with, and listeners that join a group."""

from __future__ import annotations

import errno
import os
import socket

from speeddata.config import Group
from speeddata.errors import NetworkError

LOOPBACK_HINT = (
    "on Linux, joining a group on 127.0.0.1 needs multicast enabled on lo "
    "(ip link set lo multicast on) or set [multicast] interface to a LAN address"
)


def sender(interface: str, ttl: int) -> socket.socket:
    """A non-blocking UDP socket that sends to groups out of ``interface``.

    Non-blocking so that a congested path drops (and the caller counts) instead of
    stalling the relay.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    if interface and interface != "0.0.0.0":
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    sock.setblocking(False)
    return sock


def listener(group: Group, interface: str, rcvbuf: int = 8 * 2**20) -> socket.socket:
    """A UDP socket bound to ``group`` that has joined it on ``interface``.

    Several listeners on one host may join the same group (SO_REUSEADDR/SO_REUSEPORT).
    A group that cannot be joined raises ``NetworkError``, an ``OSError``: a runtime
    failure (the interface may come up later), which a caller that can do without the
    group catches and logs.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        sock.bind((group.host, group.port))
    except OSError:  # some platforms cannot bind a group address
        sock.bind(("", group.port))
    local = interface if interface else "0.0.0.0"
    mreq = socket.inet_aton(group.host) + socket.inet_aton(local)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    except OSError as exc:
        sock.close()
        hint = LOOPBACK_HINT if exc.errno in (errno.ENODEV, errno.EADDRNOTAVAIL) else ""
        raise NetworkError(
            f"cannot join multicast group {group} on {local}: {exc.strerror}"
            + (f"; {hint}" if hint else "")
        ) from None
    return sock


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for ``sock`` because its buffer was full (Linux's
    /proc/net/udp, found by the socket's inode; None where that is not available)."""
    return socket_drops([sock])


def socket_drops(socks: list[socket.socket]) -> int | None:
    """The kernel's drop counters of ``socks`` summed, read now from /proc/net/udp (one
    pass for all). Exact at this moment, unlike SO_RXQ_OVFL, which the kernel stamps
    on the next datagram it queues: drops after the last queued one never show there.
    None where the table is missing or lacks one of the sockets."""
    try:
        inodes = {str(os.fstat(sock.fileno()).st_ino) for sock in socks}
        found: dict[str, int] = {}
        with open("/proc/net/udp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if len(fields) > 12 and fields[9] in inodes:
                    found[fields[9]] = int(fields[12])
    except (OSError, ValueError, StopIteration):
        return None
    return sum(found.values()) if len(found) == len(inodes) else None
