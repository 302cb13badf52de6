"""The export writers: a channel's chunks into an HDF5 group, a CSV file or a Parquet file,
the names the formats can hold, and what may be replaced (a pivot's own files only)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from speeddata.errors import ConflictError
from speeddata.readout import CHUNK_RECORDS, TEXT, Column, ReadError
from speeddata.tables import channel_schema, record_batch
from speeddata.times import format_time

# h5py is imported where an HDF5 file is written: CSV and Parquet exports, the server
# and replay use this module without it
if TYPE_CHECKING:
    import h5py

log = logging.getLogger("speeddata.pivot")

TIME_UNITS = "nanoseconds since 1970-01-01"  # CF units: xarray decodes it to datetime64


class PivotError(ReadError):
    """A pivot that cannot be done: the message says why and what to do."""


class ExportExists(PivotError, ConflictError):
    """The export file exists and --force was not given."""


NUL_IN_HDF5 = b"\xc0\x80"
"""How a NUL character is stored in HDF5 text. HDF5 variable-length strings end at a NUL,
so a string holding one is stored as its UTF-8 bytes with each NUL written as C0 80, as
Java's "modified UTF-8" does: never part of valid UTF-8, so unambiguous, and every
string without a NUL is stored unchanged. Such a dataset (or attribute) says so in its
``nul`` attribute; ``speeddata.load`` gives back the exact strings."""


def hdf5_text(value: str) -> str | bytes:
    """``value`` as HDF5 can hold it: unchanged, or its bytes with NUL as C0 80."""
    return value.encode("utf-8").replace(b"\x00", NUL_IN_HDF5) if "\x00" in value else value


def _hdf5_column(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """A text column as HDF5 can hold it, and whether a NUL had to be escaped."""
    if "\x00" not in "".join(values.tolist()):  # one scan in C: the usual case
        return values, False
    return np.array([hdf5_text(v) for v in values.tolist()], dtype=object), True


def _set_text(attrs: h5py.AttributeManager, key: str, value: str | list[str]) -> None:
    """A text attribute, with NUL stored as C0 80 (the attribute ``nul`` then says so)."""
    values = [value] if isinstance(value, str) else value
    if not any("\x00" in v for v in values):
        attrs[key] = value
        return
    encoded = [hdf5_text(v) for v in values]
    attrs.create(key, encoded[0] if isinstance(value, str) else encoded,
                 dtype=TEXT)
    attrs["nul"] = "C0 80"


# What each format cannot hold as a column or file name. Every format: the empty name
# (pandas, DuckDB and HDFView cannot address it); HDF5: "/" (its path separator), NUL
# and "."; CSV: NUL (many CSV readers stop at it). Parquet holds any other name.
def _hdf5_holds(name: str) -> bool:
    return name not in ("", ".") and "/" not in name and "\x00" not in name


FORMAT_HOLDS: dict[str, Callable[[str], bool]] = {
    "hdf5": _hdf5_holds,
    "csv": lambda name: name != "" and "\x00" not in name,
    "parquet": lambda name: name != "",
}


def export_names(names: list[str], reserved: set[str], holds: Callable[[str], bool]
                 ) -> dict[str, str]:
    """Each of ``names`` (distinct) -> its name in an export: itself when the format
    holds it and it is none of the export's own columns (``reserved``); else with each
    character the format cannot hold as "_" (an empty or "." name becomes "_"), and
    "_2", "_3"... added until it is unique. A name that needs no change keeps it."""
    taken = set(reserved) | {n for n in names if holds(n) and n not in reserved}
    result = {}
    for name in names:
        if holds(name) and name not in reserved:
            result[name] = name
            continue
        base = name.replace("/", "_").replace("\x00", "_")
        base = "_" if base in ("", ".") else base
        candidate, k = base, 2
        while candidate in taken or not holds(candidate):
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate)
        result[name] = candidate
    return result


def column_names(export_format: str, time_field: str, signals: list[str]) -> dict[str, str]:
    """The names of a channel's time field and signals in an export of ``export_format``:
    never one of the columns the export adds itself (``receive_time``; in CSV
    ``receive_time_ns`` and the time's ``_iso`` and ``_ns`` columns)."""
    holds = FORMAT_HOLDS[export_format]
    time_name = export_names([time_field], {"receive_time"}, holds)[time_field]
    own = ({f"{time_name}_iso", f"{time_name}_ns", "receive_time_ns"}
           if export_format == "csv" else {time_name, "receive_time"})
    names = export_names([s for s in signals if s != time_field], own, holds)
    return {time_field: time_name, **names}


@dataclass(frozen=True)
class Renamed:
    """A field whose name the export could not hold, and the name it has there."""

    channel: str
    field: str
    name: str

    def as_json(self) -> dict[str, str]:
        return {"channel": self.channel, "field": self.field, "as": self.name}

    def __str__(self) -> str:
        return f"field {self.field!r} of channel {self.channel!r} is named {self.name!r}"


class _GroupWriter:
    """Appends columns of one channel to its HDF5 group; ``names`` maps each field to its
    dataset's name (see ``column_names``)."""

    def __init__(self, group: h5py.Group, time_field: str, columns: list[Column],
                 names: dict[str, str], compression: str | None) -> None:
        self.group = group
        self.time_field = time_field
        self.columns = columns
        self.count = 0
        opts: dict[str, Any] = {"chunks": (CHUNK_RECORDS,), "maxshape": (None,)}
        if compression == "gzip":
            opts.update(compression="gzip", compression_opts=4, shuffle=True)
        elif compression == "lzf":
            opts.update(compression="lzf", shuffle=True)
        time_name = names[time_field]
        self.time = group.create_dataset(time_name, shape=(0,), dtype=np.int64, **opts)
        self.time.attrs["units"] = TIME_UNITS
        self.time.attrs["calendar"] = "proleptic_gregorian"
        self.time.attrs["doc"] = "sample time from the source (ns since the Unix epoch)"
        self.time.make_scale(time_name)
        self.datasets: dict[str, h5py.Dataset] = {}
        for column in columns:
            ds = group.create_dataset(names[column.name], shape=(0,), dtype=column.dtype,
                                      **opts)
            _set_text(ds.attrs, "unit", column.unit)
            _set_text(ds.attrs, "doc", column.doc)
            _set_text(ds.attrs, "avro_type", column.avro_type)
            if column.symbols:
                _set_text(ds.attrs, "symbols", list(column.symbols))
            if column.expression:
                _set_text(ds.attrs, "expression", column.expression)
            ds.dims[0].attach_scale(self.time)
            self.datasets[column.name] = ds
        self.receive = group.create_dataset("receive_time", shape=(0,), dtype=np.int64, **opts)
        self.receive.attrs["units"] = TIME_UNITS
        self.receive.attrs["doc"] = "when the relay received the record's batch (ns)"
        self.receive.dims[0].attach_scale(self.time)

    def append(self, columns: dict[str, np.ndarray], receive_ns: np.ndarray) -> None:
        n = len(receive_ns)
        if not n:
            return
        end = self.count + n
        for ds, values in ((self.time, columns[self.time_field]),
                           (self.receive, receive_ns),
                           *((self.datasets[c.name], columns[c.name]) for c in self.columns)):
            if values.dtype == object:
                values, escaped = _hdf5_column(values)
                if escaped and "nul" not in ds.attrs:
                    ds.attrs["nul"] = "C0 80"
            ds.resize((end,))
            ds[self.count : end] = values
        self.count = end


FORMATS = ("hdf5", "csv", "parquet")
SUFFIXES = {"hdf5": ".h5", "csv": "", "parquet": ""}  # csv and parquet: a directory


class _Sink:
    """What every export does with names: each field's name in the export
    (``column_names``), and a list of what had to be renamed. A channel keeps its name:
    it is the name of a cache directory, which no format refuses as a group or a file."""

    kind = "hdf5"

    def __init__(self) -> None:
        self.renamed: list[Renamed] = []

    def names(self, channel: str, time_field: str, columns: list[Column]) -> dict[str, str]:
        fields = column_names(self.kind, time_field, [c.name for c in columns])
        self.renamed += [Renamed(channel, f, n) for f, n in fields.items() if f != n]
        return fields

    def renamed_in(self, channel: str) -> dict[str, str]:
        """Export name -> original field name, for the fields of ``channel`` renamed."""
        return {r.name: r.field for r in self.renamed if r.channel == channel}


class Hdf5Sink(_Sink):
    """One HDF5 file: a group per channel, a dataset per signal."""

    def __init__(self, tmp: Path, attrs: dict[str, Any], compression: str | None) -> None:
        super().__init__()
        import h5py

        self.h5 = h5py.File(tmp, "w", libver="latest")
        for key, value in attrs.items():
            if isinstance(value, str):
                _set_text(self.h5.attrs, key, value)
            else:
                self.h5.attrs[key] = value
        self.compression = compression

    def channel(self, name: str, time_field: str, columns: list[Column],
                schemas: list[dict], relay_host: str) -> _GroupWriter:
        names = self.names(name, time_field, columns)
        group = self.h5.create_group(name)
        group.attrs["schema"] = json.dumps(schemas[-1])
        if len(schemas) > 1:  # every version, oldest first
            group.attrs["schemas"] = json.dumps(schemas)
        renamed = self.renamed_in(name)
        if renamed:  # JSON {dataset: field}: a field's name may hold a NUL
            group.attrs["renamed"] = json.dumps(renamed)
        _set_text(group.attrs, "relay_host", relay_host)
        return _GroupWriter(group, time_field, columns, names, self.compression)

    def finish(self, writer: _GroupWriter) -> None:
        times = writer.time
        writer.group.attrs["count"] = writer.count
        writer.group.attrs["first_time"] = format_time(int(times[0])) if writer.count else ""
        writer.group.attrs["last_time"] = format_time(int(times[-1])) if writer.count else ""

    def close(self) -> None:
        if self.renamed:
            self.h5.attrs["renamed"] = json.dumps([r.as_json() for r in self.renamed])
        self.h5.close()


class _CsvWriter:
    """``<channel>.csv``: an ISO 8601 time (UTC, ns), the ns time, the receive time, then
    one column per signal (a missing number is empty). Text is written as it is, NUL
    and line breaks included (quoted where needed)."""

    def __init__(self, path: Path, time_field: str, columns: list[Column],
                 names: dict[str, str]) -> None:
        import csv

        self.file = path.open("w", newline="", encoding="utf-8")
        self.csv = csv.writer(self.file)
        self.time_field = time_field
        self.columns = columns
        self.count = 0
        t = names[time_field]
        self.csv.writerow([f"{t}_iso", f"{t}_ns", "receive_time_ns",
                           *(names[c.name] for c in columns)])

    def append(self, columns: dict[str, np.ndarray], receive_ns: np.ndarray) -> None:
        times = columns[self.time_field]
        iso = [f"{t}Z" for t in np.datetime_as_string(times.astype("datetime64[ns]"), unit="ns")]
        cells = [iso, times.tolist(), receive_ns.tolist()]
        for c in self.columns:
            values = columns[c.name]
            if values.dtype.kind == "f":
                cells.append(["" if v != v else repr(v) for v in values.tolist()])
            elif values.dtype.kind == "b":
                cells.append(["true" if v else "false" for v in values.tolist()])
            else:
                cells.append(values.tolist())
        self.csv.writerows(zip(*cells, strict=True))
        self.count += len(receive_ns)


class _ParquetWriter:
    """``<channel>.parquet`` (pyarrow): the ns time, the receive time and one column per
    signal; units and docs in each field's metadata (and ``field``, the original name,
    where it was renamed), the schemas in the file's."""

    def __init__(self, path: Path, time_field: str, columns: list[Column],
                 names: dict[str, str], schemas: list[dict], compression: str | None) -> None:
        try:
            import pyarrow.parquet as pq
        except ModuleNotFoundError:
            raise PivotError("Parquet needs pyarrow: pip install 'speeddata[parquet]'"
                             ) from None
        self.schema = channel_schema(time_field, columns, names, schemas)
        self.writer = pq.ParquetWriter(path, self.schema, compression=compression or "none")
        self.time_field = time_field
        self.columns = columns
        self.count = 0

    def append(self, columns: dict[str, np.ndarray], receive_ns: np.ndarray) -> None:
        self.writer.write_batch(record_batch(self.schema, columns[self.time_field], receive_ns,
                                             [columns[c.name] for c in self.columns]))
        self.count += len(receive_ns)


class DirectorySink(_Sink):
    """A directory with one file per channel (CSV or Parquet) and ``export.json`` saying
    what it holds (range, tag, note, host, versions, files, what was renamed)."""

    def __init__(self, tmp: Path, attrs: dict[str, Any], kind: str,
                 compression: str | None) -> None:
        super().__init__()
        tmp.mkdir()
        self.tmp = tmp
        self.attrs = attrs
        self.kind = kind
        self.compression = {"gzip": "gzip", "lzf": "snappy"}.get(compression or "")
        self.channels: dict[str, dict[str, Any]] = {}

    def channel(self, name: str, time_field: str, columns: list[Column],
                schemas: list[dict], relay_host: str) -> _CsvWriter | _ParquetWriter:
        names = self.names(name, time_field, columns)
        path = self.tmp / f"{name}.{self.kind}"
        self.channels[name] = {"relay_host": relay_host, "schemas": schemas,
                               "file": path.name}
        if self.kind == "csv":
            return _CsvWriter(path, time_field, columns, names)
        return _ParquetWriter(path, time_field, columns, names, schemas, self.compression)

    def finish(self, writer: _CsvWriter | _ParquetWriter) -> None:
        (writer.file if isinstance(writer, _CsvWriter) else writer.writer).close()

    def close(self) -> None:
        (self.tmp / "export.json").write_text(json.dumps(
            {**{k: (v.item() if hasattr(v, "item") else v) for k, v in self.attrs.items()},
             "format": self.kind, "channels": self.channels,
             "renamed": [r.as_json() for r in self.renamed]}, indent=1))


def check_replaceable(path: Path, export_format: str) -> None:
    """Refuse to let ``--force`` delete anything but an export of the same format: an
    HDF5 file for hdf5; for csv and parquet, a directory holding an ``export.json`` of
    that format and only the files it lists. Another format's export, or a folder
    speeddata did not write, is never deleted."""
    if export_format == "hdf5":
        if path.is_dir() or (path.is_file() and path.open("rb").read(8) != HDF5_SIGNATURE):
            raise ExportExists(f"{path} exists and is not an HDF5 file: --force replaces "
                               "only an export; choose another --out")
        return
    about = path / "export.json"
    try:
        made = json.loads(about.read_text(encoding="utf-8"))
        kind = made["format"]
        files = {about.name, *(c.get("file", f"{n}.{kind}") for n, c in made["channels"].items())}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ExportExists(f"{path} exists and is not a speeddata export (no readable "
                           "export.json): --force deletes only an export; choose another "
                           "--out") from None
    if kind != export_format:
        raise ExportExists(f"{path} holds a {kind} export: --force replaces only a "
                           f"{export_format} one; choose another --out (e.g. "
                           f"--out {path.parent / export_format})")
    others = sorted(p.name for p in path.iterdir() if p.name not in files)
    if others:
        raise ExportExists(f"{path} holds files the export did not write "
                           f"({', '.join(others[:5])}): --force would delete them; move "
                           "them or choose another --out")


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
