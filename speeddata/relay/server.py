"""The relay process: a short loop of receive batch, route, write, forward.

All decisions are in ``relay.core`` (routing, decimation) and ``cache`` (blocks,
roll-over, retention); this module owns the sockets, the clock and the signals.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import selectors
import signal
import socket
import time
from pathlib import Path

from speeddata import archive, loss, multicast, status
from speeddata.cache.catalogue import Catalogue, fixed_quota
from speeddata.cache.store import CacheWriter
from speeddata.config import Config
from speeddata.errors import CacheError
from speeddata.logs import Throttle
from speeddata.relay import netio
from speeddata.relay.control import ControlPlane
from speeddata.relay.core import BatchRouted, BatchRouter, Linger, Received, Router
from speeddata.schemas import DirWatch, Registry

log = logging.getLogger("speeddata.relay")

STATUS_SECONDS = 1.0
WATCH_SECONDS = 0.25  # how often the channels directory is looked at (a few stat calls)
RETENTION_SECONDS = 10.0
REJECT_LOG_SECONDS = 10.0


def protected_ranges(cache_dir: Path) -> list[tuple[int, int]]:
    """Receive-time ranges retention must keep: tags not yet exported."""
    from speeddata import tags  # the tag store lives in the cache directory

    return tags.protected_ranges(cache_dir)


class Relay:
    """One relay: sockets, cache writer and router, driven by ``run()`` until stopped."""

    def __init__(self, config: Config, worker: int | None = None):
        self.config = config
        self.worker = worker
        self.name = "relay" if worker is None else f"relay-w{worker}"
        self.watch = DirWatch(config.channels.dir)  # new and edited schemas, while running
        self.registry, errors = Registry.load_dir(config.channels.dir)
        self.schema_errors = [str(error) for error in errors]  # shown by 'speeddata status'
        for error in errors:
            log.error("%s (channel skipped)", error)
        if not len(self.registry):
            log.warning("no valid channel schemas in %s: every datagram will be rejected",
                        config.channels.dir)
        reuse = worker is not None
        main = netio.open_receiver(config.relay.host, config.relay.port, config.relay.rcvbuf, reuse)
        self.port = main.getsockname()[1]  # differs from the config for port 0 (tests)
        self.rcvbuf = netio.receive_buffer(main)  # what the kernel granted
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
        allow = [ipaddress.IPv4Network(net) for net in config.relay.allow]
        self.receivers = [
            (netio.open_io(config.relay.io, sock, config.relay.batch, config.relay.max_datagram,
                           True), port)
            for port, sock in sockets.items()
        ]
        self.router = Router(
            self.registry, legacy, config.relay.max_datagram, config.multicast.decimated_rate_hz,
            allow)
        self.batch_router = BatchRouter(self.router)
        self.writer = CacheWriter(
            config.cache.dir, config.cache.rotate_bytes, config.cache.rotate_seconds, worker
        )
        self.catalogue = Catalogue(config.cache.dir, lambda: protected_ranges(config.cache.dir))
        self.quota = fixed_quota(config.cache.dir, config.cache.max_bytes, self.catalogue.size)
        # [archive] required: retention deletes only what the archiver's ledger holds
        self.ledger = archive.Ledger(config.cache.dir / archive.LEDGER) if (
            config.archive.endpoint and config.archive.required) else None
        mc = config.multicast
        forwarding = mc.full or mc.decimated
        self.mc_socket = multicast.sender(mc.interface, mc.ttl) if forwarding else None
        # tags made on any host of the deployment (one worker is enough: one tag store)
        self.control = ControlPlane(config, allow) if mc.control and not worker else None
        self.full = (mc.full.host, mc.full.port) if mc.full else None
        self.decimated = (mc.decimated.host, mc.decimated.port) if mc.decimated else None
        self.counts = {"batches": 0, "datagrams": 0, "sender_reports": 0,
                       "multicast_send_errors": 0,
                       "cache_dropped": 0, "status_write_errors": 0}
        self.started = time.time()
        self.epoch = loss.new_epoch()  # tells consumers this relay from a restarted one
        self.report_name = f"{socket.gethostname()}/{self.name}"  # in its forward reports
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._reject_log = Throttle(REJECT_LOG_SECONDS)
        self._disk_log = Throttle(REJECT_LOG_SECONDS)
        self._send_log = Throttle(REJECT_LOG_SECONDS)
        self._status_log = Throttle(REJECT_LOG_SECONDS)
        self._drop_log = Throttle(REJECT_LOG_SECONDS)
        self._drops_logged = 0
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

    def handle(self, io: netio.PortableIO | netio.MmsgIO, port: int) -> int:
        """Receive, cache and forward one batch; returns how many datagrams it held."""
        batch = io.receive()
        if not len(batch.lengths):
            return 0
        now_ns = time.time_ns()
        routed = self.batch_router.route(batch, port, now_ns)
        other = routed.other
        self.counts["batches"] += 1
        self.counts["datagrams"] += len(batch.lengths) - len(other.reports)
        self.counts["sender_reports"] += len(other.reports)
        writes = routed.writes + [(c, b"".join(bodies), len(bodies))
                                  for c, bodies in other.bodies.items()]
        for channel, payload, count in writes:
            try:
                self.writer.append_block(channel, payload, count, now_ns)
            except (OSError, CacheError) as exc:
                self._cache_failed(channel.name, count, exc)
        if self.mc_socket is not None:
            self._forward(io, batch, routed)
        return len(batch.lengths)

    def _forward(self, io: netio.PortableIO | netio.MmsgIO, batch: Received,
                 routed: BatchRouted) -> None:
        other = routed.other
        for address, indices, extra in ((self.full, routed.full, other.full),
                                        (self.decimated, routed.decimated, other.decimated)):
            if address is None:
                continue
            failed = io.forward(self.mc_socket, batch, indices, address)
            if extra:  # legacy bodies, forwarded with their header added
                failed += netio.send_all(self.mc_socket, extra, address)
            if failed:
                self.counts["multicast_send_errors"] += failed
                if self._send_log.ready(time.monotonic()):
                    log.error("multicast: %d datagrams could not be sent to %s:%d (%d so far); "
                              "check [multicast] interface and the route to the group",
                              failed, *address, self.counts["multicast_send_errors"])

    def _cache_failed(self, channel: str, count: int, exc: Exception) -> None:
        """Accepted datagrams that could not be cached: counted, logged at a bounded rate."""
        self.counts["cache_dropped"] += count
        self.router.counters[channel].cache_dropped += count
        if self._disk_log.ready(time.monotonic()):
            hint = " (disk full: free space or lower [cache] max_bytes)" if (
                getattr(exc, "errno", None) == errno.ENOSPC) else ""
            log.error("cache write for channel %s failed: %s%s; datagrams still forwarded, "
                      "%d not cached so far", channel, exc, hint, self.counts["cache_dropped"])

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
            "rcvbuf": self.rcvbuf,
            "schema_errors": self.schema_errors,
            "kernel_drops": sum(io.kernel_drops for io, _ in self.receivers),
            "control": self.control.statistics() if self.control is not None else None,
            **self.counts,
            **router,
            "senders": self.router.loss(time.time_ns()),
            "cache": {"dir": str(self.config.cache.dir), "quota": self.quota,
                      "deleted_files": self.catalogue.deleted_files,
                      "deleted_bytes": self.catalogue.deleted_bytes,
                      **self.writer.statistics()},
        }

    def enforce_retention(self) -> None:
        archived = None
        if self.ledger is not None:
            self.ledger.refresh()
            archived = archive.covered(self.ledger, self.config.cache.dir)
        self.catalogue.enforce(self.quota, self.writer.open_paths(), archived)

    def _report_forwarded(self) -> None:
        """Tell each group what was forwarded on it so far (``loss.ForwardReport``), so
        that its consumers count what the multicast hop lost."""
        counters = self.router.counters
        for address, what in ((self.full, "datagrams"), (self.decimated, "decimated")):
            if address is None:
                continue
            forwarded = {}
            for channel in self.registry:
                c = counters.get(channel.name)
                forwarded[channel.fingerprint] = getattr(c, what) if c else 0
            reports = loss.forward_reports(time.time_ns(), self.epoch, self.report_name,
                                           forwarded)
            self.counts["multicast_send_errors"] += netio.send_all(
                self.mc_socket, reports, address)

    def _write_status(self, now: float) -> None:
        """The status file; a full disk costs the file, never the relay."""
        try:
            status.write(self.config.cache.dir, self.name, self.statistics())
        except OSError as exc:
            self.counts["status_write_errors"] += 1
            if self._status_log.ready(now):
                log.error("cannot write the status file (%s); relaying and caching go on", exc)

    def _log_rejections(self, now: float) -> None:
        drops = sum(io.kernel_drops for io, _ in self.receivers)
        if drops > self._drops_logged and self._drop_log.ready(now):
            log.warning("the kernel dropped %d datagrams so far: the relay fell behind (receive "
                        "buffer %d bytes; a larger [relay] rcvbuf, --workers, or less load)",
                        drops, self.rcvbuf)
            self._drops_logged = drops
        total = sum(self.router.rejected.values())
        if total > self._rejected_logged and self._reject_log.ready(now):
            reasons = ", ".join(f"{k}={v}" for k, v in self.router.rejected.items() if v)
            example = "; ".join(self.router.last_rejection.values())
            log.warning("rejected %d datagrams so far (%s); last: %s", total, reasons, example)
            self._rejected_logged = total

    def reload_channels(self) -> None:
        """Take the channels directory as it is now, between two batches: datagrams of
        the other channels go on as before, none is lost."""
        registry, errors = Registry.load_dir(self.config.channels.dir)
        self.schema_errors = [str(error) for error in errors]
        for error in errors:
            log.error("%s (channel skipped)", error)
        before = {c.name: c.fingerprint for c in self.registry}
        after = {c.name: c.fingerprint for c in registry}
        self.registry = registry
        self.router.set_registry(registry)
        log.info("channels reloaded from %s: added %s, edited %s, retired %s",
                 self.config.channels.dir, sorted(set(after) - set(before)) or "none",
                 sorted(n for n in set(after) & set(before) if after[n] != before[n]) or "none",
                 sorted(set(before) - set(after)) or "none")

    def run(self) -> None:
        """Serve until ``stop()``; then flush, fsync, close and remove the status file."""
        self.writer.repair_all()
        self.enforce_retention()
        selector = selectors.DefaultSelector()
        for io, port in self.receivers:
            selector.register(io.sock, selectors.EVENT_READ, (io, port))
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        if self.control is not None:
            self.control.start()
        log.info(
            "%s listening on %s:%d (io %s, legacy %s), cache %s (quota %.1f GiB), multicast "
            "full %s decimated %s via %s",
            self.name, self.config.relay.host, self.port, self.receivers[0][0].name,
            {p: c.name for p, c in self.router.legacy_ports.items()} or "none",
            self.config.cache.dir, self.quota / 2**30, self.config.multicast.full or "off",
            self.config.multicast.decimated or "off", self.config.multicast.interface,
        )
        now = time.monotonic()
        next_fsync = now + self.config.cache.fsync_seconds
        next_status = now
        next_watch = now + WATCH_SECONDS
        next_retention = now + RETENTION_SECONDS
        linger = Linger(self.config.relay.linger_ms / 1000, self.config.relay.batch)
        try:
            while not self._stopping:
                now = time.monotonic()
                if now >= next_watch:  # a new channel is taken within a second
                    if self.watch.changed():
                        self.reload_channels()
                    next_watch = now + WATCH_SECONDS
                if now >= next_status:
                    self._write_status(now)
                    self._log_rejections(now)
                    if self.mc_socket is not None:
                        self._report_forwarded()
                    self.writer.roll_expired(time.time_ns())
                    next_status = now + STATUS_SECONDS
                if now >= next_fsync:
                    self.writer.fsync()
                    next_fsync = now + self.config.cache.fsync_seconds
                if now >= next_retention:
                    self.enforce_retention()
                    next_retention = now + RETENTION_SECONDS
                timeout = max(0.0, min(next_status, next_watch, next_fsync, next_retention) - now)
                received = 0
                for key, _ in selector.select(timeout):
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(64)
                        continue
                    received += self.handle(*key.data)
                if received and (wait := linger.after(received, time.monotonic())):
                    time.sleep(wait)
        finally:
            self.writer.close()
            selector.close()
            for io, _ in self.receivers:
                io.sock.close()
            if self.control is not None:
                self.control.stop()
            stats = self.statistics()
            status.remove(self.config.cache.dir, self.name)
            log.info("relay stopped: %d datagrams in %d batches, %d rejected, %d kernel drops, "
                     "%d not cached (disk)", stats["datagrams"], stats["batches"],
                     sum(self.router.rejected.values()), stats["kernel_drops"],
                     stats["cache_dropped"])


def _worker_main(config: Config, worker: int) -> None:
    relay = Relay(config, worker=worker)
    relay.install_signal_handlers()
    relay.run()


def run_workers(config: Config) -> int:
    """``--workers N``: N relays on one port (SO_REUSEPORT); the kernel spreads senders
    over them by address, each writes its own ``-wN`` cache files. Stops them all on
    SIGTERM/Ctrl-C; exits non-zero if one dies, so a supervisor restarts the set."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_worker_main, args=(config, i), name=f"relay-w{i}")
               for i in range(config.relay.workers)]
    stopping = []

    def stop(*_: object) -> None:
        stopping.append(True)
        for w in workers:
            if w.pid and w.is_alive():
                os.kill(w.pid, signal.SIGTERM)

    for w in workers:
        w.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    log.info("relay: %d workers on port %d", len(workers), config.relay.port)
    while any(w.is_alive() for w in workers):
        for w in workers:
            w.join(0.2)
            if not stopping and w.exitcode not in (None, 0):
                log.error("%s exited with %s; stopping the other workers", w.name, w.exitcode)
                stop()
                for other in workers:
                    other.join()
                return 1
    return 0
