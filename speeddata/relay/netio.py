"""Batch datagram I/O for the relay.

``PortableIO`` works wherever Python does: non-blocking ``recv_into`` until the socket
is empty or the batch is full. Every batch starts with one ``recvmsg_into`` so the
kernel's drop counter (SO_RXQ_OVFL, Linux) comes along at almost no cost.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import sys

log = logging.getLogger("speeddata.relay")

SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40 if sys.platform.startswith("linux") else None)
_OVFL_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0


def open_receiver(host: str, port: int, rcvbuf: int, reuseport: bool = False) -> socket.socket:
    """The relay's UDP socket: large buffer (with a log line if the kernel caps it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if sys.platform.startswith("linux"):
        granted //= 2  # Linux reports twice the usable size
    if granted < rcvbuf:
        log.warning(
            "receive buffer capped by the kernel at %d bytes (asked %d); "
            "raise it with: sysctl -w net.core.rmem_max=%d", granted, rcvbuf, rcvbuf,
        )
    if SO_RXQ_OVFL is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class PortableIO:
    """Receives up to ``batch`` datagrams per call into preallocated buffers."""

    name = "portable"

    def __init__(self, sock: socket.socket, batch: int, max_datagram: int) -> None:
        self.sock = sock
        # One byte more than accepted, so an over-long datagram is seen as such.
        self.slot_size = max_datagram + 1
        self._buffers = [bytearray(self.slot_size) for _ in range(batch)]
        self._views = [memoryview(b) for b in self._buffers]
        self.kernel_drops = 0

    def receive(self) -> list[memoryview]:
        """The datagrams waiting now (at most one batch); views valid until the next call."""
        views = self._views
        try:
            n, ancdata, _, _ = self.sock.recvmsg_into([views[0]], _OVFL_SPACE)
        except (BlockingIOError, InterruptedError):
            return []
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= 4:
                self.kernel_drops = struct.unpack("=I", data[:4])[0]
        out = [views[0][:n]]
        recv_into = self.sock.recv_into
        for view in views[1:]:
            try:
                n = recv_into(view)
            except (BlockingIOError, InterruptedError):
                break
            out.append(view[:n])
        return out


def send_all(sock: socket.socket, datagrams: list, address: tuple[str, int]) -> int:
    """Send each datagram; returns how many the kernel refused (counted, never raised)."""
    failed = 0
    sendto = sock.sendto
    for datagram in datagrams:
        try:
            sendto(datagram, address)
        except OSError:  # a full queue (EAGAIN/ENOBUFS) or no route: drop and count
            failed += 1
    return failed
