"""Batch datagram I/O for the relay: receive many datagrams per call, forward them.

Both classes receive a batch into one buffer of fixed-size slots (datagram ``i`` at
``i * slot``) and forward datagrams by slot index, so routing never copies a datagram
and never makes a Python object per datagram on the fast path.

- ``MmsgIO`` (Linux): ``recvmmsg`` and ``sendmmsg`` through ctypes; forwarding points
  the kernel at the receive buffer directly (zero copy).
- ``PortableIO`` (anywhere): non-blocking ``recv_into`` until the socket is empty or the
  batch is full, and ``sendto`` per datagram.

Both report the kernel's receive-buffer drops (SO_RXQ_OVFL, Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import socket
import struct
import sys

import numpy as np

from speeddata.errors import NetworkError, SpeeddataError
from speeddata.relay.core import Received

log = logging.getLogger("speeddata.relay")

SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40 if sys.platform.startswith("linux") else None)
_OVFL_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)


def receive_buffer(sock: socket.socket) -> int:
    """The socket's usable receive buffer in bytes."""
    size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return size // 2 if sys.platform.startswith("linux") else size  # Linux reports twice


def open_receiver(host: str, port: int, rcvbuf: int, reuseport: bool = False) -> socket.socket:
    """The relay's UDP socket: large buffer (with a log line if the kernel caps it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if receive_buffer(sock) < rcvbuf and SO_RCVBUFFORCE is not None:
        with contextlib.suppress(OSError):  # allowed with CAP_NET_ADMIN (root) only
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    granted = receive_buffer(sock)
    if granted < rcvbuf:
        log.warning(
            "receive buffer capped by the kernel at %d bytes (asked %d); "
            "raise it with: sysctl -w net.core.rmem_max=%d", granted, rcvbuf, rcvbuf,
        )
    if SO_RXQ_OVFL is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise bind_error(exc, "UDP", host, port, "--relay-port") from None
    sock.setblocking(False)
    return sock


def bind_error(exc: OSError, kind: str, host: str, port: int, flag: str) -> SpeeddataError:
    """What to tell the user when a listening socket cannot be bound."""
    if exc.errno == errno.EADDRINUSE:
        return SpeeddataError(
            f"{kind} port {port} on {host} is in use: speeddata is already running ('speeddata "
            f"status' tells) or another program has it; stop it, or choose another port with "
            f"{flag}")
    if exc.errno == errno.EADDRNOTAVAIL:
        # a runtime failure: at boot the address may come up after the relay starts
        return NetworkError(f"{host} is not an address of this host: listen on 0.0.0.0 "
                            "(every interface) or on one of 'ip -4 addr' addresses")
    if exc.errno == errno.EACCES:
        return SpeeddataError(f"{kind} port {port} needs root (ports below 1024): choose a "
                              f"port above 1023 with {flag}")
    return NetworkError(f"cannot listen on {kind} {host}:{port}: {exc.strerror}")


def _ipv4(address: tuple) -> int:
    """An IPv4 source address as the integer ``allowed_sources`` compares."""
    return int.from_bytes(socket.inet_aton(address[0]), "big")


class PortableIO:
    """Receives up to ``batch`` datagrams per call with ``recv_into``."""

    name = "portable"

    def __init__(self, sock: socket.socket, batch: int, max_datagram: int,
                 sources: bool = False) -> None:
        self.sock = sock
        self.want_sources = sources  # the senders' addresses: [relay] allow, loss per sender
        self._sources = np.zeros(batch, dtype=np.uint32)
        self._ports = np.zeros(batch, dtype=np.uint16)
        # One byte more than accepted, so an over-long datagram is seen as such.
        self.slot = max_datagram + 1
        self.memory = bytearray(batch * self.slot)
        self.array = np.frombuffer(self.memory, dtype=np.uint8)
        view = memoryview(self.memory)
        self._slots = [view[i * self.slot : (i + 1) * self.slot] for i in range(batch)]
        self._lengths = np.zeros(batch, dtype=np.int64)
        self.kernel_drops = 0

    def receive(self) -> Received:
        """The datagrams waiting now (at most one batch); valid until the next call.

        The first is read with ``recvmsg_into`` for the drop counter the kernel stamped on
        it when it queued it: drops are reported at most one batch late.
        """
        slots = self._slots
        lengths = self._lengths
        try:
            n, ancdata, _, address = self.sock.recvmsg_into([slots[0]], _OVFL_SPACE)
        except (BlockingIOError, InterruptedError):
            return Received(self.array, self.slot, lengths[:0])
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= 4:
                self.kernel_drops = struct.unpack("=I", data[:4])[0]
        lengths[0] = n
        count = 1
        if self.want_sources:
            sources, ports = self._sources, self._ports
            sources[0], ports[0] = _ipv4(address), address[1]
            recvfrom_into = self.sock.recvfrom_into
            for view in slots[1:]:
                try:
                    lengths[count], address = recvfrom_into(view)
                except (BlockingIOError, InterruptedError):
                    break
                sources[count], ports[count] = _ipv4(address), address[1]
                count += 1
            return Received(self.array, self.slot, lengths[:count], sources[:count],
                            ports[:count])
        recv_into = self.sock.recv_into
        for view in slots[1:]:
            try:
                lengths[count] = recv_into(view)
            except (BlockingIOError, InterruptedError):
                break
            count += 1
        return Received(self.array, self.slot, lengths[:count])

    def forward(self, sock: socket.socket, batch: Received, indices: np.ndarray,
                address: tuple[str, int]) -> int:
        """Send the datagrams at ``indices`` to ``address``; returns how many failed."""
        failed = 0
        sendto = sock.sendto
        slots = self._slots
        lengths = batch.lengths
        for i in indices.tolist():
            try:
                sendto(slots[i][: lengths[i]], address)
            except OSError:  # a full queue (EAGAIN/ENOBUFS): drop and count
                failed += 1
        return failed


# -- recvmmsg/sendmmsg ------------------------------------------------------------------

def mmsg_structures(size_t: type = ctypes.c_size_t, pointer: type = ctypes.c_void_p
                    ) -> tuple[type, type, type]:
    """``iovec``, ``msghdr`` and ``mmsghdr`` with the given widths of ``size_t`` and of
    pointers: this platform's by default, and a test builds the 32-bit ARM ones (ILP32)
    and the 64-bit ones to check the offsets against the ABI."""

    class Iovec(ctypes.Structure):
        _fields_ = [("iov_base", pointer), ("iov_len", size_t)]

    class Msghdr(ctypes.Structure):
        _fields_ = [("msg_name", pointer), ("msg_namelen", ctypes.c_uint32),
                    ("msg_iov", pointer), ("msg_iovlen", size_t),
                    ("msg_control", pointer), ("msg_controllen", size_t),
                    ("msg_flags", ctypes.c_int)]

    class Mmsghdr(ctypes.Structure):
        _fields_ = [("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint)]

    return Iovec, Msghdr, Mmsghdr


_Iovec, _Msghdr, _Mmsghdr = mmsg_structures()


class _SockaddrIn(ctypes.Structure):
    _fields_ = [("sin_family", ctypes.c_ushort), ("sin_port", ctypes.c_uint16),
                ("sin_addr", ctypes.c_uint8 * 4), ("sin_zero", ctypes.c_uint8 * 8)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.recvmmsg  # noqa: B018 - present on glibc and musl
        libc.sendmmsg  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


# A cmsghdr as this platform has it (12 bytes on 32-bit ARM, 16 on 64-bit).
_SIZE = ctypes.sizeof(ctypes.c_size_t)
_CMSG_HEADER = socket.CMSG_LEN(0) if hasattr(socket, "CMSG_LEN") else 2 * _SIZE + 4


def struct_view(array: ctypes.Array, field_offset: int, field_type: type,
                byteorder: str = "=") -> np.ndarray:
    """A numpy view of one unsigned field of every element of a ctypes array of
    structures; its width is the field type's, never assumed."""
    dtype = f"{byteorder}u{ctypes.sizeof(field_type)}"
    base = np.frombuffer(array, dtype=np.uint8)
    return np.ndarray((len(array),), dtype=dtype, buffer=base, offset=field_offset,
                      strides=(ctypes.sizeof(array._type_),))


