"""Archived ranges read on ``dask.distributed``: ``pivot --archive --dask ADDRESS`` and
``speeddata.query(archive=True, dask=ADDRESS)`` (or ``[query] dask``).

One task per archived file (each holds one channel): the worker fetches the file's blocks
of the range from the store and checks them as ``archive.fetch_range`` does, rebuilds the
file in a temporary directory and decodes it with the pivot's own reader
(``readout.chunks``). The client gets back each file's header and index (a "skeleton"
cache: no block data), so ``readout.select`` plans the range, merges the schema versions
and counts unusable headers exactly as for a local cache; each channel's columns are then
gathered from the workers, conformed to the merged columns and put in the planned
receive order, the workers' decode damage noted where the local reader would note it.
The client writes the one HDF5 file (``pivot.write``), so a Dask pivot equals the
one-machine pivot of the range, value for value and damage for damage.

Derived channels are computed on the client in the pivot's own reading pass
(``readout.streams``) from their inputs' columns as the workers decoded them: their
operators carry state across blocks in receive order, one sequence, not parallel work.
The client holds one channel's columns at a time; the rest stay in the workers' memory
until asked for.
"""

from __future__ import annotations

import logging
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speeddata.archive.bucket import SUMS_SUFFIX, client
from speeddata.archive.fetch import (
    add_stats,
    fetch_clock_series,
    fetch_file,
    listing_sizes,
    local_name,
    new_stats,
    wanted_files,
    write_fetched,
)
from speeddata.cache import index
from speeddata.cache.catalogue import Catalogue
from speeddata.cache.check import BlockReader, Damage, Skipped
from speeddata.cache.layout import INDEX_SUFFIX, SUFFIX, index_path
from speeddata.config import ArchiveConfig, Config
from speeddata.derived import export as derived_export
from speeddata.errors import ConfigError, SpeeddataError
from speeddata.readout import (
    CHUNK_RECORDS,
    ChannelRange,
    Chunk,
    Selection,
    chunks,
    merged_columns,
    select,
    signals_for,
)
from speeddata.schemas import Registry

log = logging.getLogger("speeddata.distributed")

CONNECT_SECONDS = 10.0  # how long the scheduler, then a first worker, is waited for


class DaskError(SpeeddataError):
    """The Dask cluster cannot be used as given: the message says what to do."""


class StoreUnreachable(DaskError):
    """A Dask worker cannot reach the archive's store: the workers need fixing."""


# -- the workers' side ----------------------------------------------------------------------

@dataclass(frozen=True)
class FileTask:
    """One archived file to read: its key (without suffix), the relay host and channel it
    is of, its worker number in the rebuilt cache, and the sizes of its objects."""

    number: int
    host: str
    channel: str
    key: str
    sizes: tuple[tuple[str, int], ...]

    @property
    def local(self) -> str:
        return f"{self.channel}/{local_name(self.key, self.number)}"


@dataclass
class FileMeta:
    """What the client needs of a file before its columns: the fetch's counters, the
    header and index of what came back whole (None: nothing), which blocks decoded and the
    damage the worker's reader noted (start, end, reason, records)."""

    task: FileTask
    stats: dict[str, Any]
    head: bytes | None = None
    entries: list[index.Entry] = field(default_factory=list)
    kept: list[bool] = field(default_factory=list)
    damage: list[tuple[int, int, str, int | None]] = field(default_factory=list)


@dataclass
class FileResult:
    """A file's meta and its decoded columns (of the kept blocks, its own schema's
    columns and time field)."""

    meta: FileMeta
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    time_field: str = "time"


