"""The derived channels' part of an export's reading pass (``speeddata.readout.streams``):
their input channels' chunks merged in the order the relay received them, each run of
one channel's rows fed to ``DerivedSet.compute`` as the stripchart's hub is fed a batch,
the inputs' and the derived channels' rows gathered into chunks to write. The inputs are
read once: their damage is counted once. No sockets, no clocks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from speeddata.columns import ColumnDecoder
from speeddata.derived.live import DerivedSet
from speeddata.readout import ChannelRange, Chunk, ChunksOf, Stream
from speeddata.schemas import Channel


class Out:
    """One channel's rows of a derived pass, gathered into chunks of about ``rows``: the
    warm-up's rows left out, then every ``decimate``-th."""

    def __init__(self, part: ChannelRange, rows: int, decimate: int) -> None:
        self.part, self.rows, self.decimate = part, rows, decimate
        self.start = part.from_ns if part.from_ns is not None else -(2**63)
        self.skip = 0
        self.pending: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
        self.count = 0
        self.window = 0

    def add(self, columns: dict[str, np.ndarray], receive: np.ndarray,
            window: int) -> Chunk | None:
        keep = receive >= self.start
        if not keep.all():
            columns, receive = {k: v[keep] for k, v in columns.items()}, receive[keep]
        if self.decimate > 1:
            index = np.arange(self.skip, len(receive), self.decimate)
            self.skip = (self.skip - len(receive)) % self.decimate
            columns, receive = {k: v[index] for k, v in columns.items()}, receive[index]
        if not len(receive):
            return None
        self.pending.append((columns, receive))
        self.count += len(receive)
        self.window = window
        return self.flush() if self.count >= self.rows else None

    def flush(self) -> Chunk | None:
        if not self.pending:
            return None
        pending, self.pending, self.count = self.pending, [], 0
        if len(pending) == 1:
            return Chunk(pending[0][0], pending[0][1], self.window)
        return Chunk({k: np.concatenate([c[k] for c, _ in pending]) for k in pending[0][0]},
                     np.concatenate([r for _, r in pending]), self.window)


def _native(version: Channel, part: ChannelRange, chunk: Chunk, lo: int, hi: int,
            dtypes: dict[str, Any]) -> dict[str, np.ndarray]:
    """Rows ``lo:hi`` of a chunk as the live hub decodes them from ``version``: its own
    fields in its own types (what another version of the range has is absent)."""
    out = {}
    for column in (*part.columns, *part.extra):
        dtype = dtypes.get(column.name)
        if dtype is not None:
            values = chunk.columns[column.name][lo:hi]
            out[column.name] = values if values.dtype == dtype or dtype.kind == "O" else \
                values.astype(dtype)
    out[version.time_field] = chunk.columns[part.time_field][lo:hi]
    return out


def derived_pass(chunks_of: ChunksOf, inputs: list[ChannelRange], made: list[ChannelRange],
                  rows: int, decimate: int, window_ns: int | None, origin_ns: int,
                  progress: Callable[[int], None] | None) -> Stream:
    """The input channels' chunks merged in receive order (at a tie, a channel that
    drives a derived channel after the others, whose values are at or before its
    samples), each run of one channel's rows fed to the derived channels as the hub is
    fed a batch: a derived value is the live one to the last bit (windows and filters
    are batch-split invariant, speeddata/derived/ops.py)."""
    computing = DerivedSet([p.compiled for p in made])
    drivers = {computing.root(p.name) for p in made}
    outs = {p.name: Out(p, rows, decimate) for p in (*inputs, *made) if p.written}
    parts = {p.name: p for p in inputs}
    dtypes: dict[int, dict[str, Any]] = {}
    sources = {p.name: chunks_of(p, rows=rows, window_ns=window_ns, origin_ns=origin_ns,
                                 progress=progress) for p in inputs}
    heads: dict[str, list[Any]] = {}  # channel: [chunk, next row]
    order = {p.name: i for i, p in enumerate(inputs)}

    def key(name: str) -> tuple[int, bool, int]:
        chunk, at = heads[name]
        return int(chunk.receive[at]), name in drivers, order[name]

    window = 0
    while True:
        for name in [n for n in sources if n not in heads]:
            found = next(sources[name], None)
            if found is None:
                del sources[name]
            else:
                heads[name] = [found, 0]
        if not heads:
            break
        keys = sorted((key(n), n) for n in heads)
        name = keys[0][1]
        chunk, lo = heads[name]
        hi = len(chunk)
        if len(keys) > 1:  # this channel's rows up to the next one's turn
            (recv, *tie), _ = keys[1]
            later = chunk.receive[lo:] >= recv if tuple(tie) < keys[0][0][1:] else \
                chunk.receive[lo:] > recv
            hi = lo + (int(np.argmax(later)) if later.any() else hi - lo)
            hi = max(hi, lo + 1)
        if chunk.window != window:  # a new window: what the others hold comes first
            for out in outs.values():
                flushed = out.flush()
                if flushed is not None:
                    yield out.part, flushed
            window = chunk.window
        part, version = parts[name], chunk.version
        assert version is not None
        if id(version) not in dtypes:
            dtypes[id(version)] = {k: v.dtype for k, v in ColumnDecoder(version).empty().items()}
        receive = chunk.receive[lo:hi]
        produced = computing.compute(version, _native(version, part, chunk, lo, hi,
                                                      dtypes[id(version)]))
        given = [(outs[name], {k: v[lo:hi] for k, v in chunk.columns.items()})] \
            if name in outs else []
        given += [(outs[c.name], columns) for c, columns in produced if c.name in outs]
        for out, columns in given:
            ready = out.add(columns, receive, chunk.window)
            if ready is not None:
                yield out.part, ready
        if hi >= len(chunk):
            del heads[name]
        else:
            heads[name][1] = hi
    for out in outs.values():
        flushed = out.flush()
        if flushed is not None:
            yield out.part, flushed
