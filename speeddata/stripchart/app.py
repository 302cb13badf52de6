"""The stripchart server: FastAPI on uvicorn/uvloop, fed by the multicast groups.

Datagrams arrive on the event loop through a datagram endpoint and are folded into the
hub once per loop turn (one batch, however many arrived). Each page has its own push
task that sends at most ``frame_hz`` frames a second; a page that cannot keep up only
slows its own task, whose missed ticks are counted as dropped frames and reported to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from speeddata import __version__, loss, multicast, status
from speeddata.cache.catalogue import Catalogue
from speeddata.config import Config, Group
from speeddata.errors import ConfigError, SpeeddataError
from speeddata.schemas import DirWatch, Registry, registration, retire_schema, store_schema
from speeddata.stripchart.guard import Guard, is_loopback, reachable_address, resolve_token
from speeddata.stripchart.history import default_levels
from speeddata.stripchart.hub import Client, Hub, SubscriptionError
from speeddata.stripchart.scrollback import CacheView
from speeddata.tags import check_time

log = logging.getLogger("speeddata.stripchart")

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
SEND_TIMEOUT = 10.0  # a page that takes longer than this to take one frame is closed
SEND_BUFFER = 64 * 1024  # bytes queued per page in the kernel, and again in the server
STATUS_SECONDS = 1.0
WATCH_SECONDS = 0.5  # how often the channels directory is looked at
SUMMARY_SECONDS = 5.0  # between rounds of summarizing closed cache files
MAX_MESSAGE = 64 * 1024


BATCH_SECONDS = 0.015  # datagrams are folded in at most this late, in one batch (half a
# frame at 30 Hz: larger batches cost the hub far less per sample)


class _Feed(asyncio.DatagramProtocol):
    """Collects one group's datagrams and hands them to the hub in batches (every 15 ms
    at most), per relay that sent them; a relay's ForwardReport is taken after the data
    that came before it."""

    def __init__(self, hub: Hub, group: str) -> None:
        self.hub = hub
        self.group = group
        self.pending: dict[Any, list[bytes]] = {}
        self.loop = asyncio.get_running_loop()
        self._flush_at: asyncio.TimerHandle | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # the socket boundary: nothing a datagram makes raise may leave it (asyncio would
        # log it and go on, but the batches pending would be lost with the flush)
        try:
            if data.startswith(loss.FORWARD_REPORT_HEADER):
                self.flush()  # the report counts what came before it
                self.hub.forward_report(self.group, f"{addr[0]}:{addr[1]}", data)
                return
            if self._flush_at is None:
                self._flush_at = self.loop.call_later(BATCH_SECONDS, self.flush)
            self.pending.setdefault(addr, []).append(data)
        except Exception as exc:  # a bug a datagram found: counted, never fatal
            self.hub.feed_failed(exc, 1, f"{addr[0]}:{addr[1]}", time.time_ns())

    def flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        pending, self.pending = self.pending, {}
        for addr, batch in pending.items():
            source = f"{addr[0]}:{addr[1]}"
            try:  # one relay's batch that raises costs that batch, not the others'
                self.hub.ingest(batch, source=(self.group, source))
            except Exception as exc:
                self.hub.feed_failed(exc, len(batch), source, time.time_ns())


class StripchartServer:
    """Everything the endpoints share: the hub, the feeds, the clients."""

    def __init__(self, config: Config) -> None:
        if not (config.multicast.full or config.multicast.decimated):
            raise ConfigError("[multicast] full and decimated are both off: the stripchart "
                              "server has no data to draw; turn one on")
        self.config = config
        self.watch = DirWatch(config.channels.dir)  # channels added while running
        self.registry, errors = Registry.load_dir(config.channels.dir)
        for error in errors:
            log.error("%s (channel skipped)", error)
        self.hub = Hub(self.registry, default_levels(config.web.history_seconds,
                                                     config.web.detail_seconds),
                       int(config.web.clock_tolerance_seconds * 1e9),
                       [ipaddress.IPv4Network(net) for net in config.relay.allow])
        self.clients: set[Client] = set()
        self.transports: dict[str, asyncio.DatagramTransport] = {}
        self.sockets: dict[str, socket.socket] = {}  # the groups' listeners, for their drops
        self.past_kernel_drops = 0  # of groups left since
        self.started = time.time()
        self.past = CacheView(config.cache.dir, self.registry)  # scroll-back
        self.token = resolve_token(config.web.token, config.web.host, config.cache.dir)
        # no token on the network (a kiosk): pages read, and change nothing unless allowed
        self.read_only = (self.token is None and not is_loopback(config.web.host)
                          and not config.web.open_writes)
        self.url = f"http://{reachable_address(config.web.host)}:{config.web.port}/"
        self.frames_sent = 0
        self.closed_slow = 0
        # one group for every page: full (exact envelopes) unless configured or turned off
        wanted = config.web.source
        self.source = wanted if getattr(config.multicast, wanted) else (
            "decimated" if wanted == "full" else "full")

    # -- multicast feeds ----------------------------------------------------------------
    async def join(self, name: str, group: Group | None) -> None:
        if group is None or name in self.transports:
            return
        sock = multicast.listener(group, self.config.multicast.interface)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Feed(self.hub, name), sock=sock)
        self.transports[name] = transport
        self.sockets[name] = sock
        log.info("joined the %s group %s on %s", name, group, self.config.multicast.interface)

    def leave(self, name: str) -> None:
        transport = self.transports.pop(name, None)
        sock = self.sockets.pop(name, None)
        if sock is not None:
            self.past_kernel_drops += multicast.kernel_drops(sock) or 0
        if transport is not None:
            transport.close()
            log.info("left the %s group", name)

    # -- status -------------------------------------------------------------------------
    def statistics(self) -> dict[str, Any]:
        now_ns = time.time_ns()
        return {
            "service": "serve",
            "pid": os.getpid(),
            "written": time.time(),
            "started": self.started,
            "url": self.url,
            "token_required": self.token is not None,
            "listen": f"{self.config.web.host}:{self.config.web.port}",
            "groups": sorted(self.transports),
            "source": self.source,
            "clients": len(self.clients),
            "frames_sent": self.frames_sent,
            "frames_dropped": sum(c.frames_dropped for c in self.clients),
            "closed_slow_clients": self.closed_slow,
            "datagrams": self.hub.datagrams,
            "rejected": self.hub.rejected,
            **self.hub.statistics(),
            "kernel_drops": self.past_kernel_drops + sum(
                multicast.kernel_drops(s) or 0 for s in self.sockets.values()),
            "history_bytes": self.hub.memory_bytes(),
            "cache_damage": self.past.skipped.statistics(),  # skipped by scroll-back
            "multicast_loss": self.hub.loss(now_ns),
            "channels": {c["name"]: {"rate_hz": c["rate_hz"], "datagrams": c["datagrams"],
                                     "stale": c["stale"]}
                         for c in self.hub.describe(now_ns)},
        }

    def reload_channels(self) -> None:
        """Take the channels directory as it is now (new, edited, retired schemas)."""
        self.watch.changed()  # what is read now is the state seen
        self.registry, errors = Registry.load_dir(self.config.channels.dir)
        for error in errors:
            log.error("%s (channel skipped)", error)
        self.hub.set_registry(self.registry)
        self.past.registry = self.registry
        log.info("channels reloaded: %s", ", ".join(self.registry.names()) or "none")

    async def watch_channels(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if self.watch.changed():
                self.reload_channels()

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
            try:
                status.write(self.config.cache.dir, "serve", self.statistics())
                failing = False
            except OSError as exc:  # a full disk costs the status file, not the server
                if not failing:  # said once per spell of failures
                    log.error("cannot write the status file (%s); the server goes on", exc)
                failing = True
            await asyncio.sleep(STATUS_SECONDS)

    def overview(self) -> dict[str, Any]:
        """What ``/api/status`` shows: health and counters, not pids or file paths (they
        tell a visitor nothing useful and an attacker something)."""
        cache = self.config.cache.dir
        disk = shutil.disk_usage(cache if cache.exists() else cache.parent)
        services = status.read_all(cache)
        services["serve"] = {**self.statistics(), "running": True}
        for snapshot in services.values():
            snapshot.pop("pid", None)
            if isinstance(snapshot.get("cache"), dict):
                snapshot["cache"].pop("dir", None)
        return {
            "version": __version__,
            "services": services,
            "cache": {"bytes": Catalogue(cache).size(), "free_disk_bytes": disk.free},
        }

    def _relays(self) -> dict[str, dict[str, Any]]:
        """The running relays' status (every worker's), by name."""
        return {name: snapshot for name, snapshot in status.read_all(self.config.cache.dir)
                .items() if snapshot.get("service") == "relay" and snapshot["running"]}

    def loss(self) -> dict[str, Any]:
        senders = [{**row, "relay": name} for name, snapshot in self._relays().items()
                   for row in snapshot.get("senders", [])]
        return {"senders": senders, "multicast": self.hub.loss(time.time_ns())}

    def unknown_fingerprints(self) -> list[dict[str, Any]]:
        """What relays received that no channel has: fingerprint, sender, count, times."""
        return [{"fingerprint": fp, "relay": name, **seen}
                for name, snapshot in self._relays().items()
                for fp, seen in snapshot.get("unknown_fingerprints", {}).items()]

    # -- pages --------------------------------------------------------------------------
    async def push(self, websocket: WebSocket, client: Client) -> None:
        period = 1.0 / self.config.web.frame_hz
        next_tick = time.monotonic()
        while True:
            next_tick += period
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            frame = self.hub.frame(client, time.time_ns())
            if frame is None:
                continue
            try:
                await asyncio.wait_for(websocket.send_bytes(frame), SEND_TIMEOUT)
            except TimeoutError:
                self.closed_slow += 1
                log.warning("dropping a page that took no frame for %.0f s", SEND_TIMEOUT)
                # A close handshake would wait behind the frames it does not read: drop the
                # connection at once (see AbortableWebSocket), else try the handshake.
                abort = websocket.scope.get("extensions", {}).get(ABORT)
                if abort is not None:
                    abort()
                else:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(websocket.close(code=1008), 1.0)
                return
            client.frames_sent += 1
            self.frames_sent += 1
            late = time.monotonic() - next_tick
            if late > period:  # the send took longer than a frame: those frames were skipped
                skipped = int(late / period)
                client.frames_dropped += skipped
                next_tick += skipped * period

    async def handle_message(self, websocket: WebSocket, client: Client, text: str) -> None:
        try:
            message = json.loads(text)
            if not isinstance(message, dict):
                raise ValueError("a message is a JSON object")
        except RecursionError:
            await websocket.send_json({"type": "error", "message": "JSON nested too deeply"})
            return
        except ValueError as exc:
            await websocket.send_json({"type": "error", "message": f"not a JSON object: {exc}"})
            return
        kind = message.get("type")
        if kind == "subscribe":
            try:
                unknown = self.hub.subscribe(client, message)
            except SubscriptionError as exc:
                await websocket.send_json({"type": "error", "message": str(exc)})
                return
            await websocket.send_json({"type": "subscribed", "signals": client.signals,
                                       "source": self.source})
            if unknown:
                await websocket.send_json({
                    "type": "error",
                    "message": f"unknown signal(s): {', '.join(unknown)} (see /api/channels)",
                    "unknown": unknown})
        elif kind == "ping":
            await websocket.send_json({"type": "pong", "server_ms": time.time_ns() / 1e6})
        else:
            await websocket.send_json({
                "type": "error",
                "message": f"unknown message type {kind!r}: use 'subscribe' or 'ping'"})


def create_app(config: Config) -> FastAPI:
    server = StripchartServer(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.join(server.source, getattr(config.multicast, server.source))
        writer = asyncio.create_task(server.write_status())
        summarizer = asyncio.create_task(server.summarize_cache())
        watcher = asyncio.create_task(server.watch_channels())
        log.info("stripchart at %s (%d channels)", server.url, len(server.registry))
        yield
        writer.cancel()
        summarizer.cancel()
        watcher.cancel()
        jobs.shutdown()
        for name in list(server.transports):
            server.leave(name)
        status.remove(config.cache.dir, "serve")

    # Swagger UI and ReDoc served from here, not a CDN: /docs works with no internet
    app = FastAPIOffline(title="speeddata stripchart", version=__version__, lifespan=lifespan,
                         favicon_url="/favicon.ico")
    app.state.server = server
    app.add_middleware(Guard, allowed_hosts=config.web.allowed_hosts, token=server.token,
                       read_only=server.read_only)

    @app.exception_handler(SpeeddataError)
    def refuse(request: Any, exc: SpeeddataError) -> JSONResponse:
        """Our errors as HTTP answers: the code from the exception's type."""
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    @app.get("/api/channels")
    def channels() -> JSONResponse:
        """Channels, their signals (type, unit, doc, limits) and live rates; and the
        fingerprints the relay received that no channel has (what to register)."""
        return JSONResponse({"server_ms": time.time_ns() / 1e6,
                             "channels": server.hub.describe(time.time_ns()),
                             "unknown": server.unknown_fingerprints()})

    @app.post("/api/channels", status_code=201)
    def register_channel(body: Annotated[dict[str, Any], Body(
            description="an Avro record schema with a long 'time' field (ns), or "
                        "{\"schema\": SCHEMA, \"replace\": true} to replace the schema "
                        "of a channel of that name")]) -> dict:
        """Register a channel (or, with replace, edit its schema): stored in the channels
        directory, drawn here at once and taken by the relay within a second, without a
        restart. Another schema under a registered name is refused (409) without replace;
        the same schema again changes nothing."""
        schema, replace = registration(body)
        channel = store_schema(config.channels.dir, schema, server.registry, replace)
        server.reload_channels()
        return next(c for c in server.hub.describe(time.time_ns()) if c["name"] == channel.name)

    @app.delete("/api/channels/{name}", status_code=204)
    def retire_channel(name: Annotated[str, PathParam(max_length=128)]) -> None:
        """Retire a channel: no new data of it is accepted; its cached data stays."""
        retire_schema(config.channels.dir, name, time.time_ns())
        server.reload_channels()

    @app.get("/api/status")
    def api_status() -> JSONResponse:
        """Relay and server health, per-channel rates and drops, cache size, free disk."""
        return JSONResponse(server.overview())

    @app.get("/api/loss")
    def lost() -> JSONResponse:
        """Datagrams lost end to end: per sender and channel between sender and relay
        (from every relay worker's status), and per group, relay and channel between the
        relay and this server (from the relays' forward reports)."""
        return JSONResponse(server.loss())

    @app.get("/api/captures")
    def captured() -> JSONResponse:
        """What the cache holds per channel (size, reach, growth), the hours before
        retention starts deleting, and the tags with their sizes."""
        from speeddata.captures import captures

        return JSONResponse(captures(config))

    @app.get("/api/alarms")
    def alarms() -> JSONResponse:
        """Signals out of their schema limits now: level (warn or alarm), value, since."""
        return JSONResponse({"server_ms": time.time_ns() / 1e6,
                             "alarms": server.hub.alarms.active()})

    @app.get("/api/range")
    async def past(signal: Annotated[str, Query(max_length=257)], start_ms: float,
                   end_ms: float, columns: int = 1000) -> JSONResponse:
        """Min, max and last per column of one signal over a range, from the cache: what a
        paused chart shows past the server's memory. Times in ms on the chart's axis."""
        if not (math.isfinite(start_ms) and math.isfinite(end_ms)):
            raise SpeeddataError("start_ms and end_ms must be finite numbers")
        start = check_time(int(start_ms * 1e6), "start_ms")
        end = check_time(int(end_ms * 1e6), "end_ms")
        channel, _, name = signal.partition(".")
        clock = server.hub.clocks.get(channel)  # a shifted channel is drawn on receive time
        shift = clock.offset_ns if clock is not None and clock.shifted else 0
        found = await asyncio.to_thread(server.past.columns, channel, name, start + shift,
                                        end + shift, columns)
        return JSONResponse({"signal": signal, **found.as_json(-shift)})

    @app.websocket("/ws")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        client = Client()
        server.clients.add(client)
        await websocket.send_json({
            "type": "hello", "version": __version__, "server_ms": time.time_ns() / 1e6,
            "frame_hz": config.web.frame_hz, "source": server.source,
            "levels": [{"width_ms": lvl.width_ns / 1e6, "span_s": lvl.span_seconds}
                       for lvl in server.hub.levels],
            "channels": server.hub.describe(time.time_ns())})
        pusher = asyncio.create_task(server.push(websocket, client))
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None or len(text) > MAX_MESSAGE:
                    await websocket.send_json({
                        "type": "error",
                        "message": "send JSON text messages of at most 64 KiB"})
                    continue
                await server.handle_message(websocket, client, text)
        except WebSocketDisconnect:
            pass
        finally:
            pusher.cancel()
            server.clients.discard(client)

    from speeddata.stripchart import api_tags  # tags and pivot jobs: their own module

    api_tags.register(app, config)
    jobs = api_tags.register_exports(app, config)
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def serve(config: Config) -> None:
    """Run the server until Ctrl-C or SIGTERM (uvicorn handles both gracefully)."""
    import uvicorn

    from speeddata.relay.netio import bind_error

    with socket.socket() as probe:  # a clear message now, not uvicorn's after start-up
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.web.host, config.web.port))
        except OSError as exc:
            raise bind_error(exc, "TCP", config.web.host, config.web.port, "--web-port") from None
    loop = "uvloop"
    try:
        import uvloop  # noqa: F401
    except ImportError:  # not on Windows: asyncio's own loop
        loop = "asyncio"
    # uvicorn shuts down gracefully, then raises the signal again with the handler it found:
    # let that one end the process with 0, as the relay does after a clean stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(create_app(config), host=config.web.host, port=config.web.port, loop=loop,
                ws=_abortable_websocket(), log_level="warning", access_log=False,
                ws_max_size=MAX_MESSAGE)


ABORT = "speeddata.abort"


def _abortable_websocket() -> type:
    """uvicorn's WebSocket protocol, giving the app ``scope["extensions"][ABORT]``: drop
    the connection now. A client that stops reading fills the socket, and a close
    handshake would wait behind it forever, keeping its buffers."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class AbortableWebSocket(WebSocketsSansIOProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            # Bounded buffers per page: frames a page does not take pile up here, not in
            # megabytes of kernel memory, and a page that stops reading is found in
            # seconds (SEND_TIMEOUT after they fill).
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            transport.set_write_buffer_limits(high=SEND_BUFFER)

        async def run_asgi(self) -> None:
            self.scope["extensions"][ABORT] = self.transport.abort  # type: ignore[index]
            await super().run_asgi()

    return AbortableWebSocket
