"""What the stripchart's endpoints share: the hub, the multicast feeds, the pages.

Everything here that touches the hub runs on the event loop. Disk work (the channels
directory, the status files, the cache's size) runs in worker threads through
functions that never touch the hub; their results are applied back on the loop.
Making a ``StripchartServer`` reads the schemas and nothing else: sockets, tasks and
files come with ``start``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from speeddata import __version__, multicast, status
from speeddata.cache.catalogue import Catalogue
from speeddata.config import Config, Group
from speeddata.derived.live import DerivedView, with_derived
from speeddata.errors import ConfigError
from speeddata.logs import Throttle
from speeddata.schemas import DirWatch, Registry, load_channels
from speeddata.snapshots import (
    DamageFigures,
    LossRow,
    RelaySnapshot,
    SenderReportFigures,
    ServeChannel,
    ServeSnapshot,
    as_json,
)
from speeddata.stripchart.feed import Feed
from speeddata.stripchart.guard import is_loopback, reachable_address
from speeddata.stripchart.history import default_levels
from speeddata.stripchart.hub import Hub
from speeddata.stripchart.jobs import PivotJobs
from speeddata.stripchart.scrollback import CacheView
from speeddata.stripchart.session import SUBSCRIBE_BURST, SUBSCRIBE_RATE, PageSession

log = logging.getLogger("speeddata.stripchart")

STATUS_SECONDS = 1.0
WATCH_SECONDS = 0.5  # how often the channels directory is looked at
SUMMARY_SECONDS = 5.0  # between rounds of summarizing closed cache files
MAX_PAGES = 100  # WebSocket clients at once; the next is closed with 1013 (try again later)
LOG_SECONDS = 10.0  # refused pages are logged at most this often

T = TypeVar("T")


def disk_overview(config: Config) -> tuple[dict[str, Any], dict[str, int]]:
    """The other services' status files and the cache's size and free disk (disk only:
    for a worker thread)."""
    cache = config.cache.dir
    disk = shutil.disk_usage(cache if cache.exists() else cache.parent)
    return status.read_all(cache), {"bytes": Catalogue(cache).size(),
                                    "free_disk_bytes": disk.free}


def running_relays(config: Config) -> dict[str, RelaySnapshot]:
    """The running relays' status (every worker's), by name (disk only)."""
    return {name: seen.snapshot for name, seen in status.read(config.cache.dir).items()
            if isinstance(seen.snapshot, RelaySnapshot) and seen.running}


def unknown_fingerprints(config: Config) -> list[dict[str, Any]]:
    """What relays received that no channel has: fingerprint, sender, count, times (disk
    only)."""
    return [{"fingerprint": fp, "relay": name, **dataclasses.asdict(seen)}
            for name, snapshot in running_relays(config).items()
            for fp, seen in snapshot.unknown_fingerprints.items()]


class StripchartServer:
    """Everything the endpoints share: the hub, the feeds, the pages. ``token``: what
    pages must present (None: nothing), resolved by whoever starts the server."""

    def __init__(self, config: Config, token: str | None = None) -> None:
        if not (config.multicast.full or config.multicast.decimated):
            raise ConfigError("[multicast] full and decimated are both off: the stripchart "
                              "server has no data to draw; turn one on")
        self.config = config
        self.watch = DirWatch(config.channels.dir)  # channels added while running
        self.registry = load_channels(config.channels.dir, log)
        drawn = with_derived(config.channels.dir, self.registry)  # and derived channels
        self.hub = Hub(drawn, default_levels(config.web.history_seconds,
                                             config.web.detail_seconds),
                       int(config.web.clock_tolerance_seconds * 1e9),
                       [ipaddress.IPv4Network(net) for net in config.relay.allow])
        self.pages: set[PageSession] = set()
        self.max_pages = MAX_PAGES
        self.subscribe_rate, self.subscribe_burst = SUBSCRIBE_RATE, SUBSCRIBE_BURST  # per page
        self.feeds: dict[str, Feed] = {}
        self.sockets: dict[str, socket.socket] = {}  # the groups' listeners, for their drops
        self.past_kernel_drops = 0  # of groups left since
        self.started = time.time()
        self.past = CacheView(config.cache.dir, self.registry)  # scroll-back
        self.jobs: PivotJobs | None = None  # the pivot jobs, once the app has them
        self.token = token
        # no token on the network (a kiosk): pages read, and change nothing unless allowed
        self.read_only = (self.token is None and not is_loopback(config.web.host)
                          and not config.web.open_writes)
        # the LAN address of a server on every interface is looked up at start
        self.url = f"http://{config.web.host}:{config.web.port}/"
        self.frames_sent = 0
        self.closed_slow = 0
        self.pages_refused = 0  # over max_pages
        self.push_failures = 0  # pages closed with 1011: their frames could not be made
        self.ended: dict[str, int] = {}  # the counters of pages that have gone
        self._refused_log = Throttle(LOG_SECONDS)
        self._reloading = asyncio.Lock()  # one change of the channels at a time, in order
        self._tasks: list[asyncio.Task[None]] = []
        # one group for every page: full (exact envelopes) unless configured or turned off
        wanted = config.web.source
        self.source = wanted if getattr(config.multicast, wanted) else (
            "decimated" if wanted == "full" else "full")

    # -- start and stop (the app's lifespan) --------------------------------------------
    async def start(self) -> None:
        self.url = f"http://{reachable_address(self.config.web.host)}:{self.config.web.port}/"
        await self.join(self.source, getattr(self.config.multicast, self.source))
        self._tasks = [asyncio.create_task(self.write_status()),
                       asyncio.create_task(self.summarize_cache()),
                       asyncio.create_task(self.watch_channels())]
        log.info("stripchart at %s (%d channels)", self.url, len(self.registry))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for name in list(self.feeds):
            self.leave(name)
        status.remove(self.config.cache.dir, "serve")

    # -- multicast feeds ----------------------------------------------------------------
    async def join(self, name: str, group: Group | None) -> None:
        if group is None or name in self.feeds:
            return
        sock = multicast.listener(group, self.config.multicast.interface)
        self.feeds[name] = Feed(self.hub, name, sock)
        self.sockets[name] = sock
        log.info("joined the %s group %s on %s", name, group, self.config.multicast.interface)

    def leave(self, name: str) -> None:
        feed = self.feeds.pop(name, None)
        sock = self.sockets.pop(name, None)
        if feed is not None:
            feed.close()
        if sock is not None:
            self.past_kernel_drops += multicast.kernel_drops(sock) or 0
            sock.close()
            log.info("left the %s group", name)

    def flush_feeds(self) -> None:
        """Fold in what the groups hold now (what their sockets hold too): a frame then
        shows every sample received."""
        for feed in self.feeds.values():
            feed.take()
            feed.flush()

    # -- pages --------------------------------------------------------------------------
    def admit(self, now: float, now_ns: int) -> PageSession | None:
        """A session for a new page, or None when ``max_pages`` are connected (counted,
        logged at a bounded rate)."""
        if len(self.pages) >= self.max_pages:
            self.pages_refused += 1
            if self._refused_log.ready(now):
                log.warning("a page refused: %d pages connected, the most this server "
                            "takes; %d refused so far", len(self.pages), self.pages_refused)
            return None
        page = PageSession(self.hub, source=self.source, frame_hz=self.config.web.frame_hz,
                           now=now, subscribe_rate=self.subscribe_rate,
                           subscribe_burst=self.subscribe_burst)
        self.pages.add(page)
        return page

    def forget(self, page: PageSession) -> None:
        if page in self.pages:
            self.pages.discard(page)
            for key, value in page.statistics().items():
                self.ended[key] = self.ended.get(key, 0) + value

    def page_totals(self) -> dict[str, int]:
        """Every page's counters summed, those that have gone included."""
        totals = dict(self.ended)
        for page in self.pages:
            for key, value in page.statistics().items():
                totals[key] = totals.get(key, 0) + value
        return totals

    # -- channels -----------------------------------------------------------------------
    def apply_channels(self, registry: Registry) -> None:
        """Draw ``registry`` from now on (with its derived channels, when a DerivedView:
        those unchanged keep their state); subscriptions to signals it no longer has are
        dropped (each page is told at its next tick)."""
        if isinstance(registry, DerivedView):
            registry.derived.take_state(self.hub.derived)
            self.hub.set_registry(registry)
            registry = registry.base
        else:
            self.hub.set_registry(registry)
        self.registry = registry
        self.past.registry = registry
        pruned = sum(len(page.prune()) for page in self.pages)
        log.info("channels reloaded: %s%s", ", ".join(registry.names()) or "none",
                 f" ({pruned} subscriptions to removed signals dropped)" if pruned else "")

    async def change_channels(self, edit: Callable[[Registry], T] | None = None) -> T | None:
        """Run ``edit`` (disk only: storing or retiring a schema; given the registry
        drawn now) and reload the channels directory, both in a worker thread; then
        apply the result here, on the loop. One change at a time, applied in order."""
        async with self._reloading:
            current = self.registry

            def work() -> tuple[T | None, Registry]:
                result = edit(current) if edit is not None else None
                self.watch.changed()  # what is read now is the state seen
                folder = self.config.channels.dir
                return result, with_derived(folder, load_channels(folder, log))  # disk only

            result, registry = await asyncio.to_thread(work)
            self.apply_channels(registry)
            return result

    async def watch_channels(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                if await asyncio.to_thread(self.watch.changed):
                    await self.change_channels()
            except Exception:  # never the watcher's end: logged, looked at again
                log.exception("reloading the channels failed")

    # -- status -------------------------------------------------------------------------
    def statistics(self) -> ServeSnapshot:
        now_ns = time.time_ns()
        pages = self.page_totals()
        hub = self.hub.statistics()
        return ServeSnapshot(
            service="serve", pid=os.getpid(), written=time.time(), started=self.started,
            url=self.url,
            token_required=self.token is not None,
            listen=f"{self.config.web.host}:{self.config.web.port}",
            groups=sorted(self.feeds),
            source=self.source,
            clients=len(self.pages),
            max_clients=self.max_pages,
            clients_refused=self.pages_refused,
            frames_sent=self.frames_sent,
            frames_dropped=sum(p.client.frames_dropped for p in self.pages),
            closed_slow_clients=self.closed_slow,
            push_failures=self.push_failures,
            subscribes=pages.get("subscribes", 0),
            subscribes_limited=pages.get("subscribes_limited", 0),
            page_bad_messages=pages.get("bad_messages", 0),
            pruned_subscriptions=pages.get("pruned_signals", 0),
            datagrams=self.hub.datagrams,
            rejected=self.hub.rejected,
            refused=hub["refused"],
            feed_errors=hub["feed_errors"],
            forward_reports={g: SenderReportFigures(**f)
                             for g, f in hub["forward_reports"].items()},
            kernel_drops=self.past_kernel_drops + sum(
                multicast.kernel_drops(s) or 0 for s in self.sockets.values()),
            history_bytes=self.hub.memory_bytes(),
            cache_damage=DamageFigures(**self.past.skipped.statistics()),  # by scroll-back
            scrollback=self.past.statistics(),
            pivot_jobs=self.jobs.statistics() if self.jobs is not None else {},
            multicast_loss={group: [LossRow(**row) for row in rows]
                            for group, rows in self.hub.loss(now_ns).items()},
            channels={c["name"]: ServeChannel(rate_hz=c["rate_hz"], datagrams=c["datagrams"],
                                              stale=c["stale"])
                      for c in self.hub.describe(now_ns)},
        )

    async def summarize_cache(self) -> None:
        """Summaries of closed cache files, made ahead in a thread so that the first
        scroll-back over hours is as fast as the next (a few files per round)."""
        while True:
            try:
                await asyncio.to_thread(self.past.catch_up, 1.0)
            except Exception:  # never the server's end: logged, tried again next round
                log.exception("summarizing the cache failed")
            await asyncio.sleep(SUMMARY_SECONDS)

    async def write_status(self) -> None:
        failing = False
        while True:
            try:  # the snapshot taken here, on the loop; written in a thread
                await asyncio.to_thread(status.write, self.config.cache.dir, "serve",
                                        self.statistics())
                failing = False
            except OSError as exc:  # a full disk costs the status file, not the server
                if not failing:  # said once per spell of failures
                    log.error("cannot write the status file (%s); the server goes on", exc)
                failing = True
            await asyncio.sleep(STATUS_SECONDS)

    async def overview(self) -> dict[str, Any]:
        """What ``/api/status`` shows: health and counters, not pids or file paths (they
        tell a visitor nothing useful and an attacker something)."""
        services, cache = await asyncio.to_thread(disk_overview, self.config)
        services["serve"] = {**as_json(self.statistics()), "running": True}
        for snapshot in services.values():
            snapshot.pop("pid", None)
            if isinstance(snapshot.get("cache"), dict):
                snapshot["cache"].pop("dir", None)
        return {"version": __version__, "services": services, "cache": cache}

    async def loss(self) -> dict[str, Any]:
        relays = await asyncio.to_thread(running_relays, self.config)
        senders = [{**dataclasses.asdict(row), "relay": name}
                   for name, snapshot in relays.items() for row in snapshot.senders]
        return {"senders": senders, "multicast": self.hub.loss(time.time_ns())}
