"""Pivot: turn a receive-time range of the cache into one HDF5 file.

One group per channel, one dataset per signal, the channel's ``time`` attached to each
as an HDF5 dimension scale (xarray with h5netcdf reads a group as a Dataset indexed by
time). Blocks are chosen with the cache's time index only, so the cost follows the
range, not the size of the cache. Records are decoded into numpy columns and appended
in chunks, so memory stays bounded. The file appears under its name only when complete.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speeddata import __version__, status
from speeddata.cache.catalogue import Catalogue
from speeddata.cache.check import BlockReader, Skipped
from speeddata.cache.clocks import MODES as CLOCK_MODES
from speeddata.cache.clocks import ClockAxis
from speeddata.derived import export as derived_export
from speeddata.readout import CHUNK_RECORDS, ChunksOf, Selection, read, select
from speeddata.schemas import Registry
from speeddata.sinks import (
    FORMATS,
    DirectorySink,
    ExportExists,
    Hdf5Sink,
    PivotError,
    Renamed,
    check_replaceable,
)
from speeddata.times import format_time

# h5py is imported where an HDF5 file is written (sinks): CSV and Parquet exports, the
# server and replay use this module without it

log = logging.getLogger("speeddata.pivot")


@dataclass
class Result:
    path: Path
    records: int
    bytes_read: int
    seconds: float
    channels: dict[str, int]
    skipped: Skipped = field(default_factory=Skipped)  # damaged cache blocks left out
    renamed: list[Renamed] = field(default_factory=list)  # names the export could not hold


def remove_stale_files(folder: Path) -> list[Path]:
    """Delete half-written exports (``.NAME.PID.tmp``) of pivots that were killed: their
    process is gone. A pivot still running keeps its file."""
    removed = []
    for tmp in folder.glob(".*.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not status.alive(int(pid)):
            _remove(tmp)
            removed.append(tmp)
            log.info("removed %s, left by a pivot that was killed", tmp)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def pivot(
    cache_dir: Path,
    out_path: Path,
    start_ns: int,
    end_ns: int,
    *,
    registry: Registry | None = None,
    channels: list[str] | None = None,
    signals: list[str] | None = None,
    decimate: int = 1,
    compression: str | None = "gzip",
    export_format: str = "hdf5",
    force: bool = False,
    attrs: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    channels_dir: Path | None = None,
    clock: str = "source",
) -> Result:
    """Write ``out_path`` from the cache's ``[start_ns, end_ns]`` (receive clock).

    ``signals`` names ``signal`` or ``channel.signal``; ``progress(done, total)`` is called
    with record counts as blocks are read; ``clock``: the time axis written (``source``,
    ``receive`` or ``corrected``: ``cache.clocks.ClockAxis``). ``channels_dir``: its derived
    channels are computed and written too (all of them, or those ``channels`` names).
    """
    started = time.monotonic()
    check_request(out_path, decimate, clock, export_format, force)
    catalogue = Catalogue(cache_dir)
    derived = derived_export.select(channels_dir, registry, channels, catalogue.channels())
    selection = select(cache_dir, start_ns, end_ns, registry=registry,
                       channels=derived.narrow(channels), signals=signals,
                       derived=derived.plan(catalogue, start_ns))
    return write(Source(cache_dir, selection), out_path, start_ns, end_ns, derived=derived,
                 decimate=decimate, compression=compression, export_format=export_format,
                 force=force, attrs=attrs, progress=progress, clock=clock, started=started)


@dataclass
class Source:
    """What a pivot writes, however it is read: a selection planned over ``cache_dir``
    (the local cache, or the Dask path's headers and indexes), its chunks read by
    ``chunks_of`` (None: from that cache; ``readout.streams``)."""

    cache_dir: Path
    selection: Selection
    chunks_of: ChunksOf | None = None
    close: Callable[[], None] = lambda: None


def check_request(out_path: Path, decimate: int, clock: str, export_format: str,
                  force: bool) -> None:
    """The arguments of a pivot checked before anything is read."""
    if decimate < 1:
        raise PivotError(f"--decimate must be 1 or more, not {decimate}")
    if clock not in CLOCK_MODES:
        raise PivotError(f"--clock {clock!r}: use one of {', '.join(CLOCK_MODES)}")
    if export_format not in FORMATS:
        raise PivotError(f"format {export_format!r}: use one of {', '.join(FORMATS)}")
    if out_path.exists():
        if not force:
            raise ExportExists(f"{out_path} exists already: choose another --out or add "
                               "--force")
        check_replaceable(out_path, export_format)


def write(source: Source, out_path: Path, start_ns: int, end_ns: int, *,
          derived: derived_export.Chosen, decimate: int, compression: str | None,
          export_format: str, force: bool, attrs: dict[str, Any] | None,
          progress: Callable[[int, int], None] | None, clock: str,
          started: float | None = None) -> Result:
    """``source`` written to ``out_path`` (whole or not at all), derived channels computed
    as their inputs are read; see ``pivot``. ``started``: when the pivot began (its
    ``seconds`` count from there; default now)."""
    started = time.monotonic() if started is None else started
    selection, cache_dir = source.selection, source.cache_dir
    reader = selection.reader
    total = selection.records
    out_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_files(out_path.parent)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    done = 0
    per_channel: dict[str, int] = {}

    def read_some(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    attrs = {"start": format_time(start_ns), "end": format_time(end_ns),
             "start_ns": start_ns, "end_ns": end_ns,
             "created": format_time(time.time_ns()), "speeddata_version": __version__,
             "host": socket.gethostname(), "clock": clock, **(attrs or {})}
    try:
        sink = (Hdf5Sink(tmp, attrs, compression) if export_format == "hdf5"
                else DirectorySink(tmp, attrs, export_format, compression))
        try:
            writers, axes = {}, {}
            for part in selection.channels:  # derived channels: their driver's host, clock
                driver = derived.roots.get(part.name, part.name)
                writers[part.name] = sink.channel(part.name, part.time_field, part.columns,
                                                  part.schemas,
                                                  host_of(reader, part.blocks[0][0].path))
                axes[part.name] = ClockAxis.load(cache_dir, driver, start_ns, end_ns, clock)
            # one pass: derived channels computed as their inputs are read
            for part, chunk in read(selection, rows=CHUNK_RECORDS, decimate=decimate,
                                    progress=read_some, chunks_of=source.chunks_of):
                times = chunk.columns[part.time_field]
                chunk.columns[part.time_field] = axes[part.name].apply(times, chunk.receive)
                writers[part.name].append(chunk.columns, chunk.receive)
            for name, writer in writers.items():
                sink.finish(writer)
                axes[name].annotate(writer)
                per_channel[name] = writer.count
            _note_skipped(sink, reader.skipped, cache_dir)
        finally:
            sink.close()
            reader.close()
            source.close()
        for renamed in sink.renamed:
            log.warning("%s: %s in %s (the export says so in its 'renamed' metadata)",
                        out_path.name, renamed, export_format)
        if force and out_path.exists():
            _remove(out_path)
        os.replace(tmp, out_path)
    except OSError as exc:
        _remove(tmp)
        if exc.errno == errno.ENOSPC or "No space" in str(exc):
            raise PivotError(f"disk full while writing {out_path}: free space or choose "
                             "another --out; nothing was left behind") from None
        raise
    except BaseException:  # Ctrl-C, or any failure: never leave half a file
        _remove(tmp)
        raise
    return Result(out_path, done, selection.bytes, time.monotonic() - started, per_channel,
                  reader.skipped, sink.renamed)


def _note_skipped(sink: Any, skipped: Skipped, cache_dir: Path) -> None:
    """The export says what it lacks: ``skipped``, a JSON list of the damaged cache
    ranges left out (file under the cache, byte range, reason, records when known)."""
    listing = json.dumps(skipped.as_list(cache_dir))
    if isinstance(sink, Hdf5Sink):
        sink.h5.attrs["skipped"] = listing
        sink.h5.attrs["skipped_records"] = skipped.records
    else:
        sink.attrs = {**sink.attrs, "skipped": skipped.as_list(cache_dir),
                      "skipped_records": skipped.records}


def host_of(reader: BlockReader, path: Path) -> str:
    """The relay host a cache file says it was written on."""
    found = reader.header(path)
    return found[1].metadata.get("speeddata.host", b"").decode(errors="replace") if found else ""
