"""``speeddata.query``: a range of the cache straight into numpy, pandas, xarray, Arrow or
Polars, without a file; and as Arrow record batches by time window for ranges larger
than memory (what ``speeddata query --sql`` gives DuckDB).

The range is named as for the CLI (a tag, or a start and an end: ``speeddata.times``,
``tags.resolve_range``) and read by the pivot's own reading path
(``speeddata.readout``), so a query gives the values a pivot of the range writes.
"""

from __future__ import annotations

import heapq
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speeddata import config as configuration
from speeddata.cache.catalogue import Catalogue
from speeddata.cache.check import Skipped
from speeddata.derived import export as derived_export
from speeddata.errors import ArchiveError, ConfigError
from speeddata.readout import ChannelRange, Chunk, ReadError, Selection, select, streams
from speeddata.schemas import Registry, load_channels
from speeddata.sets import ChannelData, SetData
from speeddata.sinks import column_names
from speeddata.tables import channel_schema, pyarrow, record_batch
from speeddata.tags import Span, resolve_range
from speeddata.times import format_time, parse_duration

log = logging.getLogger("speeddata.query")

BATCH_ROWS = 65536  # most records in one batch: a window holding more comes in parts


@dataclass(frozen=True)
class Batch:
    """Records of one channel in one time window (receive time, from the range's start:
    window ``k`` is ``[start + k * window, start + (k + 1) * window)``)."""

    channel: str
    window: int
    batch: Any  # pyarrow.RecordBatch


