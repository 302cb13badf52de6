"""Health and counters: ``/api/status``, ``/api/loss``, ``/api/captures``,
``/api/alarms``. Files are read in worker threads; the hub on the event loop."""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from speeddata.stripchart.server import StripchartServer


def register(app: FastAPI, server: StripchartServer) -> None:

    @app.get("/api/status")
    async def api_status() -> JSONResponse:
        """Relay and server health, per-channel rates and drops, cache size, free disk."""
        return JSONResponse(await server.overview())

    @app.get("/api/loss")
    async def lost() -> JSONResponse:
        """Datagrams lost end to end: per sender and channel between sender and relay
        (from every relay worker's status), and per group, relay and channel between the
        relay and this server (from the relays' forward reports)."""
        return JSONResponse(await server.loss())

    @app.get("/api/captures")
    async def captured() -> JSONResponse:
        """What the cache holds per channel (size, reach, growth), the hours before
        retention starts deleting, and the tags with their sizes."""
        from speeddata.captures import captures

        return JSONResponse(await asyncio.to_thread(captures, server.config))

    @app.get("/api/alarms")
    async def alarms() -> JSONResponse:
        """Signals out of their schema limits now: level (warn or alarm), value, since."""
        return JSONResponse({"server_ms": time.time_ns() / 1e6,
                             "alarms": server.hub.alarms.active()})

