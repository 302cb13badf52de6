"""Derived channels in an export: which ones, and from where their inputs are read.
They are computed in the export's one reading pass (``speeddata.readout.read``) as the
stripchart's hub computes them live, by the same ``DerivedSet.compute``, fed their
input channels' records in the order the relay received them. Windows and filters are
warmed with the blocks before the range, so a window full live is full in the export,
with the same value to the last bit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from speeddata.cache.catalogue import Catalogue, plan
from speeddata.derived.live import Compiled, load
from speeddata.schemas import Registry, load_channels

log = logging.getLogger("speeddata.pivot")

MARGIN_NS = 2 * 10**9  # receive time vs sample time: a window's span is on the latter
MAX_WARMUP_NS = 7 * 86400 * 10**9  # how far back a count window's samples are looked for


def warm_start(catalogue: Catalogue, compiled: Compiled, start_ns: int) -> int:
    """Where reading starts for ``compiled``: its longest span (and filter's warm-up)
    before ``start_ns``, and far enough back for its longest count window's samples."""
    programs = [p for _, p in compiled.programs]
    span = max((p.warmup_ns() for p in programs), default=0)
    count = max((p.max_count() for p in programs), default=0)
    if not span and not count:
        return start_ns
    back = span + MARGIN_NS
    while count and back < MAX_WARMUP_NS:
        blocks = plan(catalogue, start_ns - back, start_ns - 1, [compiled.driver]).blocks
        if sum(e.count for _, e in blocks.get(compiled.driver, [])) >= count:
            break
        earlier = plan(catalogue, 0, start_ns - back - 1, [compiled.driver]).blocks
        if not earlier:  # nothing older: what there is will do
            break
        back *= 2
    return start_ns - back


def select(channels_dir: Path | None, registry: Registry | None,
             channels: list[str] | None, cached: list[str]) -> list[Any]:
    """The derived channels of ``channels_dir`` to export, those whose driving channel the
    cache holds: those ``channels`` names, else those whose inputs it names (all when
    there is no ``channels``)."""
    if channels_dir is None:
        return []
    found = load(channels_dir, registry or load_channels(channels_dir, log)).compiled
    named = [c for c in found if channels and c.channel.name in channels]
    chosen = named or [c for c in found if not channels or c.inputs() <= set(channels)]
    return [c for c in chosen if c.driver in cached]


def plan_for(catalogue: Catalogue, compiled: list[Compiled], start_ns: int
             ) -> list[tuple[Compiled, int]]:
    """Each derived channel with where reading its inputs starts (``readout.select``'s
    ``derived``)."""
    return [(made, warm_start(catalogue, made, start_ns)) for made in compiled]