class Query:
    """A range of the cache, ready to read (nothing is read until asked). Each reading
    (``read``, ``batches``...) goes through the cache again, so it stays bounded."""

    def __init__(self, cache_dir: Path, span: Span, *, registry: Registry | None = None,
                 channels: list[str] | None = None, signals: list[str] | None = None,
                 decimate: int = 1, keep: Any = None, channels_dir: Path | None = None,
                 remote: Any = None, progress: Callable[[int, int], None] | None = None
                 ) -> None:
        if decimate < 1:
            raise ConfigError(f"decimate must be 1 or more, not {decimate}")
        self.cache_dir = cache_dir
        self.span = span
        self.registry = registry
        self.channels = channels
        self.signals = signals
        self.decimate = decimate
        self.channels_dir = channels_dir  # its derived channels are computed too
        self.skipped = Skipped()  # damaged blocks of the last reading
        self._keep = keep  # the archive's temporary cache, as long as the query lives
        self._remote = remote  # a distributed.Remote: the range's columns on Dask workers
        self.progress = progress  # (records read, records in the range) as a read goes
        self._read: SetData | None = None
        with self._select():  # what is missing fails now, not at the first read
            pass

    @property
    def start_ns(self) -> int:
        return self.span.start_ns

    @property
    def end_ns(self) -> int:
        return self.span.end_ns

    def _chunks_of(self, selection: Selection) -> Callable[..., Iterator[Chunk]] | None:
        """Where ``readout.streams`` reads a part's chunks: the Dask workers, or (None)
        the cache."""
        remote = self._remote
        if remote is None:
            return None

        def chunks_of(part: ChannelRange, **options: Any) -> Iterator[Chunk]:
            return remote.chunks(selection, part, **options)

        return chunks_of

    def _counter(self, total: int) -> Callable[[int], None]:
        """What a reading tells ``progress``: records read of ``total``."""
        done = 0

        def read(n: int) -> None:
            nonlocal done
            done += n
            if self.progress:
                self.progress(done, total)

        return read

    def _select(self) -> Selection:
        """The range's channels, derived ones compiled afresh (their state is a reading's)."""
        catalogue = Catalogue(self.cache_dir)
        derived = derived_export.select(self.channels_dir, self.registry, self.channels,
                                        catalogue.channels())
        channels = derived.narrow(self.channels)  # a derived one named: its driver
        selection = select(self.cache_dir, self.start_ns, self.end_ns, registry=self.registry,
                           channels=channels, signals=self.signals,
                           derived=derived.plan(catalogue, self.start_ns))
        self.skipped = selection.skipped
        return selection

    def attrs(self) -> dict[str, Any]:
        """What a pivot of the range would put in its file's attributes about it."""
        about: dict[str, Any] = {"start": format_time(self.start_ns),
                                 "end": format_time(self.end_ns),
                                 "start_ns": self.start_ns, "end_ns": self.end_ns}
        if self.span.tag is not None:
            about.update(tag=self.span.tag.name, note=self.span.tag.note)
        return about

    def read(self) -> SetData:
        """Every channel of the range in memory, a numpy column per signal (once)."""
        if self._read is None:
            data = SetData(None, self.attrs())
            with self._select() as selection:
                fill = {part.name: _Fill(part) for part in selection.channels}
                for stream in streams(selection, decimate=self.decimate,
                                      progress=self._counter(selection.records),
                                      chunks_of=self._chunks_of(selection)):
                    for part, chunk in stream:
                        fill[part.name].add(chunk)
                for name, found in fill.items():
                    data.channels[name] = found.data()
            data.attrs["skipped_records"] = self.skipped.records
            self._read = data
        return self._read

    def close(self) -> None:
        """Let go of what the query holds: the archive's copy, the Dask workers' columns."""
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        if self._keep is not None:
            self._keep.cleanup()
            self._keep = None

    def __enter__(self) -> Query:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, channel: str) -> ChannelData:
        return self.read()[channel]

    def to_pandas(self) -> dict[str, Any]:
        """Channel name -> pandas DataFrame indexed by time."""
        return self.read().to_pandas()

    def to_xarray(self) -> dict[str, Any]:
        """Channel name -> xarray Dataset, as ``speeddata.load(...).to_xarray()``."""
        return self.read().to_xarray()

    def to_arrow(self) -> dict[str, Any]:
        """Channel name -> pyarrow Table (named as in a Parquet export)."""
        return self.read().to_arrow()

    def to_polars(self) -> dict[str, Any]:
        """Channel name -> Polars DataFrame (needs polars)."""
        return self.read().to_polars()

    def schemas(self) -> dict[str, Any]:
        """Channel name -> the Arrow schema of its batches."""
        with self._select() as selection:
            return {part.name: _arrow_schema(part) for part in selection.channels}

    def batches(self, window: str | float = "10s", rows: int = BATCH_ROWS,
                channels: list[str] | None = None) -> Iterator[Batch]:
        """Arrow record batches, window after window of receive time and in each the
        channels in turn; about ``rows`` records a batch (a block is never cut). Memory
        holds one batch per channel, whatever the range."""
        window_ns = parse_duration(window)
        with self._select() as selection:
            found = streams(selection, rows=rows, decimate=self.decimate, window_ns=window_ns,
                            origin_ns=self.start_ns, progress=self._counter(selection.records),
                            chunks_of=self._chunks_of(selection))
            merged = [self._stream(order, stream, channels)
                      for order, stream in enumerate(found)]
            for _, _, batch in heapq.merge(*merged, key=lambda item: item[:2]):
                yield batch

    def _stream(self, order: int, stream: Iterator[tuple[ChannelRange, Chunk]],
                channels: list[str] | None) -> Iterator[tuple[int, int, Batch]]:
        """One stream's batches keyed by (window, stream): a stream's windows come in
        order (a derived pass's channels interleaved in each)."""
        schemas: dict[str, Any] = {}
        for part, chunk in stream:
            if channels and part.name not in channels:
                continue
            if part.name not in schemas:
                schemas[part.name] = _arrow_schema(part)
            yield chunk.window, order, Batch(part.name, chunk.window,
                                             _batch(schemas[part.name], part, chunk))

    def reader(self, channel: str, window: str | float = "10s", rows: int = BATCH_ROWS
               ) -> Any:
        """One channel's batches as a ``pyarrow.RecordBatchReader`` (read once): what
        DuckDB, Polars or a Parquet writer take as a stream."""
        pa = pyarrow()
        schema = self.schemas().get(channel)
        if schema is None:
            raise ConfigError(f"channel {channel!r} is not in the query (it has "
                              f"{', '.join(self.names())})")
        return pa.RecordBatchReader.from_batches(
            schema, (b.batch for b in self.batches(window, rows, [channel])))

    def names(self) -> list[str]:
        """The channels the range holds (of those asked for)."""
        with self._select() as selection:
            return [part.name for part in selection.channels]


