"""A receive-time range of the cache read as numpy columns: the one reading path that
``pivot`` (into files) and ``query`` (into memory, Arrow, SQL) share.

``select`` finds a range's blocks with the cache's time index only (the cost follows the
range, not the size of the cache), reads each file's schema version from its header and
merges the versions' signals into one set of columns. ``chunks`` then reads the blocks,
checked (damaged ones skipped and counted, never raised), decodes many blocks of a file
in one call and yields bounded chunks of columns, optionally cut at time windows.
``read`` is the pass that exports take: each channel's chunks, and the derived channels
(speeddata/derived) computed in the same pass from their inputs' chunks, fed in the
order the relay received them (so one read, its damage counted once). No sockets, no
clocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speeddata.cache.catalogue import CachedFile, Catalogue, plan
from speeddata.cache.check import BlockReader, Skipped
from speeddata.cache.index import Entry
from speeddata.columns import ColumnDecoder
from speeddata.errors import NotFoundError, SpeeddataError
from speeddata.schemas import Channel, Registry, Signal
from speeddata.times import format_time

CHUNK_RECORDS = 65536  # records decoded at a time (pivot's HDF5 chunk length too)
TEXT = np.dtype("O", metadata={"vlen": str})  # h5py.string_dtype(): UTF-8 text


class ReadError(SpeeddataError):
    """A range that cannot be read as asked: the message says why and what to do."""


class NoData(ReadError, NotFoundError):
    """The range or the channels asked for hold no cached data."""


@dataclass(frozen=True)
class Column:
    """One signal of a channel over a range: what every schema version of the range
    agrees on (a field missing from a version is NaN, or "" for text, in its records)."""

    name: str
    dtype: Any
    unit: str = ""
    doc: str = ""
    avro_type: str = ""
    symbols: tuple[str, ...] = ()
    expression: str = ""  # a derived signal's (speeddata/derived)

    @property
    def text(self) -> bool:
        return self.dtype is not np.float64 and self.dtype not in (np.int64, np.bool_)

    def conform(self, values: np.ndarray | None, count: int) -> np.ndarray:
        """A version's decoded values as this column's type (or the fill when absent)."""
        if values is None:
            return np.full(count, "", dtype=object) if self.text else np.full(count, np.nan)
        if self.text:
            return values if values.dtype == object else values.astype(str).astype(object)
        return values.astype(self.dtype, copy=False)


def _dtype(signal: Signal) -> Any:
    if signal.kind != "number":
        return TEXT
    return np.bool_ if signal.avro_type == "boolean" else (
        np.int64 if signal.avro_type in ("int", "long") else np.float64)


def merged_columns(versions: list[Channel], wanted: list[str]) -> list[Column]:
    """The columns for ``wanted`` signals over the schema versions of a range (oldest
    first): the newest version's unit and doc; one type for all (float64 where versions
    disagree on a numeric type or a version lacks the field, text where one is text)."""
    columns = []
    for name in wanted:
        having = [c.signal(name) for c in versions if name in {s.name for s in c.signals}]
        newest = having[-1]
        types = {_dtype(s) for s in having}
        if any(s.kind != "number" for s in having):
            dtype = TEXT
        elif len(types) == 1 and len(having) == len(versions):
            dtype = types.pop()
        else:
            dtype = np.float64
        columns.append(Column(name, dtype, newest.unit, newest.doc, newest.avro_type,
                              newest.symbols))
    return columns


def signals_for(channel: Channel, signals: list[str] | None) -> list[str]:
    """The signals of ``channel`` that ``signals`` (``name`` or ``channel.name``) asks for;
    every number and text signal when it is empty."""
    usable = [s.name for s in channel.signals if s.kind in ("number", "text")]
    if not signals:
        return usable
    chosen = []
    for item in signals:
        owner, _, name = item.rpartition(".")
        if (not owner or owner == channel.name) and name in usable:
            chosen.append(name)
    return chosen


@dataclass(frozen=True)
class Derived:
    """A derived channel to compute in a reading (speeddata/derived/export.py chooses):
    its inputs read from ``from_ns``; written or only named by another; ``driver``: the
    schema channel whose samples drive it."""

    compiled: Any  # derived.live.Compiled
    from_ns: int
    written: bool
    driver: str


@dataclass
class ChannelRange:
    """One channel's part of a range: its blocks (files in time order), the schema
    version of each file (the writer starts a new file when a schema changes), and the
    columns every version agrees on."""

    name: str
    blocks: list[tuple[CachedFile, Entry]]
    versions: dict[Path, Channel]
    columns: list[Column]
    extra: list[Column] = field(default_factory=list)  # read for derived channels only
    from_ns: int | None = None  # blocks received before: a derived channel's warm-up
    written: bool = True  # False: read only as a derived channel's input
    compiled: Any = None  # a derived channel's (derived.live.Compiled): computed, not read

    @property
    def time_field(self) -> str:
        if self.compiled is not None:
            return "time"
        return next(iter(self.versions.values())).time_field

    @property
    def schemas(self) -> list[dict]:
        """Each distinct schema of the range, oldest first."""
        if self.compiled is not None:
            return [self.compiled.channel.schema]
        return list({c.fingerprint: c.schema for c in self.versions.values()}.values())

    @property
    def records(self) -> int:
        """The records read (a derived channel reads none of its own)."""
        return 0 if self.compiled is not None else sum(e.count for _, e in self.blocks)

    @property
    def rows(self) -> int:
        """The records in the range (at most what is given: damage, decimation)."""
        start = self.from_ns if self.from_ns is not None else -(2**63)
        return sum(e.count for _, e in self.blocks if e.recv_ns >= start)

    @property
    def bytes(self) -> int:
        return sum(e.length for _, e in self.blocks)


@dataclass
class Selection:
    """What a range holds, ready to read: its channels, and the reader that reads them
    (close it, or use the selection as a context manager)."""

    start_ns: int
    end_ns: int
    channels: list[ChannelRange]  # those written, derived ones last
    reader: BlockReader
    inputs: list[ChannelRange] = field(default_factory=list)  # read for derived ones only

    def __enter__(self) -> Selection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()

    @property
    def skipped(self) -> Skipped:
        return self.reader.skipped

    @property
    def records(self) -> int:
        return sum(c.records for c in (*self.channels, *self.inputs))

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in (*self.channels, *self.inputs) if c.compiled is None)


def select(cache_dir: Path, start_ns: int, end_ns: int, *, registry: Registry | None = None,
           channels: list[str] | None = None, signals: list[str] | None = None,
           derived: list[Derived] | None = None) -> Selection:
    """The channels of the cache's ``[start_ns, end_ns]`` (receive clock) and their
    columns; NoData when it holds nothing, ReadError when nothing of it can be read.
    ``derived``: derived channels to compute too, in order; their input channels are
    read from their warm-up start (not written before ``start_ns``; not at all unless
    ``channels`` names them)."""
    catalogue = Catalogue(cache_dir)
    known = catalogue.channels()
    if channels:
        missing = [c for c in channels if c not in known]
        if missing:
            raise NoData(f"no cached data for channel(s) {missing} (cached: {known})")
    selected = plan(catalogue, start_ns, end_ns, channels)
    if not selected.blocks:
        raise NoData(
            f"no data received between {format_time(start_ns)} and {format_time(end_ns)}"
            f"{' for ' + ', '.join(channels) if channels else ''}: check the range, and "
            "'speeddata status' for what the relay receives")
    needed: dict[str, set[str]] = {}  # an input channel: the signals derived ones read
    warm: dict[str, int] = {}
    computed = {d.compiled.channel.name for d in derived or []}
    for one in derived or []:
        for _, program in one.compiled.programs:
            for used in program.inputs:
                if used.channel not in computed:
                    needed.setdefault(used.channel, set()).add(used.signal)
                    warm[used.channel] = min(warm.get(used.channel, start_ns), one.from_ns)
    planned = dict(selected.blocks)
    for name, begin in warm.items():
        found = plan(catalogue, begin, end_ns, [name]).blocks.get(name)
        if found:
            planned[name] = found
    reader = BlockReader(Skipped(), registry)  # damaged blocks skipped, and said
    work, inputs = [], []
    for name, blocks in planned.items():
        versions = {path: reader.channel(path)
                    for path in dict.fromkeys(f.path for f, _ in blocks)}
        for path in [p for p, c in versions.items() if c is None]:
            reader.skip_file(path, [e for f, e in blocks if f.path == path])
            del versions[path]
        blocks = [(f, e) for f, e in blocks if f.path in versions]
        if not blocks:
            continue
        good = {p: c for p, c in versions.items() if c is not None}
        distinct = list({c.fingerprint: c for c in good.values()}.values())
        wanted = list(dict.fromkeys(w for c in distinct for w in signals_for(c, signals)))
        asked = name in selected.blocks and (bool(wanted) or not signals)
        extra = [n for n in sorted(needed.get(name, ()))
                 if n not in wanted and any(n in {s.name for s in c.signals} for c in distinct)]
        if asked or name in needed:
            part = ChannelRange(name, blocks, good, merged_columns(distinct, wanted),
                                merged_columns(distinct, extra),
                                start_ns if name in warm else None, asked)
            (work if asked else inputs).append(part)
    if not work and reader.skipped:
        reader.close()
        raise ReadError(f"every cache file of the range is damaged: {reader.skipped.summary()}"
                        f"; first: {reader.skipped.damage[0]} ('speeddata verify' lists all)")
    if not work:
        reader.close()
        raise ReadError(f"none of the signals {signals} is in the channels of the range "
                        f"({', '.join(selected.blocks)}); name them as channel.signal")
    drivers = {p.name: p for p in (*work, *inputs)}
    for one in derived or []:
        driver, made = drivers.get(one.driver), one.compiled
        if driver is None:  # its driving channel has no readable block in the range
            continue
        (work if one.written else inputs).append(ChannelRange(
            made.channel.name, [(f, e) for f, e in driver.blocks if e.recv_ns >= start_ns],
            {}, [Column(s.name, np.float64, s.unit, s.doc, "double", (), s.expression)
                 for s in made.channel.signals], from_ns=start_ns, written=one.written,
            compiled=made))
    return Selection(start_ns, end_ns, work, reader, inputs)


@dataclass
class Chunk:
    """Consecutive records of one channel: the time field and each column under its
    field's name, the relay's receive time of each, and the time window they are in."""

    columns: dict[str, np.ndarray]
    receive: np.ndarray
    window: int = 0
    version: Channel | None = None  # the schema version of the file the records are from

    def __len__(self) -> int:
        return len(self.receive)


def chunks(reader: BlockReader, part: ChannelRange, *, rows: int = CHUNK_RECORDS,
           decimate: int = 1, window_ns: int | None = None, origin_ns: int = 0,
           progress: Callable[[int], None] | None = None) -> Iterator[Chunk]:
    """The records of ``part`` in order, about ``rows`` at a time (a block is never cut),
    every ``decimate``-th one (counted across blocks); with ``window_ns``, a chunk never
    spans two windows of receive time counted from ``origin_ns``. ``progress(n)`` is told
    the records of each block read (damaged blocks are skipped and noted in the
    reader's ``skipped``)."""
    decoders = {path: ColumnDecoder(c) for path, c in part.versions.items()}
    skip = [0]  # decimation carries across blocks
    group: list[tuple[Entry, bytes]] = []
    group_path: Path | None = None
    group_window = 0
    group_rows = 0
    for cached, entry, data in reader.bodies(part.blocks):
        window = 0 if window_ns is None else max(0, entry.recv_ns - origin_ns) // window_ns
        if group and (cached.path != group_path or window != group_window):
            yield from _decoded(reader, part, decoders[group_path], group_path, group,
                                group_window, decimate, skip, progress)
            group, group_rows = [], 0
        group.append((entry, data))
        group_path, group_window = cached.path, window
        group_rows += entry.count
        if group_rows >= rows:
            yield from _decoded(reader, part, decoders[group_path], group_path, group,
                                group_window, decimate, skip, progress)
            group, group_rows = [], 0
    if group:
        yield from _decoded(reader, part, decoders[group_path], group_path, group,
                            group_window, decimate, skip, progress)


def _decode_runs(reader: BlockReader, decoder: ColumnDecoder, path: Path,
                 group: list[tuple[Entry, bytes]]) -> tuple[dict[str, np.ndarray], list[bool]]:
    """``reader.decode`` of each run of blocks whose records have one size (a counter
    that grows a varint byte changes it): each run is one matrix of rows, where the whole
    group would not be."""
    runs: list[list[tuple[Entry, bytes]]] = []
    last: int | None = None
    for entry, data in group:
        size = len(data) // entry.count if entry.count and len(data) % entry.count == 0 \
            else None
        if runs and size is not None and size == last:
            runs[-1].append((entry, data))
        else:
            runs.append([(entry, data)])
        last = size
    if len(runs) == 1:
        return reader.decode(decoder, path, group)
    parts, kept = [], []
    for run in runs:
        columns, ok = reader.decode(decoder, path, run)
        if any(ok):
            parts.append(columns)
        kept += ok
    if not parts:
        return decoder.empty(), kept
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, kept


def _decoded(reader: BlockReader, part: ChannelRange, decoder: ColumnDecoder, path: Path,
             group: list[tuple[Entry, bytes]], window: int, decimate: int, skip: list[int],
             progress: Callable[[int], None] | None) -> Iterator[Chunk]:
    """One chunk of a file's blocks, decoded in one call (block by block where that fails,
    the blocks that do not decode skipped)."""
    decoded, kept = _decode_runs(reader, decoder, path, group)
    counts = np.array([e.count for (e, _), ok in zip(group, kept, strict=True) if ok],
                      dtype=np.int64)
    if progress:
        progress(int(counts.sum()))
    if not len(counts):
        return
    count = int(counts.sum())
    received = np.array([e.recv_ns for (e, _), ok in zip(group, kept, strict=True) if ok],
                        dtype=np.int64)
    columns = {c.name: c.conform(decoded.get(c.name), count)
               for c in (*part.columns, *part.extra)}
    columns[part.time_field] = decoded[decoder.channel.time_field]
    receive = np.repeat(received, counts.astype(np.intp))
    if decimate > 1:
        keep = np.arange(skip[0], count, decimate)
        skip[0] = (skip[0] - count) % decimate
        columns = {k: v[keep] for k, v in columns.items()}
        receive = receive[keep]
    if len(receive):
        yield Chunk(columns, receive, window, decoder.channel)


Stream = Iterator[tuple[ChannelRange, Chunk]]
ChunksOf = Callable[..., Iterator[Chunk]]  # (part, **chunks' options): a part's chunks


def streams(selection: Selection, *, rows: int = CHUNK_RECORDS, decimate: int = 1,
            window_ns: int | None = None, origin_ns: int = 0,
            progress: Callable[[int], None] | None = None,
            chunks_of: ChunksOf | None = None) -> list[Stream]:
    """The selection's chunks as streams to read one after the other (or merged by
    window): one per channel that feeds no derived channel, then one for the derived
    channels and their inputs, computed as those are read (``chunks``' arguments).
    ``chunks_of(part, **options)`` reads a part's chunks elsewhere than from the
    selection's cache (the Dask workers); the same chunks, so the same result."""
    if chunks_of is None:
        def chunks_of(part: ChannelRange, **options: Any) -> Iterator[Chunk]:
            return chunks(selection.reader, part, **options)
    every = (*selection.channels, *selection.inputs)
    made = [p for p in every if p.compiled is not None]
    feeding = {n for p in made for n in p.compiled.inputs()}
    out: list[Stream] = [
        _labelled(part, chunks_of(part, rows=rows, decimate=decimate, window_ns=window_ns,
                                  origin_ns=origin_ns, progress=progress))
        for part in selection.channels if part.compiled is None and part.name not in feeding]
    if made:
        read = [p for p in every if p.compiled is None and p.name in feeding]
        from speeddata.derived.reading import derived_pass  # it builds on this module

        out.append(derived_pass(chunks_of, read, made, rows, decimate, window_ns,
                                origin_ns, progress))
    return out


def _labelled(part: ChannelRange, found: Iterator[Chunk]) -> Stream:
    for chunk in found:
        yield part, chunk


def read(selection: Selection, **options: Any) -> Stream:
    """Every chunk of the selection, derived channels' too (``streams``' options)."""
    for stream in streams(selection, **options):
        yield from stream
