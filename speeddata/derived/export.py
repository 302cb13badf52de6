"""Derived channels in an export: computed from the cache as the stripchart's hub
computes them live, by the same ``DerivedSet.compute``, fed the cached blocks of their
input channels in receive order (each block is a batch the relay received, as the hub
got it). Windows and filters are warmed with the blocks before the range, so a window
full live is full in the export, with the same value to the last bit."""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speeddata.cache.catalogue import Catalogue, plan
from speeddata.cache.check import BlockReader
from speeddata.columns import ColumnDecoder
from speeddata.derived.live import Compiled, DerivedSet, load
from speeddata.readout import CHUNK_RECORDS, Column
from speeddata.schemas import Registry, load_channels

log = logging.getLogger("speeddata.pivot")

MARGIN_NS = 2 * 10**9  # receive time vs sample time: a window's span is on the latter
MAX_WARMUP_NS = 7 * 86400 * 10**9  # how far back a count window's samples are looked for


@dataclass
class Chunk:
    columns: dict[str, np.ndarray]  # "time" and a float64 column per signal
    receive_ns: np.ndarray


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


def compute(catalogue: Catalogue, reader: BlockReader, compiled: Compiled, start_ns: int,
            end_ns: int, decimate: int = 1) -> Iterator[Chunk]:
    """The derived channel's rows for the driving channel's blocks received in
    ``[start_ns, end_ns]``, computed from the warm-up start on."""
    derived = DerivedSet([compiled])
    inputs = sorted(compiled.inputs())
    selected = plan(catalogue, warm_start(catalogue, compiled, start_ns), end_ns, inputs)
    merged = heapq.merge(*([(name, f, e) for f, e in blocks]
                           for name, blocks in selected.blocks.items()),
                         key=lambda item: (item[2].recv_ns, item[0] == compiled.driver))
    # a tie (one relay batch): the other channels' blocks first, as their values are at
    # or before the driving samples received with them
    decoders: dict[Any, tuple[Any, ColumnDecoder] | None] = {}
    skip = 0
    for name, cached, entry in merged:
        if cached.path not in decoders:
            version = reader.channel(cached.path)
            decoders[cached.path] = None if version is None else (version,
                                                                  ColumnDecoder(version))
        found = decoders[cached.path]
        data = reader.body(cached.path, entry) if found is not None else None
        if found is None or data is None:
            continue
        version, decoder = found
        decoded, kept = reader.decode(decoder, cached.path, [(entry, data)])
        if not kept[0]:
            continue
        for _, columns in derived.compute(version, decoded):
            if name != compiled.driver or entry.recv_ns < start_ns:
                continue  # the warm-up's rows, or (never) another channel's
            receive = np.full(entry.count, entry.recv_ns, dtype=np.int64)
            if decimate > 1:
                keep = np.arange(skip, entry.count, decimate)
                skip = (skip - entry.count) % decimate
                columns = {k: v[keep] for k, v in columns.items()}
                receive = receive[keep]
            yield Chunk(columns, receive)


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


def write(sink: Any, catalogue: Catalogue, reader: BlockReader, made: Compiled,
          start_ns: int, end_ns: int, decimate: int) -> int:
    """A derived channel's group (or file): its rows computed from the cache."""
    columns_out = [Column(s.name, np.float64, s.unit, s.doc, "double", (), s.expression)
                   for s in made.channel.signals]
    writer = sink.channel(made.channel.name, "time", columns_out, [made.channel.schema], "")
    pending: list[Chunk] = []
    rows = 0
    for chunk in compute(catalogue, reader, made, start_ns, end_ns, decimate):
        pending.append(chunk)
        rows += len(chunk.receive_ns)
        if rows >= CHUNK_RECORDS:
            _append(writer, pending)
            pending, rows = [], 0
    _append(writer, pending)
    sink.finish(writer)
    return writer.count


def _append(writer: Any, pending: list[Chunk]) -> None:
    """Blocks' rows written as one chunk (a derived block is one relay batch: small)."""
    if pending:
        writer.append({k: np.concatenate([c.columns[k] for c in pending])
                       for k in pending[0].columns},
                      np.concatenate([c.receive_ns for c in pending]))
