"""The relay's control plane: its own socket and thread, off the data loop.

It reads the control group at most ``RATE`` datagrams a second (beyond that the kernel
drops them, counted as ``kernel_drops``: a flood costs the data path nothing), refuses
what is not from an allowed network or not sealed with the key (``speeddata.control``),
applies tag records in one transaction per batch, announces its digest and re-announces
its set when a peer's differs, paced at ``SEND_RATE`` records a second.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import select
import socket
import sqlite3
import threading
import time
from collections import Counter, deque

from speeddata import control, multicast
from speeddata.config import Config
from speeddata.errors import ControlError, SpeeddataError
from speeddata.logs import Throttle
from speeddata.tagrecord import TagRecord
from speeddata.tags import TagStore

log = logging.getLogger("speeddata.control")

RATE = 500.0  # datagrams read a second at most (at 2000, a flood sealed with the key took
# enough of the GIL from the data loop to cost 10 % of 50 k/s: benchmarks/relay_stalls.py)
BATCH = 256  # datagrams read and applied in one transaction at most
SEND_RATE = 250.0  # records re-announced a second at most (below any peer's RATE)
LOG_SECONDS = 10.0


class ControlPlane:
    """Owns the control socket and its thread; ``start()``, ``stop()``, ``statistics()``."""

    def __init__(self, config: Config, allow: list[ipaddress.IPv4Network]) -> None:
        mc = config.multicast
        assert mc.control is not None
        self.group = mc.control
        self.cache_dir = config.cache.dir
        self.allow = allow
        self.key = control.load_key(mc.control_key, config.cache.dir)  # ConfigError: stop
        self.sender_id = control.new_sender_id()
        self.origin = control.hostname()
        self.sock: socket.socket | None = None
        try:
            self.sock = multicast.listener(mc.control, mc.interface, 2**20)
            self.sock.setblocking(False)
        except (OSError, SpeeddataError) as exc:  # tags still work here, said once
            log.warning("cannot join the control group %s on %s (%s): tags made on other "
                        "hosts will not reach this relay", mc.control, mc.interface, exc)
        self.out = multicast.sender(mc.interface, mc.ttl)
        self.counts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._refuse_log = Throttle(LOG_SECONDS)
        self._store_log = Throttle(LOG_SECONDS)

    def start(self) -> None:
        if self.sock is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(10)
        for sock in (self.sock, self.out, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def statistics(self) -> dict[str, object]:
        with self._lock:
            counts, refused = dict(self.counts), dict(self.refused)
        drops = multicast.kernel_drops(self.sock) if self.sock is not None else None
        return {"group": str(self.group), "joined": self.sock is not None, **counts,
                "refused": refused, "kernel_drops": drops or 0}

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def _refuse(self, reason: str, detail: str, address: str) -> None:
        with self._lock:
            self.refused[reason] += 1
            total = sum(self.refused.values())
        if self._refuse_log.ready(time.monotonic()):
            log.warning("refused control messages: %d so far (last from %s: %s)", total,
                        address, detail)

    def _send(self, body: dict) -> None:
        datagram = control.seal(self.key, body, time.time_ns(), secrets.token_bytes(16))
        try:
            self.out.sendto(datagram, (self.group.host, self.group.port))
            self._count("sent")
        except OSError:  # a full socket buffer: the next digest round makes up for it
            self._count("send_errors")

    def _run(self) -> None:
        store = TagStore(self.cache_dir)
        opener = control.Opener(self.key)
        now = time.monotonic()
        sync = control.Sync(now)
        budget = control.Budget(RATE, BATCH, now)
        outbox: deque[TagRecord] = deque()
        sending = control.Budget(SEND_RATE, 50, now)
        assert self.sock is not None
        while not self._stopping.is_set():
            now = time.monotonic()
            try:
                if sync.digest_due(now):
                    digest, count = store.digest()
                    self._send(control.Digest(digest, count, self.sender_id,
                                              self.origin).as_message())
                    self._count("digests_sent")
                if not outbox and sync.resync_due(now):
                    outbox.extend(store.records())
                    self._count("resyncs")
                for _ in range(sending.take(len(outbox), now)):
                    self._send(outbox.popleft().as_message())
                    self._count("records_sent")
            except sqlite3.Error as exc:
                self._store_failed(exc)
            timeout = sync.timeout(now)
            if outbox:
                timeout = min(timeout, sending.wait(now))
            wanted = budget.take(BATCH, now)
            if not wanted:  # over budget: the kernel buffer holds (or drops) the rest
                timeout = min(timeout, budget.wait(now))
            watched = [self._wake_r, self.sock] if wanted else [self._wake_r]
            ready, _, _ = select.select(watched, [], [], timeout)
            taken = self._read(wanted, opener, store, sync) if self.sock in ready else 0
            budget.tokens += wanted - taken  # what was not there is not spent

    def _read(self, wanted: int, opener: control.Opener, store: TagStore,
              sync: control.Sync) -> int:
        """Up to ``wanted`` datagrams read, checked and applied; never raises."""
        records: list[TagRecord] = []
        taken = 0
        now_ns = time.time_ns()
        for _ in range(wanted):
            try:
                datagram, (host, _port) = self.sock.recvfrom(65535)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            taken += 1
            self._count("received")
            try:
                if self.allow and not any(ipaddress.IPv4Address(host) in net
                                          for net in self.allow):
                    raise ControlError("not_allowed", "from a network not in [relay] allow")
                message = control.parse(opener.open(datagram, now_ns))
                if isinstance(message, control.Digest):
                    if message.sender != self.sender_id:
                        sync.heard(message, store.digest()[0])
                    continue
                records.append(message)
            except ControlError as exc:
                self._refuse(exc.reason, str(exc), host)
            except sqlite3.Error as exc:
                self._store_failed(exc)
            except Exception as exc:  # network input never ends the thread
                self._refuse("internal_error", f"{type(exc).__name__}: {exc}", host)
        if records:
            try:
                done = store.apply_many(records, now_ns)
            except sqlite3.Error as exc:  # a full disk: the digest exchange retries later
                self._store_failed(exc)
                return taken
            for record, what in zip(records, done, strict=True):
                self._count(what)
                if what not in ("known", "older"):
                    log.info("tag %s from %s: %s", record.name, record.origin, what)
        return taken

    def _store_failed(self, exc: Exception) -> None:
        self._count("store_errors")
        if self._store_log.ready(time.monotonic()):
            log.error("the tag store could not be read or written: %s (tags are missed "
                      "here until it can)", exc)