class _Recorded(Skipped):
    """A Skipped that also keeps every damage as added (each block's, before merging)."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[tuple[int, int, str, int | None]] = []

    def add(self, damage: Damage) -> None:
        self.added.append((damage.start, damage.end, damage.reason, damage.records))
        super().add(damage)


_STORES: dict[ArchiveConfig, Any] = {}  # per worker process: one client, checked once


def _store(archive: ArchiveConfig) -> Any:
    s3 = _STORES.get(archive)
    if s3 is None:
        s3 = client(archive)
        try:
            s3.head_bucket(Bucket=archive.bucket)
        except Exception as exc:  # any: no route, refused, no credentials, a proxy...
            raise StoreUnreachable(
                f"Dask worker on {socket.gethostname()} cannot reach the archive's store "
                f"{archive.endpoint} (bucket {archive.bucket}): {exc}; give every worker a "
                "network path to the store and its credentials (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY in the workers' environment, or [archive] "
                "credentials_file readable there)") from None
        _STORES[archive] = s3
    return s3


def read_file(task: FileTask, archive: ArchiveConfig, start_ns: int, end_ns: int,
              registry: Registry | None) -> FileResult:
    """A worker's task: one archived file's blocks of the range fetched, checked, rebuilt
    as a cache file and decoded. Damage is counted and returned, never raised; only a
    store this worker cannot reach at all is an error (``StoreUnreachable``)."""
    stats, got = fetch_file(_store(archive), archive.bucket, dict(task.sizes), task.key,
                            start_ns, end_ns)
    result = FileResult(FileMeta(task, stats))
    if got is None:
        return result
    head, blocks = got
    with tempfile.TemporaryDirectory(prefix="speeddata-dask-") as tmp:
        local = Path(tmp) / task.local
        write_fetched(local, head, blocks)
        entries = index.unpack(index_path(local).read_bytes())
        meta = result.meta
        meta.head, meta.entries = head, entries
        meta.kept = [False] * len(entries)
        skipped = _Recorded()
        reader = BlockReader(skipped, registry)
        try:
            version = reader.channel(local)
            if version is None:  # the client's select counts the header, as locally
                return result
            part = ChannelRange(task.channel, [(_At(local), e) for e in entries],
                                {local: version},
                                merged_columns([version], signals_for(version, None)))
            pieces = list(chunks(reader, part))
        finally:
            reader.close()
        lost = {d[0] for d in skipped.added}
        meta.kept = [e.offset not in lost for e in entries]
        meta.damage = skipped.added
        result.time_field = version.time_field
        names = [*(c.name for c in part.columns), version.time_field]
        result.columns = {n: np.concatenate([p.columns[n] for p in pieces]) for n in names
                          if pieces}
    return result


@dataclass(frozen=True)
class _At:
    """A cached file as ``readout.chunks`` needs it: its path."""

    path: Path


def _meta(result: FileResult) -> FileMeta:
    return result.meta


# -- the client's side ----------------------------------------------------------------------

def connect(dask: Any, timeout: float = CONNECT_SECONDS) -> Any:
    """A ``distributed.Client`` for ``dask`` (a scheduler address, or a Client as is),
    with at least one worker; a clear ``DaskError`` otherwise."""
    try:
        from distributed import Client
    except ModuleNotFoundError:
        raise DaskError("reading on Dask needs dask.distributed: pip install "
                        "'speeddata[dask]'") from None
    if isinstance(dask, Client):
        return dask
    address = str(dask)
    try:
        found = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise DaskError(
            f"cannot reach the Dask scheduler at {address!r} ({type(exc).__name__}: {exc}); "
            "start one ('dask scheduler', then 'dask worker ADDRESS' on each machine) or "
            "fix --dask / [query] dask (like tcp://host:8786)") from None
    try:
        found.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        found.close()
        raise DaskError(f"the Dask scheduler at {address} has no workers ({exc}): start "
                        f"some with 'dask worker {address}'") from None
    return found


class Remote:
    """An archived range read on a cluster: the tasks' futures (their columns stay in
    the workers' memory until a channel is asked for), the fetch's counters, and the
    skeleton cache ``root`` that ``readout.select`` plans from."""

    def __init__(self, dask: Any, found: Config, start_ns: int, end_ns: int, root: Path,
                 channels: list[str] | None, registry: Registry | None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        if not found.archive.endpoint:
            raise ConfigError("archive: [archive] endpoint is empty; set it to the store "
                              "the relays archive to (--archive-endpoint URL)")
        self.client = connect(dask)
        self.owned = self.client is not dask  # made here: closed here
        self.results: list[Any] = []
        self.root = root
        try:
            self._read(found, start_ns, end_ns, channels, registry, progress)
        except BaseException:
            self.close()
            raise

    def _read(self, found: Config, start_ns: int, end_ns: int, channels: list[str] | None,
              registry: Registry | None,
              progress: Callable[[int, int], None] | None) -> None:
        from distributed import as_completed

        root = self.root
        archive = found.archive
        s3 = client(archive)
        sizes = listing_sizes(s3, archive.bucket, archive.prefix)
        tasks = []
        for number, host, channel, key in wanted_files(sizes, archive.prefix, start_ns, end_ns,
                                                       channels):
            own = tuple((k, sizes[k]) for k in (key + SUFFIX, key + INDEX_SUFFIX,
                                                 key + SUMS_SUFFIX) if k in sizes)
            tasks.append(FileTask(number, host, channel, key, own))
        self.results = [self.client.submit(read_file, t, archive, start_ns, end_ns, registry,
                                           pure=False) for t in tasks]
        metas = [self.client.submit(_meta, r, pure=False) for r in self.results]
        for done, future in enumerate(as_completed(metas, loop=self.client.loop), 1):
            if future.status == "error":
                future.result()  # the worker's error, raised here (the others cancelled)
            if progress:
                progress(done, len(metas))
        self.metas: list[FileMeta] = self.client.gather(metas)
        self.stats = new_stats()
        self.by_path: dict[Path, int] = {}
        for i, meta in enumerate(self.metas):
            add_stats(self.stats, meta.stats, meta.task.host if meta.head is not None else None)
            if meta.head is None:
                continue
            self.stats["files"] += 1
            self.stats["blocks"] += len(meta.entries)
            local = root / meta.task.local
            self.by_path[local] = i
            local.parent.mkdir(parents=True, exist_ok=True)  # a skeleton: no block data
            local.write_bytes(meta.head)
            index_path(local).write_bytes(b"".join(e.pack() for e in meta.entries))
        # the clock series are small: the client fetches them, as the local path does
        fetch_clock_series(s3, archive.bucket, sizes, archive.prefix, start_ns, end_ns, root,
                           self.stats)

    def merged(self, selection: Selection, part: ChannelRange, decimate: int = 1
               ) -> tuple[dict[str, np.ndarray], np.ndarray, list[tuple[int, int, int, bool]]]:
        """``part``'s columns (the merged ones and its time field) and receive times in
        its planned order, every ``decimate``-th record; the workers' damage noted in
        ``selection.skipped`` in that order. Also each block the local reader would take
        to decoding, in order: its file, receive time, records and whether it decoded."""
        wanted = sorted({self.by_path[f.path] for f, _ in part.blocks})
        got = dict(zip(wanted, self.client.gather([self.results[i] for i in wanted]),
                       strict=True))
        rows: dict[int, dict[int, tuple[int, int]]] = {}  # file -> offset -> (row, count)
        totals: dict[int, int] = {}
        for i, result in got.items():
            row, at = 0, {}
            for entry, ok in zip(result.meta.entries, result.meta.kept, strict=True):
                if ok:
                    at[entry.offset] = (row, entry.count)
                    row += entry.count
            rows[i], totals[i] = at, row
        damage: dict[int, dict[int, list[Any]]] = {i: {} for i in got}
        for i, result in got.items():
            for start, end, reason, records in result.meta.damage:
                damage[i].setdefault(start, []).append((start, end, reason, records))
        runs: list[tuple[int, int, int]] = []  # file, first row, rows
        received = []
        blocks = []
        for cached, entry in part.blocks:
            i = self.by_path[cached.path]
            noted = damage[i].get(entry.offset, [])
            for start, end, reason, records in noted:
                selection.skipped.add(Damage(cached.path, start, end, reason, records))
            if all(reason == "decode" for _, _, reason, _ in noted):  # its body was read
                blocks.append((i, entry.recv_ns, entry.count, entry.offset in rows[i]))
            if entry.offset not in rows[i]:
                continue
            row, count = rows[i][entry.offset]
            if runs and runs[-1][0] == i and runs[-1][1] + runs[-1][2] == row:
                runs[-1] = (i, runs[-1][1], runs[-1][2] + count)
            else:
                runs.append((i, row, count))
            received.append((entry.recv_ns, count))
        counts = np.array([c for _, c in received], dtype=np.intp)
        receive = np.repeat(np.array([r for r, _ in received], dtype=np.int64), counts)
        wanted_columns = (*part.columns, *part.extra)  # extra: a derived channel's inputs
        conformed = {i: {c.name: c.conform(r.columns.get(c.name), totals[i])
                         for c in wanted_columns} for i, r in got.items() if totals[i]}
        columns = {c.name: _joined([conformed[i][c.name][a:a + n] for i, a, n in runs],
                                   c.dtype) for c in wanted_columns}
        columns[part.time_field] = _joined(
            [got[i].columns[got[i].time_field][a:a + n] for i, a, n in runs], np.int64)
        if decimate > 1:
            columns = {k: v[::decimate] for k, v in columns.items()}
            receive = receive[::decimate]
        return columns, receive, blocks

    def chunks(self, selection: Selection, part: ChannelRange, *, rows: int = CHUNK_RECORDS,
               decimate: int = 1, window_ns: int | None = None, origin_ns: int = 0,
               progress: Callable[[int], None] | None = None) -> Iterator[Chunk]:
        """As ``readout.chunks``, from the workers, in the same chunks: a chunk is the
        blocks of one file and window that ``readout.chunks`` decodes in one call."""
        columns, receive, blocks = self.merged(selection, part, decimate)
        groups: list[tuple[int, int, int]] = []  # (records decoded, window, file) of each
        group_file, group_window, group_rows, kept = -1, 0, 0, 0
        for i, recv_ns, count, ok in blocks:
            window = 0 if window_ns is None else max(0, recv_ns - origin_ns) // window_ns
            if group_rows and (i != group_file or window != group_window):
                groups.append((kept, group_window, group_file))
                group_rows = kept = 0
            group_file, group_window = i, window
            group_rows += count
            kept += count if ok else 0
            if group_rows >= rows:
                groups.append((kept, group_window, group_file))
                group_rows = kept = 0
        if group_rows:
            groups.append((kept, group_window, group_file))
        done = 0
        paths = {i: path for path, i in self.by_path.items()}
        for count, window, i in groups:
            if progress:
                progress(count)
            first, last = -(-done // decimate), -(-(done + count) // decimate)
            done += count
            if last > first:
                yield Chunk({k: v[first:last] for k, v in columns.items()},
                            receive[first:last], window, part.versions[paths[i]])

    def close(self) -> None:
        """The results released from the workers' memory."""
        for future in self.results:
            future.release()
        self.results = []
        if self.owned:
            self.client.close()


