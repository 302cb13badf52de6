"""``/api/channels``: the channels drawn, and registering, editing and retiring them.

The schema files are written and read in a worker thread; the hub takes the new
registry back on the event loop (``StripchartServer.change_channels``)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from speeddata.derived import files as derived_files
from speeddata.derived import live as derived_live
from speeddata.schemas import Registry, registration, retire_schema, store_schema
from speeddata.stripchart.server import StripchartServer, unknown_fingerprints


def register(app: FastAPI, server: StripchartServer) -> None:
    config = server.config

    @app.get("/api/channels")
    async def channels() -> JSONResponse:
        """Channels, their signals (type, unit, doc, limits) and live rates; and the
        fingerprints the relay received that no channel has (what to register)."""
        unknown = await asyncio.to_thread(unknown_fingerprints, config)
        now_ns = time.time_ns()
        return JSONResponse({"server_ms": now_ns / 1e6,
                             "channels": server.hub.describe(now_ns), "unknown": unknown})

    @app.post("/api/channels", status_code=201)
    async def register_channel(body: Annotated[dict[str, Any], Body(
            description="an Avro record schema with a long 'time' field (ns), or "
                        "{\"schema\": SCHEMA, \"replace\": true} to replace the schema "
                        "of a channel of that name; or {\"derived\": TOML, \"replace\": "
                        "false} for a derived channel")]) -> dict:
        """Register a channel (or, with replace, edit its schema): stored in the channels
        directory, drawn here at once and taken by the relay within a second, without a
        restart. Another schema under a registered name is refused (409) without replace;
        the same schema again changes nothing. Pages subscribed to a signal an edit
        removes are told (a "pruned" message) and go on with the others. A derived
        channel's file is checked against the channels first: a bad expression is a 400
        naming the position."""
        derived = derived_files.registration(body)
        schema, replace = registration(body) if derived is None else (None, derived[1])

        def store(registry: Registry) -> str:
            if derived is not None:
                derived_live.check(derived[0], registry, config.channels.dir)
                derived_files.store(config.channels.dir, derived[0], replace)
                return derived[0].name
            return store_schema(config.channels.dir, schema, registry, replace).name

        name = await server.change_channels(store)
        return next(c for c in server.hub.describe(time.time_ns()) if c["name"] == name)

    @app.delete("/api/channels/{name}", status_code=204)
    async def retire_channel(name: Annotated[str, PathParam(max_length=128)]) -> None:
        """Retire a channel (or a derived channel: its file moves to retired/): no new data
        of it is accepted; its cached data stays."""
        now_ns = time.time_ns()
        await server.change_channels(
            lambda _registry: derived_files.retire(config.channels.dir, name, now_ns)
            or retire_schema(config.channels.dir, name, now_ns))

