"""The relay process: a short loop of receive batch, route, write, forward.

All decisions are in ``relay.core`` (routing, decimation) and ``cache`` (blocks,
roll-over, retention); this module owns the sockets, the clock and the signals.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import socket
import time
from pathlib import Path

from speeddata import multicast, status
from speeddata.cache.catalogue import Catalogue
from speeddata.cache.store import CacheWriter
from speeddata.config import Config
from speeddata.errors import CacheError
from speeddata.logs import Throttle
from speeddata.relay import netio
from speeddata.relay.core import Router
from speeddata.schemas import Registry

log = logging.getLogger("speeddata.relay")

STATUS_SECONDS = 1.0
RETENTION_SECONDS = 10.0
REJECT_LOG_SECONDS = 10.0


def protected_ranges(cache_dir: Path) -> list[tuple[int, int]]:
    """Receive-time ranges retention must keep: tags not yet exported."""
    from speeddata import tags  # the tag store lives in the cache directory

    return tags.protected_ranges(cache_dir)


class Relay:
    """One relay: sockets, cache writer and router, driven by ``run()`` until stopped."""

    def __init__(self, config: Config, worker: int | None = None, io_class: type | None = None):
        self.config = config
        self.worker = worker
        self.name = "relay" if worker is None else f"relay-w{worker}"
        self.registry, errors = Registry.load_dir(config.channels.dir)
        for error in errors:
            log.error("%s (channel skipped)", error)
        if not len(self.registry):
            log.warning("no valid channel schemas in %s: every datagram will be rejected",
                        config.channels.dir)
        io_class = io_class or netio.PortableIO
        reuse = worker is not None
        main = netio.open_receiver(config.relay.host, config.relay.port, config.relay.rcvbuf, reuse)
        self.port = main.getsockname()[1]  # differs from the config for port 0 (tests)
        sockets = {self.port: main}
        legacy = {}
        for name, port in config.legacy_ports().items():
            if name not in self.registry:
                log.error("[channels] legacy names %r, which has no schema; ignored", name)
                continue
            port = self.port if port == config.relay.port else port
            if port not in sockets:
                sockets[port] = netio.open_receiver(
                    config.relay.host, port, config.relay.rcvbuf, reuse)
            legacy[port] = self.registry[name]
        self.receivers = [
            (io_class(sock, config.relay.batch, config.relay.max_datagram), port)
            for port, sock in sockets.items()
        ]
        self.router = Router(
            self.registry, legacy, config.relay.max_datagram, config.multicast.decimated_rate_hz
        )
        self.writer = CacheWriter(
            config.cache.dir, config.cache.rotate_bytes, config.cache.rotate_seconds, worker
        )
        self.catalogue = Catalogue(config.cache.dir, lambda: protected_ranges(config.cache.dir))
        self.quota = config.cache_quota()
        mc = config.multicast
        forwarding = mc.full or mc.decimated
        self.mc_socket = multicast.sender(mc.interface, mc.ttl) if forwarding else None
        self.full = (mc.full.host, mc.full.port) if mc.full else None
        self.decimated = (mc.decimated.host, mc.decimated.port) if mc.decimated else None
        self.counts = {"batches": 0, "datagrams": 0, "multicast_send_errors": 0,
                       "cache_dropped": 0, "cache_write_errors": 0}
        self.started = time.time()
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._reject_log = Throttle(REJECT_LOG_SECONDS)
        self._disk_log = Throttle(REJECT_LOG_SECONDS)
        self._rejected_logged = 0
        self._last_snapshot: tuple[float, dict[str, int]] = (time.monotonic(), {})

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler or another thread)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def handle(self, io: netio.PortableIO, port: int) -> None:
        datagrams = io.receive()
        if not datagrams:
            return
        now_ns = time.time_ns()
        routed = self.router.route(datagrams, port, now_ns)
        self.counts["batches"] += 1
        self.counts["datagrams"] += len(datagrams)
        for channel, bodies in routed.bodies.items():
            try:
                self.writer.append(channel, bodies, now_ns)
            except (OSError, CacheError) as exc:
                self.counts["cache_dropped"] += len(bodies)
                self.router.counters[channel.name].cache_dropped += len(bodies)
                self.counts["cache_write_errors"] += 1
                if self._disk_log.ready(time.monotonic()):
                    hint = " (disk full: free space or lower [cache] max_bytes)" if (
                        getattr(exc, "errno", None) == errno.ENOSPC) else ""
                    log.error("cache write for channel %s failed: %s%s; datagrams still "
                              "forwarded, %d not cached so far", channel.name, exc, hint,
                              self.counts["cache_dropped"])
        if self.mc_socket is not None:
            if self.full:
                self.counts["multicast_send_errors"] += netio.send_all(
                    self.mc_socket, routed.full, self.full)
            if self.decimated and routed.decimated:
                self.counts["multicast_send_errors"] += netio.send_all(
                    self.mc_socket, routed.decimated, self.decimated)

    def statistics(self) -> dict[str, object]:
        now = time.monotonic()
        router = self.router.statistics()
        then, before = self._last_snapshot
        elapsed = max(now - then, 1e-9)
        for name, counters in router["channels"].items():  # type: ignore[union-attr]
            counters["rate_hz"] = round((counters["datagrams"] - before.get(name, 0)) / elapsed, 1)
        self._last_snapshot = (now, {n: c["datagrams"] for n, c in router["channels"].items()})  # type: ignore[union-attr]
        return {
            "service": "relay",
            "pid": os.getpid(),
            "worker": self.worker,
            "written": time.time(),
            "started": self.started,
            "listen": f"{self.config.relay.host}:{self.port}",
            "legacy_ports": {str(p): c.name for p, c in self.router.legacy_ports.items()},
            "multicast": {"full": str(self.config.multicast.full or ""),
                          "decimated": str(self.config.multicast.decimated or ""),
                          "interface": self.config.multicast.interface},
            "io": self.receivers[0][0].name,
            "kernel_drops": sum(io.kernel_drops for io, _ in self.receivers),
            **self.counts,
            **router,
            "cache": {"dir": str(self.config.cache.dir), "quota": self.quota,
                      "deleted_files": self.catalogue.deleted_files,
                      **self.writer.statistics()},
        }

    def _log_rejections(self, now: float) -> None:
        total = sum(self.router.rejected.values())
        if total > self._rejected_logged and self._reject_log.ready(now):
            reasons = ", ".join(f"{k}={v}" for k, v in self.router.rejected.items() if v)
            example = "; ".join(self.router.last_rejection.values())
            log.warning("rejected %d datagrams so far (%s); last: %s", total, reasons, example)
            self._rejected_logged = total

    def run(self) -> None:
        """Serve until ``stop()``; then flush, fsync, close and remove the status file."""
        self.writer.repair_all()
        self.catalogue.enforce(self.quota, set())
        selector = selectors.DefaultSelector()
        for io, port in self.receivers:
            selector.register(io.sock, selectors.EVENT_READ, (io, port))
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        log.info(
            "%s listening on %s:%d (legacy %s), cache %s (quota %.1f GiB), multicast "
            "full %s decimated %s via %s",
            self.name, self.config.relay.host, self.port,
            {p: c.name for p, c in self.router.legacy_ports.items()} or "none",
            self.config.cache.dir, self.quota / 2**30, self.config.multicast.full or "off",
            self.config.multicast.decimated or "off", self.config.multicast.interface,
        )
        now = time.monotonic()
        next_fsync = now + self.config.cache.fsync_seconds
        next_status = now
        next_retention = now + RETENTION_SECONDS
        try:
            while not self._stopping:
                now = time.monotonic()
                if now >= next_status:
                    status.write(self.config.cache.dir, self.name, self.statistics())
                    self._log_rejections(now)
                    self.writer.roll_expired(time.time_ns())
                    next_status = now + STATUS_SECONDS
                if now >= next_fsync:
                    self.writer.fsync()
                    next_fsync = now + self.config.cache.fsync_seconds
                if now >= next_retention:
                    self.catalogue.enforce(self.quota, self.writer.open_paths())
                    next_retention = now + RETENTION_SECONDS
                timeout = max(0.0, min(next_status, next_fsync, next_retention) - now)
                for key, _ in selector.select(timeout):
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(64)
                        continue
                    self.handle(*key.data)
        finally:
            self.writer.close()
            selector.close()
            for io, _ in self.receivers:
                io.sock.close()
            stats = self.statistics()
            status.remove(self.config.cache.dir, self.name)
            log.info("relay stopped: %d datagrams in %d batches, %d rejected, %d kernel drops",
                     stats["datagrams"], stats["batches"], sum(self.router.rejected.values()),
                     stats["kernel_drops"])
