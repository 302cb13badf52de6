"""``/api/range``: scroll-back past the server's memory, from the cache."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from speeddata.errors import SpeeddataError
from speeddata.stripchart.server import StripchartServer
from speeddata.times import check_time


def register(app: FastAPI, server: StripchartServer) -> None:

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
                                        end + shift, columns, server.hub.registry)
        return JSONResponse({"signal": signal, **found.as_json(-shift)})