class MmsgIO:
    """``recvmmsg``/``sendmmsg`` through ctypes (Linux): one system call per batch."""

    name = "mmsg"

    @staticmethod
    def available() -> bool:
        return _LIBC is not None

    def __init__(self, sock: socket.socket, batch: int, max_datagram: int,
                 sources: bool = False) -> None:
        if _LIBC is None:
            raise OSError("recvmmsg/sendmmsg are not available here")
        self.sock = sock
        self.want_sources = sources
        self.batch = batch
        self.slot = max_datagram + 1
        self.memory = (ctypes.c_uint8 * (batch * self.slot))()
        self.array = np.frombuffer(self.memory, dtype=np.uint8)
        base = ctypes.addressof(self.memory)
        # receive side: one iovec per slot, and a control buffer per message: the kernel
        # stamps the drop counter on a datagram as it queues it (only once it is non-zero),
        # so the newest datagram of a batch carries the newest count
        self._riov = (_Iovec * batch)()
        self._rmsgs = (_Mmsghdr * batch)()
        self._control_size = 32
        self._control = (ctypes.c_uint8 * (batch * self._control_size))()
        for i in range(batch):
            self._riov[i].iov_base = base + i * self.slot
            self._riov[i].iov_len = self.slot
            hdr = self._rmsgs[i].msg_hdr
            hdr.msg_iov = ctypes.addressof(self._riov[i])
            hdr.msg_iovlen = 1
            hdr.msg_control = ctypes.addressof(self._control) + i * self._control_size
        self._names = (_SockaddrIn * batch)()  # the senders' addresses, when wanted
        if sources:
            for i in range(batch):
                self._rmsgs[i].msg_hdr.msg_name = ctypes.addressof(self._names[i])
        header = _Mmsghdr.msg_hdr.offset
        self._namelen = struct_view(
            self._rmsgs, header + _Msghdr.msg_namelen.offset, ctypes.c_uint32)
        self._source_view = struct_view(
            self._names, _SockaddrIn.sin_addr.offset, ctypes.c_uint32, ">")
        self._port_view = struct_view(
            self._names, _SockaddrIn.sin_port.offset, ctypes.c_uint16, ">")
        self._msg_len = struct_view(self._rmsgs, _Mmsghdr.msg_len.offset, ctypes.c_uint)
        self._controllen = struct_view(
            self._rmsgs, header + _Msghdr.msg_controllen.offset, ctypes.c_size_t)
        # send side: iovecs are filled per call with slot addresses and lengths
        self._siov = (_Iovec * batch)()
        self._smsgs = (_Mmsghdr * batch)()
        self._addr = _SockaddrIn()
        self._addr_key: tuple[str, int] | None = None
        for i in range(batch):
            hdr = self._smsgs[i].msg_hdr
            hdr.msg_name = ctypes.addressof(self._addr)
            hdr.msg_namelen = ctypes.sizeof(_SockaddrIn)
            hdr.msg_iov = ctypes.addressof(self._siov[i])
            hdr.msg_iovlen = 1
        self._siov_base = struct_view(self._siov, _Iovec.iov_base.offset, ctypes.c_void_p)
        self._siov_len = struct_view(self._siov, _Iovec.iov_len.offset, ctypes.c_size_t)
        self._base = base
        self.kernel_drops = 0

    def receive(self) -> Received:
        self._controllen[:] = self._control_size
        if self.want_sources:
            self._namelen[:] = ctypes.sizeof(_SockaddrIn)
        n = _LIBC.recvmmsg(self.sock.fileno(), self._rmsgs, self.batch, MSG_DONTWAIT, None)
        if n <= 0:
            err = ctypes.get_errno()
            if n < 0 and err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")
            return Received(self.array, self.slot, np.zeros(0, dtype=np.int64))
        if self._controllen[n - 1] >= _CMSG_HEADER + 4:  # a cmsghdr and the 4-byte counter
            offset = (n - 1) * self._control_size
            level, kind = struct.unpack_from("=ii", self._control, offset + _SIZE)
            drops = struct.unpack_from("=I", self._control, offset + _CMSG_HEADER)[0]
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
                self.kernel_drops = drops
        # a view, like the data: valid until the next call (no copy on the receive path)
        if not self.want_sources:
            return Received(self.array, self.slot, self._msg_len[:n].astype(np.int64))
        return Received(self.array, self.slot, self._msg_len[:n].astype(np.int64),
                        self._source_view[:n], self._port_view[:n])

    def _target(self, address: tuple[str, int]) -> None:
        if self._addr_key != address:
            self._addr.sin_family = socket.AF_INET
            self._addr.sin_port = socket.htons(address[1])
            self._addr.sin_addr[:] = socket.inet_aton(address[0])
            self._addr_key = address

    def forward(self, sock: socket.socket, batch: Received, indices: np.ndarray,
                address: tuple[str, int]) -> int:
        """``sendmmsg`` the datagrams at ``indices`` to ``address``, straight from the
        receive buffer; returns how many the kernel refused (counted, never raised)."""
        total = len(indices)
        if not total:
            return 0
        self._target(address)
        self._siov_base[:total] = self._base + indices * self.slot
        self._siov_len[:total] = batch.lengths[indices]
        sent = 0
        fd = sock.fileno()
        while sent < total:
            n = _LIBC.sendmmsg(fd, ctypes.byref(self._smsgs[sent]), total - sent, MSG_DONTWAIT)
            if n <= 0:  # a full queue: drop the rest of this batch and count it
                break
            sent += n
        return total - sent


def open_io(kind: str, sock: socket.socket, batch: int, max_datagram: int,
            sources: bool = False) -> PortableIO | MmsgIO:
    """The batch I/O ``[relay] io`` asks for: ``auto`` takes recvmmsg/sendmmsg where they
    can be set up here and falls back to the portable path, saying so, where they cannot
    (another OS, an unexpected ABI); ``mmsg`` insists."""
    if kind in ("auto", "mmsg"):
        try:  # the kernel fills in senders for free here: kept for status in any case
            return MmsgIO(sock, batch, max_datagram, True)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            if kind == "mmsg":
                raise SpeeddataError(f"[relay] io = mmsg: recvmmsg cannot be used here ({exc});"
                                     " set it to auto or portable") from None
            log.warning("recvmmsg cannot be used here (%s): using the portable path", exc)
    return PortableIO(sock, batch, max_datagram, sources)


def send_all(sock: socket.socket, datagrams: list, address: tuple[str, int]) -> int:
    """Send each datagram; returns how many the kernel refused (counted, never raised)."""
    failed = 0
    for datagram in datagrams:
        try:
            sock.sendto(datagram, address)
        except OSError:
            failed += 1
    return failed
