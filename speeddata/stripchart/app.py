"""The stripchart server: FastAPI on uvicorn/uvloop, fed by the multicast groups.

``create_app`` puts together the endpoints, by concern: ``routes_channels``,
``routes_status`` (status, loss, captures, alarms), ``routes_range`` (scroll-back),
``routes_spectra`` (spectra and XY from the cache),
``routes_ws`` (the page's WebSocket, around ``session.PageSession``) and ``api_tags``
(tags, pivot jobs, exports), over the state they share (``server.StripchartServer``).
It does no I/O but reading the schemas: ``serve`` resolves the token (which may write
``<cache>/.web-token``) and opens the tag store, then runs uvicorn.

Datagrams arrive on the event loop through a datagram endpoint and are folded into the
hub once per batch. Each page has its own push task that sends at most ``frame_hz``
frames a second; a page that cannot keep up only slows its own task, whose missed ticks
are counted as dropped frames and reported to it.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from speeddata import __version__, packaged
from speeddata.config import Config
from speeddata.errors import SpeeddataError
from speeddata.stripchart import (
    routes_channels,
    routes_range,
    routes_spectra,
    routes_status,
    routes_ws,
)
from speeddata.stripchart.guard import Guard, is_loopback, resolve_token
from speeddata.stripchart.routes_ws import ABORT
from speeddata.stripchart.server import StripchartServer
from speeddata.stripchart.session import MAX_MESSAGE
from speeddata.tags import TagStore

WEB_DIR = packaged.web_dir()  # web/ of the source tree, speeddata/web/ of a wheel
SEND_BUFFER = 64 * 1024  # bytes queued per page in the kernel, and again in the server


def needs_token(config: Config) -> bool:
    """Whether ``[web] token`` asks for a token (resolve_token gives one, not None)."""
    setting = config.web.token
    return not (setting == "off" or (not setting and is_loopback(config.web.host)))


def create_app(config: Config, token: str | None = None, *,
               tags: TagStore | None = None) -> FastAPI:
    """The server's app, with no I/O but reading the schemas. ``token``: what pages must
    present, as ``resolve_token`` gives it (``serve`` calls it); refused as None when the
    config asks for one, so that a forgotten token never opens a server. ``tags``: the
    tag store (None: made at the first tag request)."""
    if token is None and needs_token(config):
        raise ValueError(f"[web] token: a server on {config.web.host} needs its token: "
                         "pass create_app(config, resolve_token(...)), as serve() does")
    server = StripchartServer(config, token)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        yield
        jobs.shutdown()
        server.stop()

    # Swagger UI and ReDoc served from here, not a CDN: /docs works with no internet
    app = FastAPIOffline(title="speeddata stripchart", version=__version__, lifespan=lifespan,
                         favicon_url="/favicon.ico")
    app.state.server = server
    app.add_middleware(Guard, allowed_hosts=config.web.allowed_hosts, token=server.token,
                       read_only=server.read_only)

    @app.exception_handler(SpeeddataError)
    def refuse(request: Any, exc: SpeeddataError) -> JSONResponse:
        """Our errors as HTTP answers: the code from the exception's type."""
        where = getattr(exc, "position", None)  # a derived expression's: the character
        return JSONResponse({"detail": str(exc), **({} if where is None else {
            "position": where})}, status_code=exc.http_status)

    for routes in (routes_channels, routes_status, routes_range, routes_spectra, routes_ws):
        routes.register(app, server)

    from speeddata.stripchart import api_tags  # tags and pivot jobs: their own module

    api_tags.register(app, config, tags)
    jobs = server.jobs = api_tags.register_exports(app, config)
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def serve(config: Config) -> None:
    """Run the server until Ctrl-C or SIGTERM (uvicorn handles both gracefully)."""
    import uvicorn

    from speeddata.control import announcer
    from speeddata.relay.netio import bind_error

    with socket.socket() as probe:  # a clear message now, not uvicorn's after start-up
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.web.host, config.web.port))
        except OSError as exc:
            raise bind_error(exc, "TCP", config.web.host, config.web.port, "--web-port") from None
    # the files the app needs, made here (a bad control key or token file stops it now)
    token = resolve_token(config.web.token, config.web.host, config.cache.dir)
    tags = TagStore(config.cache.dir, announcer(config))
    loop = "uvloop"
    try:
        import uvloop  # noqa: F401
    except ImportError:  # not on Windows: asyncio's own loop
        loop = "asyncio"
    # uvicorn shuts down gracefully, then raises the signal again with the handler it found:
    # let that one end the process with 0, as the relay does after a clean stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(create_app(config, token, tags=tags), host=config.web.host,
                port=config.web.port, loop=loop,
                ws=_abortable_websocket(config.web.compression), log_level="warning",
                access_log=False,
                ws_max_size=MAX_MESSAGE)


def deflates(compression: str, peer: str | None) -> bool:
    """Whether a page at address ``peer`` gets permessage-deflate, by ``[web]
    compression``: auto spares pages on this host (deflate cost the server about a
    tenth of its CPU at 100 signals x 1 kHz, for bytes that never leave the host) and
    keeps it for every other, which may be on Wi-Fi (a 100-signal frame deflates to a
    twentieth of its bytes: 7 Mbit/s a page, or 0.4)."""
    if compression == "auto":
        return peer is None or not is_loopback(peer)
    return compression == "on"


def _abortable_websocket(compression: str = "auto") -> type:
    """uvicorn's WebSocket protocol, giving the app ``scope["extensions"][ABORT]``: drop
    the connection now. A client that stops reading fills the socket, and a close
    handshake would wait behind it forever, keeping its buffers. It offers
    permessage-deflate to a page as ``deflates(compression, its address)`` says."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class AbortableWebSocket(WebSocketsSansIOProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            if not deflates(compression, peer[0] if peer else None):
                self.conn.available_extensions = []  # negotiated at the handshake, after
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