def _joined(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


def pivot(dask: Any, found: Config, out_path: Path, start_ns: int, end_ns: int, *,
          registry: Registry | None = None, channels: list[str] | None = None,
          signals: list[str] | None = None, decimate: int = 1,
          compression: str | None = "gzip", export_format: str = "hdf5",
          force: bool = False, attrs: dict[str, Any] | None = None,
          fetched: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
          progress: Callable[[int, int], None] | None = None,
          tasks: Callable[[int, int], None] | None = None,
          channels_dir: Path | None = None, clock: str = "source") -> Any:
    """``pivot --archive`` on a Dask cluster: as ``pivot.pivot`` of the range fetched from
    the archive, the reading done by the workers. ``fetched(stats)`` is told the fetch's
    counters before anything is written (it may raise, as ``pivot --archive`` without
    ``--partial`` does) and returns attributes for the export; ``tasks(done, total)``
    follows the workers' files, ``progress`` the records written."""
    from speeddata import pivot as local

    local.check_request(out_path, decimate, clock, export_format, force)
    with tempfile.TemporaryDirectory(prefix="speeddata-dask-") as tmp:
        root = Path(tmp)

        remote = Remote(dask, found, start_ns, end_ns, root, channels, registry, tasks)
        try:
            attrs = {**(attrs or {}), **(fetched(remote.stats) if fetched else {})}
            catalogue = Catalogue(root)
            derived = derived_export.select(channels_dir, registry, channels,
                                            catalogue.channels())
            selection = select(root, start_ns, end_ns, registry=registry,
                               channels=derived.narrow(channels), signals=signals,
                               derived=derived.plan(catalogue, start_ns))

            def chunks_of(part: ChannelRange, **options: Any) -> Iterator[Chunk]:
                return remote.chunks(selection, part, **options)

            return local.write(local.Source(root, selection, chunks_of), out_path, start_ns,
                               end_ns, derived=derived, decimate=decimate,
                               compression=compression, export_format=export_format,
                               force=force, attrs=attrs, progress=progress, clock=clock)
        finally:
            remote.close()
