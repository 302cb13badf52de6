"""A derived signal's samples over a source-time range, computed from the cached inputs
by the exports' reading pass: what scroll-back folds into a paused chart's columns past
the server's memory (speeddata/stripchart/scrollback.py), as exact as the live view's
(a one-sample spike shows). No sockets, no clocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speeddata.cache.catalogue import Catalogue
from speeddata.cache.check import Skipped
from speeddata.derived import export
from speeddata.derived.live import DerivedSet, derived_of
from speeddata.derived.ops import MARGIN_NS
from speeddata.errors import TooLargeError
from speeddata.readout import NoData, read, select
from speeddata.schemas import Registry

MAX_RECORDS = 2_000_000  # input records one scroll-back of a derived signal reads


class TooLong(TooLargeError):
    """A range whose derived signal would need too many cached records: 413, as a
    spectrum's range over its sample limit (``stripchart.fullrate``)."""


def is_derived(registry: Registry, channel: str) -> bool:
    return any(c.channel.name == channel for c in derived_of(registry).compiled)


def samples(cache_dir: Path, registry: Registry, channel: str, signal: str, start: int,
            end: int) -> tuple[np.ndarray, np.ndarray, Skipped]:
    """Times and values of derived ``channel.signal`` in ``[start, end)`` (source time),
    computed afresh from the cache (the inputs received from a margin before, warmed as
    an export is), and the damaged blocks met. TooLong past ``MAX_RECORDS``."""
    current = derived_of(registry)
    base = getattr(registry, "base", registry)
    fresh = DerivedSet.build([c.definition for c in current.compiled], base)
    catalogue = Catalogue(cache_dir)
    chosen = export.choose(fresh, [channel], catalogue.channels())
    empty = np.empty(0, dtype=np.int64), np.empty(0), Skipped()
    if channel not in chosen.written:
        return empty
    begin = start - MARGIN_NS
    try:
        selection = select(cache_dir, begin, end + MARGIN_NS, registry=base,
                           channels=chosen.narrow([channel]),
                           derived=chosen.plan(catalogue, begin))
    except NoData:
        return empty
    with selection:
        if selection.records > MAX_RECORDS:
            raise TooLong(f"{channel}.{signal} over this range needs {selection.records:,} "
                          f"cached records (at most {MAX_RECORDS:,}): zoom in")
        times, values = [], []
        for part, chunk in read(selection):
            if part.name == channel:
                times.append(chunk.columns["time"])
                values.append(chunk.columns[signal])
    if not times:
        return np.empty(0, dtype=np.int64), np.empty(0), selection.skipped
    t, v = np.concatenate(times), np.concatenate(values)
    inside = (t >= start) & (t < end)
    return t[inside], v[inside], selection.skipped
