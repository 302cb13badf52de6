"""``/api/spectrum``, ``/api/spectrogram`` and ``/api/xy``: a signal's spectrum, and one
signal against another, from every sample in the cache over a range.

The range is the chart's window (``start``/``end`` in ms on its axis, as ``/api/range``
takes them) or a tag (``tag``), or CLI times (``-5m``, ISO 8601). The maths is in
``speeddata.spectra``; the samples come from ``fullrate``. What cannot be answered is
an error of the tree, so its HTTP code comes from its type: an unknown signal 404, too
many samples 413, anything else about the request 400 (422 for a parameter FastAPI
itself cannot read).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from speeddata import spectra
from speeddata.errors import SpeeddataError
from speeddata.stripchart import fullrate
from speeddata.stripchart.server import StripchartServer
from speeddata.tags import resolve_range
from speeddata.times import check_time

Window = Literal["hann", "hamming", "blackman", "rect"]
Name = Annotated[str, Query(max_length=257, description="channel.signal")]
Time = Annotated[str | None, Query(max_length=64, description=(
    "ms since the epoch on the chart's axis, or a time as the CLI takes it (-5m, ISO 8601)"))]
Tag = Annotated[str | None, Query(max_length=128, description="a tag's range instead")]
MAX_POINTS = 100_000


def _time(text: str, what: str, now_ns: int) -> str | int:
    """A number is ms since the epoch (the page's axis); anything else is left to
    ``resolve_range`` (relative and ISO times)."""
    try:
        ms = float(text)
    except ValueError:
        return text
    if not math.isfinite(ms):
        raise SpeeddataError(f"{what} must be a finite number of ms, or a time like -5m")
    return check_time(int(ms * 1e6), what)


def span(server: StripchartServer, tag: str | None, start: str | None, end: str | None,
         channel: str) -> tuple[int, int, int]:
    """The range asked for, in the source time of ``channel``'s samples, and the shift
    to add back to draw on the chart's axis (a source whose clock is off is drawn on
    receive time, as /api/range does)."""
    now = time.time_ns()
    first = _time(start, "start", now) if start else None
    last = _time(end, "end", now) if end else None
    if isinstance(first, int) or isinstance(last, int):
        if tag or not isinstance(first, int) or not isinstance(last, int):
            raise SpeeddataError("give start and end both in ms, or a tag, or CLI times")
        low, high = first, last
    else:
        found = resolve_range(server.config.cache.dir, tag, first, last, now)
        low, high = found.start_ns, found.end_ns
    if high <= low:
        raise SpeeddataError("the range must end after it starts")
    clock = server.hub.clocks.get(channel)
    shift = clock.offset_ns if clock is not None and clock.shifted else 0
    return low + shift, high + shift, shift


def _samples(server: StripchartServer, name: str, tag: str | None, start: str | None,
             end: str | None) -> tuple[fullrate.Samples, int]:
    channel, _, _ = fullrate.numeric_signal(server.registry, name)
    low, high, shift = span(server, tag, start, end, channel)
    margin = int(server.config.web.clock_tolerance_seconds * 1e9)
    return fullrate.read(server.config.cache.dir, server.registry, name, low, high, margin,
                         fullrate.MAX_SAMPLES, shift), shift


def _finite(values: np.ndarray) -> list:
    """JSON has no NaN or infinity: null."""
    return [v if math.isfinite(v) else None for v in values.tolist()]


def register(app: FastAPI, server: StripchartServer) -> None:
    # one answer made at a time: each may hold 2^22 samples (and a chunk of every field
    # of their records) in memory; the others wait their turn on the event loop
    gate = asyncio.Semaphore(1)

    async def answer(fn: Callable[..., dict], *args: object) -> JSONResponse:
        async with gate:
            return JSONResponse(await asyncio.to_thread(fn, *args))

    def spectrum(signal: str, tag: str | None, start: str | None, end: str | None,
                 method: str, window: str, segment: int, bins: int) -> dict:
        found, _ = _samples(server, signal, tag, start, end)
        rate = spectra.sampling(found.times)
        if method == "welch":
            made = spectra.welch(found.values, rate.rate_hz, segment, window, bins)
            unit = f"{found.unit}²/Hz" if found.unit else "1/Hz"
        else:
            made = spectra.amplitude(found.values, rate.rate_hz, window, bins)
            unit = found.unit
        return {"signal": signal, "method": method, "window": window, "unit": unit,
                "signal_unit": found.unit, "samples": len(found.values), **rate.as_json(),
                "segment": made.segment, "segments": made.segments,
                "resolution_hz": made.resolution_hz, "skipped": found.skipped,
                "frequency_hz": made.frequency.tolist(), "value": _finite(made.value)}

    @app.get("/api/spectrum")
    async def get_spectrum(
            signal: Name, tag: Tag = None, start: Time = None, end: Time = None,
            method: Literal["welch", "fft"] = "welch", window: Window = "hann",
            segment: Annotated[int, Query(ge=spectra.MIN_SAMPLES, le=2**20)] = 1024,
            bins: Annotated[int, Query(ge=1, le=spectra.MAX_BINS)] = 4096) -> JSONResponse:
        """The PSD (Welch, unit²/Hz) or the amplitude spectrum (fft, the signal's unit) of
        every sample of ``signal`` in the range; ``irregular`` says when the sample times
        have gaps or jitter that make the frequencies doubtful, and why."""
        return await answer(spectrum, signal, tag, start, end, method, window, segment, bins)

    def gram(signal: str, tag: str | None, start: str | None, end: str | None,
             window: str, segment: int, columns: int) -> dict:
        found, shift = _samples(server, signal, tag, start, end)
        rate = spectra.sampling(found.times)
        made = spectra.spectrogram(found.times, found.values, rate.rate_hz, segment, window,
                                   columns)
        return {"signal": signal, "window": window, "samples": len(found.values),
                "unit": f"{found.unit}²/Hz" if found.unit else "1/Hz", **rate.as_json(),
                "segment": made.segment, "segments_per_column": made.segments_per_column,
                "skipped": found.skipped, "frequency_hz": made.frequency.tolist(),
                "start_ms": ((made.start_ns - shift) / 1e6).tolist(),
                "psd": [_finite(row) for row in made.psd]}

    @app.get("/api/spectrogram")
    async def get_spectrogram(
            signal: Name, tag: Tag = None, start: Time = None, end: Time = None,
            window: Window = "hann",
            segment: Annotated[int, Query(ge=spectra.MIN_SAMPLES,
                                          le=spectra.MAX_SPECTROGRAM_SEGMENT)] = 256,
            columns: Annotated[int, Query(ge=1, le=spectra.MAX_COLUMNS)] = 256,
            ) -> JSONResponse:
        """PSD per time column (rows of ``psd``, each starting at ``start_ms``) and
        frequency: at most 512 columns of at most 2049 frequencies."""
        return await answer(gram, signal, tag, start, end, window, segment, columns)

    def xy(x: str, y: str, tag: str | None, start: str | None, end: str | None,
           points: int) -> dict:
        xs, _ = _samples(server, x, tag, start, end)
        ys, _ = _samples(server, y, tag, start, end)
        times, xv, yv = spectra.xy_pairs(xs.times, xs.values, ys.times, ys.values)
        kept = spectra.extremes(xv, yv, points)
        return {"x": x, "y": y, "x_unit": xs.unit, "y_unit": ys.unit, "pairs": len(times),
                "drawn": len(kept), "skipped": xs.skipped + ys.skipped,
                "xs": xv[kept].tolist(), "ys": yv[kept].tolist()}

    @app.get("/api/xy")
    async def get_xy(x: Name, y: Name, tag: Tag = None, start: Time = None, end: Time = None,
                     points: Annotated[int, Query(ge=10, le=MAX_POINTS)] = 5000
                     ) -> JSONResponse:
        """``y`` against ``x``: at each sample of x, the last value of y at or before it;
        past ``points`` pairs, every k-th with each bucket's lowest and highest x and y
        (so a spike shows)."""
        return await answer(xy, x, y, tag, start, end, points)
