"""The relay process: a short loop of receive batch, route, write, forward.

All decisions are in ``relay.engine`` (the loop's core: routing, counters, timers),
``relay.core`` (routing, decimation) and ``cache`` (blocks, roll-over, retention); this
module owns the sockets, the clock and the signals. What is slow (retention scans,
schema loads, status files) runs on one worker thread (``relay.jobs``); the loop only
takes its results, such as a new registry, between two batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import logging
import os
import selectors
import socket
import time
from pathlib import Path

from speeddata import clocks, loss, multicast, status
from speeddata.cache import ledger
from speeddata.cache.catalogue import (
    FULL_SCAN_SECONDS,
    Catalogue,
    RetentionGate,
    dir_signature,
    fixed_quota,
)
from speeddata.cache.clocks import OffsetLog
from speeddata.cache.store import CacheWriter
from speeddata.config import Config
from speeddata.errors import CacheError, SchemaError
from speeddata.logs import Throttle
from speeddata.relay import netio
from speeddata.relay.control import ControlPlane
from speeddata.relay.core import BatchRouted, Received, Router
from speeddata.relay.engine import RelayCore
from speeddata.relay.jobs import Jobs
from speeddata.relay.pacing import Linger
from speeddata.schemas import Channel, DirWatch, Registry, load_file, log_schema_errors
from speeddata.shutdown import on_stop_signal
from speeddata.snapshots import (
    CacheFigures,
    ChannelFigures,
    ControlFigures,
    JobFigures,
    LossRow,
    Multicast,
    ProbeFigures,
    RelaySnapshot,
    RetentionFigures,
    SenderReportFigures,
    Stalls,
    UnknownFingerprint,
)

log = logging.getLogger("speeddata.relay")

STATUS_SECONDS = 1.0
WATCH_SECONDS = 0.25  # how often the channels directory is looked at (a few stat calls)
RETENTION_SECONDS = 10.0
REJECT_LOG_SECONDS = 10.0
DRAIN_SECONDS = 3.0  # at stop, what the sockets still hold is cached for at most this long


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
        # each schema file's (mtime, size) and channel: a reload parses what changed only
        self._parsed: dict[str, tuple[tuple[int, int], Channel]] = {}
        self.registry, errors = self._load_dir()
        self.schema_errors = [str(error) for error in errors]  # shown by 'speeddata status'
        log_schema_errors(errors, log)
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
        # status and retention first thing: the start-up retention scan runs on the worker
        self.core = RelayCore(self.router, {
            "watch": WATCH_SECONDS, "status": STATUS_SECONDS,
            "fsync": config.cache.fsync_seconds, "retention": RETENTION_SECONDS,
        }, time.monotonic(), first={"status": 0.0, "retention": 0.0})
        self.jobs = Jobs()
        self.retention_gate = RetentionGate()  # used on the worker thread only
        # a registry the worker parsed, taken by the loop between two batches
        self._new_registry: tuple[Registry, list[str]] | None = None
        self.writer = CacheWriter(
            config.cache.dir, config.cache.rotate_bytes, config.cache.rotate_seconds, worker
        )
        self.catalogue = Catalogue(config.cache.dir, lambda: protected_ranges(config.cache.dir))
        self.quota = fixed_quota(config.cache.dir, config.cache.max_bytes, self.catalogue.size)
        # [archive] required: retention deletes only what the archiver's ledger holds
        self.ledger = ledger.Ledger(config.cache.dir / ledger.LEDGER) if (
            config.archive.endpoint and config.archive.required) else None
        mc = config.multicast
        forwarding = mc.full or mc.decimated
        self.mc_socket = multicast.sender(mc.interface, mc.ttl) if forwarding else None
        # tags made on any host of the deployment (one worker is enough: one tag store)
        self.control = ControlPlane(config, allow) if mc.control and not worker else None
        self.full = (mc.full.host, mc.full.port) if mc.full else None
        self.decimated = (mc.decimated.host, mc.decimated.port) if mc.decimated else None
        self.counts = {"multicast_send_errors": 0, "cache_dropped": 0,
                       "status_write_errors": 0, "drained_at_stop": 0, "dropped_at_stop": 0}
        self.started = time.time()
        self.offsets = OffsetLog(config.cache.dir)  # each sender's clock, on the worker
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
        self._socket_drops = 0  # /proc/net/udp's figure, read on the worker thread

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler or another thread)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def install_signal_handlers(self) -> None:
        on_stop_signal(self.stop)

    def handle(self, io: netio.PortableIO | netio.MmsgIO, port: int) -> int:
        """Receive, cache and forward one batch; returns how many datagrams it held."""
        batch = io.receive()
        if not len(batch.lengths):
            return 0
        now_ns = time.time_ns()
        actions = self.core.handle_batch(batch, port, now_ns)
        for sender, probe in actions.routed.other.probes:  # t1: the batch's receive time
            with contextlib.suppress(OSError):  # budgeted (ProbeBudget), request-sized
                io.sock.sendto(clocks.answer(probe, now_ns, time.time_ns()),
                               loss.address_of(sender))
        for channel, payload, count in actions.writes:
            try:
                self.writer.append_block(channel, payload, count, now_ns)
            except (OSError, CacheError) as exc:
                self._cache_failed(channel.name, count, exc)
        if self.mc_socket is not None:
            self._forward(io, batch, actions.routed)
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

    def statistics(self) -> RelaySnapshot:
        now = time.monotonic()
        then, before = self._last_snapshot
        elapsed = max(now - then, 1e-9)
        channels = {name: ChannelFigures(
            **vars(c), rate_hz=round((c.datagrams - before.get(name, 0)) / elapsed, 1))
            for name, c in self.router.counters.items()}
        self._last_snapshot = (now, {n: c.datagrams for n, c in channels.items()})
        engine = self.core.counts
        return RelaySnapshot(
            service="relay", pid=os.getpid(), written=time.time(), started=self.started,
            worker=self.worker,
            listen=f"{self.config.relay.host}:{self.port}",
            legacy_ports={str(p): c.name for p, c in self.router.legacy_ports.items()},
            multicast=Multicast(full=str(self.config.multicast.full or ""),
                                decimated=str(self.config.multicast.decimated or ""),
                                interface=self.config.multicast.interface),
            io=self.receivers[0][0].name,
            rcvbuf=self.rcvbuf,
            schema_errors=list(self.schema_errors),
            kernel_drops=self.kernel_drops(),
            batches=engine["batches"], datagrams=engine["datagrams"],
            sender_reports_routed=engine["sender_reports"],
            time_probes_answered=engine["time_probes"],
            cached_bytes=engine["cached_bytes"], registry_swaps=engine["registry_swaps"],
            loop_stalls=Stalls(**self.core.stalls.statistics()),
            control=(ControlFigures(**self.control.statistics()) if self.control is not None
                     else None),
            multicast_send_errors=self.counts["multicast_send_errors"],
            cache_dropped=self.counts["cache_dropped"],
            status_write_errors=self.counts["status_write_errors"],
            drained_at_stop=self.counts["drained_at_stop"],
            dropped_at_stop=self.counts["dropped_at_stop"],
            channels=channels,
            rejected=dict(self.router.rejected),
            last_rejection=dict(self.router.last_rejection),
            unknown_fingerprints={k: UnknownFingerprint(**v)
                                  for k, v in self.router.unknown.items()},
            sender_reports=SenderReportFigures(**self.router.hop.statistics()),
            time_probes=ProbeFigures(**self.router.probes.statistics()),
            clock_series=self.offsets.statistics(),
            jobs=JobFigures(**self.jobs.statistics()),
            retention=RetentionFigures(**self.retention_gate.statistics()),
            senders=[LossRow(**row) for row in self.router.loss(time.time_ns())],
            cache=CacheFigures(dir=str(self.config.cache.dir), quota=self.quota,
                               deleted_files=self.catalogue.deleted_files,
                               deleted_bytes=self.catalogue.deleted_bytes,
                               **self.writer.statistics()),
        )

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on this relay's sockets (legacy ports too): the
        larger of SO_RXQ_OVFL, stamped on the next datagram queued after a drop (so drops
        after the last one never show there), and /proc/net/udp, read by the status job."""
        return max(sum(io.kernel_drops for io, _ in self.receivers), self._socket_drops)

    def _read_socket_drops(self) -> None:
        drops = multicast.socket_drops([io.sock for io, _ in self.receivers])
        if drops is not None:
            self._socket_drops = max(self._socket_drops, drops)

    def enforce_retention(self, keep: set[Path] | None = None, written: int = 0) -> None:
        """One retention round (on the worker thread): a scan only when the running total
        says the cache nears its quota or the directory changed (``RetentionGate``)."""
        now = time.monotonic()
        if not self.retention_gate.due(self.quota, dir_signature(self.config.cache.dir), now,
                                       written):
            return
        archived = None
        if self.ledger is not None:
            self.ledger.refresh()
            archived = ledger.covered(self.ledger, self.config.cache.dir)
        # closed files are read once, and all of them again every FULL_SCAN_SECONDS
        remember = now - self.retention_gate.scanned_at < FULL_SCAN_SECONDS
        self.catalogue.enforce(self.quota, self.writer.open_paths() if keep is None else keep,
                               archived, remember)
        self.retention_gate.scanned(self.catalogue.total, dir_signature(self.config.cache.dir),
                                    now, written)

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

    def _write_status(self, snapshot: RelaySnapshot) -> None:
        """The status file (on the worker thread); a full disk costs the file, never the
        relay. ``snapshot`` was taken on the loop; the exact drop counters are read here."""
        self._read_socket_drops()
        snapshot = dataclasses.replace(
            snapshot, kernel_drops=max(snapshot.kernel_drops, self._socket_drops))
        try:
            status.write(self.config.cache.dir, self.name, snapshot)
        except OSError as exc:
            self.counts["status_write_errors"] += 1
            if self._status_log.ready(time.monotonic()):
                log.error("cannot write the status file (%s); relaying and caching go on", exc)

    def _log_rejections(self, now: float) -> None:
        drops = self.kernel_drops()
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

    def _load_dir(self) -> tuple[Registry, list[SchemaError]]:
        """``Registry.load_dir``, reusing the channels of files unchanged since the last
        load: a 1 MiB schema is parsed once (about a second, some of it holding the GIL
        for ~100 ms at a time), not again at every other channel's registration."""
        directory = self.config.channels.dir
        if not directory.is_dir():
            return Registry.load_dir(directory)  # says that it does not exist
        registry, errors = Registry(), []
        parsed = {}
        for path in sorted(directory.glob("*.avsc")):
            try:
                st = path.stat()
                key = (st.st_mtime_ns, st.st_size)
                known = self._parsed.get(path.name)
                channel = known[1] if known and known[0] == key else load_file(path)
                parsed[path.name] = (key, channel)
                registry.add(channel)
            except SchemaError as exc:
                errors.append(exc)
            except FileNotFoundError:  # removed meanwhile: the next look sees it gone
                continue
        self._parsed = parsed
        return registry, errors

    def load_channels(self) -> None:
        """On the worker thread: if the channels directory changed, load and parse it
        (a large schema costs this thread, not the loop) and leave the new registry for
        the loop to take between two batches."""
        if not self.watch.changed():
            return
        registry, errors = self._load_dir()
        log_schema_errors(errors, log)
        self._new_registry = (registry, [str(error) for error in errors])
        with contextlib.suppress(OSError):  # the loop takes it now, not at its next timer
            self._wake_w.send(b"r")

    def take_registry(self) -> None:
        """On the loop, between two batches: route by the registry the worker parsed (one
        reference swapped; datagrams of the other channels go on as before)."""
        new, self._new_registry = self._new_registry, None
        if new is None:
            return
        registry, self.schema_errors = new
        before = {c.name: c.fingerprint for c in self.registry}
        after = {c.name: c.fingerprint for c in registry}
        self.registry = registry
        self.core.swap_registry(registry)
        log.info("channels reloaded from %s: added %s, edited %s, retired %s",
                 self.config.channels.dir, sorted(set(after) - set(before)) or "none",
                 sorted(n for n in set(after) & set(before) if after[n] != before[n]) or "none",
                 sorted(set(before) - set(after)) or "none")

    def on_timer(self, job: str, now: float) -> None:
        """Do what a due timer asks: the quick part here, the slow part queued for the
        worker (at most one of each kind waits; ``Jobs``)."""
        if job == "watch":  # a new channel is taken within a second
            self.jobs.submit("channels", self.load_channels)
        elif job == "status":
            try:  # taken here: the counters change only here
                snapshot = self.statistics()
            except Exception:  # a bug in the figures costs the status file, not the relay
                self.counts["status_write_errors"] += 1
                log.exception("the relay's status could not be made")
            else:
                self.jobs.submit("status", lambda: self._write_status(snapshot), newest=True)
            if self.router.clock_points:  # senders' offsets, into the series on the worker
                self.jobs.submit("clocks", lambda: self.offsets.drain(self.router.clock_points))
            self._log_rejections(now)
            if self.mc_socket is not None:
                self._report_forwarded()
            self.writer.roll_expired(time.time_ns())
        elif job == "fsync":
            self.writer.fsync()  # hands the descriptors to the syncer thread
        elif job == "retention":
            keep, written = self.writer.open_paths(), int(self.core.counts["cached_bytes"])
            self.jobs.submit("retention", lambda: self.enforce_retention(keep, written))

    def _drain(self) -> None:
        """At stop: cache what the sockets still hold (datagrams in flight) for at most
        ``DRAIN_SECONDS``; what is left after that is read, counted as dropped at stop and
        discarded (ten times faster than caching), so that every datagram sent is cached,
        rejected or counted."""
        deadline = time.monotonic() + DRAIN_SECONDS
        for io, port in self.receivers:
            while time.monotonic() < deadline:
                taken = self.handle(io, port)
                if not taken:
                    break
                self.counts["drained_at_stop"] += taken
        deadline = time.monotonic() + DRAIN_SECONDS
        for io, _ in self.receivers:
            while time.monotonic() < deadline:
                left = len(io.receive().lengths)
                if not left:
                    break
                self.counts["dropped_at_stop"] += left

    def run(self) -> None:
        """Serve until ``stop()``; then drain the sockets, flush, fsync, close and remove
        the status file.

        Each iteration: select until the core's next timer, receive and handle what came,
        run the timers due, and record how long it was away from ``select`` (the stall
        histogram in ``statistics()``)."""
        self.writer.repair_all()
        self.jobs.start()
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
        linger = Linger(self.config.relay.linger_ms / 1000, self.config.relay.batch)
        core = self.core
        try:
            while not self._stopping:
                events = selector.select(max(0.0, core.get_timer() - time.monotonic()))
                began = time.monotonic()
                if self._new_registry is not None:
                    self.take_registry()
                received = 0
                for key, _ in events:
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(64)
                        continue
                    received += self.handle(*key.data)
                now = time.monotonic()
                for job in core.handle_timer(now):
                    self.on_timer(job, now)
                end = time.monotonic()
                core.record_stall(end - began)
                if received and (wait := linger.after(received, end)):
                    time.sleep(wait)
        finally:
            self._drain()
            self.jobs.stop()
            self.writer.close()
            selector.close()
            self._read_socket_drops()  # exact, now that nothing more is taken
            for io, _ in self.receivers:
                io.sock.close()
            if self.control is not None:
                self.control.stop()
            status.remove(self.config.cache.dir, self.name)
        # at warning level when something was lost, so that 'speeddata relay -q' says it
        drops, counts = self.kernel_drops(), self.counts
        lost = drops or counts["cache_dropped"] or counts["dropped_at_stop"]
        log.log(logging.WARNING if lost else logging.INFO,
                "relay stopped: %d datagrams in %d batches, %d rejected, %d kernel drops, "
                "%d not cached (disk), %d cached while stopping, %d dropped at stop; longest "
                "loop stall %.1f ms", core.counts["datagrams"], core.counts["batches"],
                sum(self.router.rejected.values()), drops, counts["cache_dropped"],
                counts["drained_at_stop"], counts["dropped_at_stop"], core.stalls.longest_ms)
