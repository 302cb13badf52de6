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
from typing import TYPE_CHECKING, Any

from speeddata import __version__, status
from speeddata.cache.catalogue import Catalogue
from speeddata.cache.check import BlockReader, Skipped
from speeddata.cache.clocks import MODES as CLOCK_MODES
from speeddata.cache.clocks import ClockAxis
from speeddata.derived import export as derived_export
from speeddata.readout import CHUNK_RECORDS, read, select
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

# h5py is imported where an HDF5 file is written: CSV and Parquet exports, the server
# and replay use this module without it
if TYPE_CHECKING:
    pass

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
    catalogue = Catalogue(cache_dir)
    derived = derived_export.select(channels_dir, registry, channels, catalogue.channels())
    channels = derived.narrow(channels)
    selection = select(cache_dir, start_ns, end_ns, registry=registry, channels=channels,
                       signals=signals,
                       derived=derived.plan(catalogue, start_ns))
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
                source = derived.roots.get(part.name, part.name)
                writers[part.name] = sink.channel(part.name, part.time_field, part.columns,
                                                  part.schemas,
                                                  _host_of(reader, part.blocks[0][0].path))
                axes[part.name] = ClockAxis.load(cache_dir, source, start_ns, end_ns, clock)
            # one pass: derived channels computed as their inputs are read
            for part, chunk in read(selection, rows=CHUNK_RECORDS, decimate=decimate,
                                    progress=read_some):
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


def _host_of(reader: BlockReader, path: Path) -> str:
    found = reader.header(path)
    return found[1].metadata.get("speeddata.host", b"").decode(errors="replace") if found else ""