def _arrow_schema(part: ChannelRange) -> Any:
    names = column_names("parquet", part.time_field, [c.name for c in part.columns])
    return channel_schema(part.time_field, part.columns, names, part.schemas)


def _batch(schema: Any, part: ChannelRange, chunk: Any) -> Any:
    return record_batch(schema, chunk.columns[part.time_field], chunk.receive,
                        [chunk.columns[c.name] for c in part.columns])


class _Fill:
    """One channel of the range, each chunk copied into place as it is read (it stays in
    the CPU's cache for all its columns): the float columns rows of one 2-D block, which
    pandas takes without a copy."""

    def __init__(self, part: ChannelRange) -> None:
        self.part = part
        most = part.rows  # no more than the index says (damage and decimation give fewer)
        self.floats = [c.name for c in part.columns if np.dtype(c.dtype) == np.float64]
        self.block = np.empty((len(self.floats), most), dtype=np.float64)
        self.times = np.empty(most, dtype=np.int64)
        self.receive = np.empty(most, dtype=np.int64)
        self.others: dict[str, list[np.ndarray]] = {c.name: [] for c in part.columns
                                                     if c.name not in self.floats}
        self.row = 0

    def add(self, chunk: Chunk) -> None:
        row, end = self.row, self.row + len(chunk)
        for j, name in enumerate(self.floats):
            self.block[j, row:end] = chunk.columns[name]
        self.times[row:end] = chunk.columns[self.part.time_field]
        self.receive[row:end] = chunk.receive
        for name, parts in self.others.items():
            parts.append(chunk.columns[name])
        self.row = end

    def data(self) -> ChannelData:
        part, row = self.part, self.row
        block, times, receive = self.block, self.times, self.receive
        if row < len(times):
            block, times, receive = block[:, :row].copy(), times[:row], receive[:row]
        columns = {}
        for c in part.columns:
            if c.name in self.others:
                found = self.others[c.name]
                columns[c.name] = np.concatenate(found) if found else np.empty(0, dtype=c.dtype)
            else:
                columns[c.name] = block[self.floats.index(c.name)]
        return ChannelData(
            part.name, times, receive, columns, {c.name: c.unit for c in part.columns},
            {c.name: c.doc for c in part.columns}, part.schemas[-1], part.time_field,
            {c.name: c.avro_type for c in part.columns},
            {c.name: c.expression for c in part.columns if c.expression})


