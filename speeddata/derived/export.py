"""Derived channels in an export: which ones, and from where their inputs are read.
They are computed in the export's one reading pass (``speeddata.readout.read``) as the
stripchart's hub computes them live, by the same ``DerivedSet.compute``, fed their
input channels' records in the order the relay received them. Windows and filters are
warmed with the blocks before the range, so a window full live is full in the export,
with the same value to the last bit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from speeddata.cache.catalogue import Catalogue, plan
from speeddata.derived.live import Compiled, DerivedSet, load
from speeddata.readout import Derived
from speeddata.schemas import Registry, load_channels

log = logging.getLogger("speeddata.pivot")

MARGIN_NS = 2 * 10**9  # receive time vs sample time: a window's span is on the latter
MAX_WARMUP_NS = 7 * 86400 * 10**9  # how far back a count window's samples are looked for


def warm_start(catalogue: Catalogue, count: int, driver: str, start_ns: int) -> int:
    """Where reading starts for ``count`` samples of ``driver`` before ``start_ns``."""
    if not count:
        return start_ns
    back = MARGIN_NS
    while back < MAX_WARMUP_NS:
        blocks = plan(catalogue, start_ns - back, start_ns - 1, [driver]).blocks
        if sum(e.count for _, e in blocks.get(driver, [])) >= count:
            break
        earlier = plan(catalogue, 0, start_ns - back - 1, [driver]).blocks
        if not earlier:  # nothing older: what there is will do
            break
        back *= 2
    return start_ns - back


@dataclass
class Chosen:
    """The derived channels of an export: ``computed`` in order (each after those it
    names), of which ``written`` are written; ``roots`` the schema channel driving each."""

    computed: list[Compiled] = field(default_factory=list)
    written: set[str] = field(default_factory=set)
    roots: dict[str, str] = field(default_factory=dict)

    def narrow(self, channels: list[str] | None) -> list[str] | None:
        """The schema channels to read as ``channels`` asks: a derived one named brings
        its driving channel (written next to it) instead."""
        if not channels or not self.written:
            return channels
        derived = {c.channel.name for c in self.computed}
        kept = [c for c in channels if c not in derived]
        return kept or sorted({self.roots[n] for n in self.written})

    def plan(self, catalogue: Catalogue, start_ns: int) -> list[Derived]:
        """Each with where its inputs are read from (``readout.select``'s ``derived``):
        the warm-up of its windows and filters, added along a chain of derived ones."""
        counts: dict[str, int] = {}
        for made in self.computed:  # in order: those it names are known
            count = max((p.max_count() for _, p in made.programs), default=0)
            counts[made.channel.name] = count + max(
                (counts[n] for n in made.inputs() if n in counts), default=0)
        root = self.roots
        begin: dict[str, int] = {}
        for made in reversed(self.computed):  # one read from where those naming it need it
            name = made.channel.name
            wanted = min([start_ns, *(begin[c.channel.name] for c in self.computed
                                      if name in c.inputs() and c.channel.name in begin)])
            begin[name] = min(min(p.warm_from(wanted) for _, p in made.programs),
                              warm_start(catalogue, counts[name], root[name], wanted))
        return [Derived(made, begin[made.channel.name], made.channel.name in self.written,
                        root[made.channel.name]) for made in self.computed]


def select(channels_dir: Path | None, registry: Registry | None,
           channels: list[str] | None, cached: list[str]) -> Chosen:
    """The derived channels of ``channels_dir`` to export, those whose driving channel the
    cache holds: those ``channels`` names, else those whose inputs it names (all when
    there is no ``channels``); and the derived channels they name, computed too."""
    if channels_dir is None:
        return Chosen()
    return choose(load(channels_dir, registry or load_channels(channels_dir, log)),
                  channels, cached)


def choose(found: DerivedSet, channels: list[str] | None, cached: list[str]) -> Chosen:
    """``select``'s choice among the derived channels ``found`` (compiled afresh: their
    state is the reading's)."""
    by_name = {c.channel.name: c for c in found.compiled}

    def base(made: Compiled) -> set[str]:
        return set().union(*(base(by_name[n]) if n in by_name else {n}
                             for n in made.inputs()))

    named = [c for c in found.compiled if channels and c.channel.name in channels]
    chosen = named or [c for c in found.compiled if not channels or base(c) <= set(channels)]
    chosen = [c for c in chosen if found.root(c.channel.name) in cached]
    need = {c.channel.name for c in chosen}
    for made in reversed(found.compiled):  # those a chosen one names, and theirs
        if made.channel.name in need:
            need |= {n for n in (*made.inputs(), made.driver) if n in by_name}
    computed = [c for c in found.compiled if c.channel.name in need]
    return Chosen(computed, {c.channel.name for c in chosen},
                  {c.channel.name: found.root(c.channel.name) for c in computed})