def query(tag: str | None = None, *, start: str | None = None, end: str | None = None,
          channels: list[str] | str | None = None, signals: list[str] | str | None = None,
          cache: str | Path | None = None, archive: bool = False, partial: bool = False,
          config: str | Path | configuration.Config | None = None, decimate: int = 1,
          now_ns: int | None = None, dask: Any = None,
          progress: Callable[[int, int], None] | None = None) -> Query:
    """A tag's range (or ``start`` to ``end``: ``"-10m"``, ``"now"``, ISO 8601), of the
    cache (``cache``, else the configured one) or with ``archive`` of every relay's
    archived files; ``channels`` and ``signals`` (``name`` or ``channel.name``) narrow
    it. Reading is lazy: ``.to_pandas()``, ``.to_xarray()``, ``.batches("10s")``...
    A missing tag or an empty range is a ``NotFoundError``. ``dask`` (a scheduler address
    or a ``distributed.Client``; default ``[query] dask``): the archived range is read by
    the cluster's workers (``speeddata.distributed``), the same values. ``progress(done,
    total)``: records read (and the workers' files done, on Dask), as a read goes."""
    found = config if isinstance(config, configuration.Config) else configuration.build(
        Path(config) if config else None)
    cache_dir = Path(cache) if cache is not None else found.cache.dir
    now = time.time_ns() if now_ns is None else now_ns
    span = resolve_range(cache_dir, tag, start, end, now)
    names = channels.split(",") if isinstance(channels, str) else channels
    if span.tag is not None:
        names = names or list(span.tag.channels) or None
    wanted = signals.split(",") if isinstance(signals, str) else signals
    registry = (load_channels(found.channels.dir, log) if found.channels.dir.is_dir()
                else None)
    keep = remote = None
    if dask is not None and not archive:
        raise ConfigError("dask= reads archived ranges on a Dask cluster: add archive=True")
    dask = dask if dask is not None else (found.query.dask or None)
    if archive:
        keep = tempfile.TemporaryDirectory(prefix="speeddata-query-")
        cache_dir = Path(keep.name)
        if dask is None:
            _fetch(found, span, cache_dir, names, partial)
        else:
            from speeddata.distributed import Remote

            remote = Remote(dask, found, span.start_ns, span.end_ns, cache_dir, names,
                            registry, progress=progress)
            try:
                _check_fetched(remote.stats, partial)
            except BaseException:
                remote.close()
                raise
    return Query(cache_dir, span, registry=registry, channels=names, signals=wanted,
                 decimate=decimate, keep=keep, remote=remote, progress=progress,
                 channels_dir=found.channels.dir if found.channels.dir.is_dir() else None)


def _fetch(found: configuration.Config, span: Span, into: Path, names: list[str] | None,
           partial: bool) -> None:
    """The range's blocks from the archive into ``into`` (as ``pivot --archive``); what
    could not be read fails the query unless ``partial``."""
    from speeddata import archive

    if not found.archive.endpoint:
        raise ConfigError("archive: [archive] endpoint is empty; set it to the store the "
                          "relays archive to")
    _check_fetched(archive.fetch_range(found, span.start_ns, span.end_ns, into, names),
                   partial)


def _check_fetched(fetched: dict[str, Any], partial: bool) -> None:
    """What the archive could not give fails the query unless ``partial`` (then warned)."""
    if fetched["problems"] and not partial:
        raise ArchiveError(f"{fetched['unread_records']} of {fetched['records']} records in "
                           "the range could not be read from the archive (partial=True "
                           "reads the rest): " + "; ".join(fetched["problems"][:5]))
    for line in fetched["problems"]:
        log.warning("archive: %s", line)


class SqlError(ReadError):
    """A statement DuckDB refuses; the message is DuckDB's."""


def sql(found: Query, statement: str, *, window: str | float = "10s",
        csv: Path | None = None, parquet: Path | None = None) -> Any:
    """``statement`` run by DuckDB over the range, each channel a table named after it
    (its batches streamed: only the tables the statement reads are read). The result as
    a pyarrow Table, or written to ``csv`` or ``parquet`` (whole or not at all: None is
    returned). A table the statement scans twice (a self-join) is read into memory."""
    try:
        import duckdb
    except ModuleNotFoundError:
        raise SqlError("SQL needs DuckDB: pip install 'speeddata[query]'") from None
    names = found.names()
    for streaming in (True, False):
        db = duckdb.connect()
        try:
            db.execute("SET TimeZone = 'UTC'")
            for name in names:
                stream = found.reader(name, window)
                db.register(name, stream if streaming else stream.read_all())
            relation = db.sql(statement)
            if relation is None:
                raise SqlError("the statement gives no rows: write a query (select ...)")
            if csv is None and parquet is None:
                return relation.to_arrow_table()
            target = csv or parquet
            assert target is not None
            tmp = target.with_name(f".{target.name}.tmp")
            try:
                (relation.to_csv if csv else relation.to_parquet)(str(tmp))
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
            return None
        except duckdb.InvalidInputException as exc:
            if streaming and "already been consumed" in str(exc):
                log.info("a table is scanned twice: reading the range into memory")
                continue
            raise SqlError(str(exc)) from None
        except duckdb.Error as exc:
            raise SqlError(str(exc)) from None
        finally:
            db.close()
    raise AssertionError("unreachable")
