"""A set of channels as numpy columns: a pivoted file loaded back
(``speeddata.load("run42.h5")``), or a range queried from the cache (``speeddata.query``).

numpy only; ``to_pandas()``, ``to_xarray()``, ``to_arrow()`` and ``to_polars()`` work
where those libraries are installed (they stay optional: a Raspberry Pi needs none).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from speeddata.errors import SpeeddataError
from speeddata.sinks import FORMAT_HOLDS, NUL_IN_HDF5, column_names

if TYPE_CHECKING:
    import h5py


@dataclass
class ChannelData:
    """One channel of a set: its time axis and a numpy column per signal."""

    name: str
    time: np.ndarray  # int64 ns since the epoch (source clock)
    receive_time: np.ndarray  # int64 ns (relay clock)
    columns: dict[str, np.ndarray]
    units: dict[str, str]
    docs: dict[str, str]
    schema: dict[str, Any]
    time_field: str = "time"
    avro_types: dict[str, str] = field(default_factory=dict)
    expressions: dict[str, str] = field(default_factory=dict)  # a derived channel's

    def __getitem__(self, signal: str) -> np.ndarray:
        return self.columns[signal]

    def __len__(self) -> int:
        return len(self.time)

    @property
    def datetimes(self) -> np.ndarray:
        return self.time.astype("datetime64[ns]")

    def to_pandas(self) -> Any:
        """A DataFrame indexed by time (needs pandas)."""
        pd = _optional("pandas", "pandas")

        index = pd.DatetimeIndex(self.datetimes, name="time")
        block = _block_of(list(self.columns.values()))
        if block is not None:  # the columns are the rows of one array: pandas shares it
            return pd.DataFrame(block.T, columns=list(self.columns), index=index, copy=False)
        return pd.DataFrame(self.columns, index=index)

    def to_xarray(self) -> Any:
        """An xarray Dataset indexed by time, units in each variable's attrs (needs xarray)."""
        xr = _optional("xarray", "xarray")

        return xr.Dataset(
            {name: ("time", values, {"unit": self.units[name], "doc": self.docs[name]})
             for name, values in self.columns.items()},
            coords={"time": self.datetimes},
        )

    def to_arrow(self) -> Any:
        """A pyarrow Table: the time field and ``receive_time`` as UTC timestamps, then a
        column per signal with its unit and doc; named as in a Parquet export."""
        from speeddata.tables import arrow_schema, pyarrow, record_batch

        names = column_names("parquet", self.time_field, list(self.columns))
        fields = []
        for name, values in self.columns.items():
            about = {"unit": self.units.get(name, ""), "doc": self.docs.get(name, ""),
                     "avro_type": self.avro_types.get(name, "")}
            if self.expressions.get(name):  # a derived signal's, as a Parquet export has it
                about["expression"] = self.expressions[name]
            if names[name] != name:
                about["field"] = name
            fields.append((names[name], values.dtype, about))
        schema = arrow_schema(names[self.time_field], fields, [self.schema],
                              {n: f for f, n in names.items() if f != n})
        batch = record_batch(schema, self.time, self.receive_time, list(self.columns.values()))
        return pyarrow().Table.from_batches([batch])

    def to_polars(self) -> Any:
        """A Polars DataFrame, from ``to_arrow()`` (needs polars)."""
        pl = _optional("polars", "polars")

        return pl.from_arrow(self.to_arrow())


def _block_of(columns: list[np.ndarray]) -> np.ndarray | None:
    """The 2-D float64 array whose rows are ``columns`` in order (as a query reads
    them), or None."""
    base = columns[0].base if columns else None
    if not (isinstance(base, np.ndarray) and base.ndim == 2 and base.dtype == np.float64
            and base.flags.c_contiguous and base.shape[0] == len(columns)):
        return None
    same = all(c.base is base and c.dtype == np.float64 and np.shares_memory(c, base[j])
               and c.shape == base[j].shape for j, c in enumerate(columns))
    return base if same else None


def _optional(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise SpeeddataError(f"{module} is not installed: pip install 'speeddata[{extra}]'"
                             ) from None


@dataclass
class SetData:
    """A set: every channel of one pivoted HDF5 file or of one query, and its
    attributes (``path`` is the file's; None for a query)."""

    path: Path | None
    attrs: dict[str, Any]
    channels: dict[str, ChannelData] = field(default_factory=dict)

    def __getitem__(self, channel: str) -> ChannelData:
        return self.channels[channel]

    @property
    def tag(self) -> str:
        return str(self.attrs.get("tag", ""))

    def to_xarray(self) -> dict[str, Any]:
        """Channel name -> xarray Dataset."""
        return {name: channel.to_xarray() for name, channel in self.channels.items()}

    def to_pandas(self) -> dict[str, Any]:
        """Channel name -> pandas DataFrame indexed by time."""
        return {name: channel.to_pandas() for name, channel in self.channels.items()}

    def to_arrow(self) -> dict[str, Any]:
        """Channel name -> pyarrow Table."""
        return {name: channel.to_arrow() for name, channel in self.channels.items()}

    def to_polars(self) -> dict[str, Any]:
        """Channel name -> Polars DataFrame."""
        return {name: channel.to_polars() for name, channel in self.channels.items()}


def _text(value: Any) -> Any:
    """An HDF5 text value as written (see ``speeddata.sinks.NUL_IN_HDF5``): bytes, or a
    str that h5py gave with the bytes it could not decode as surrogates."""
    if isinstance(value, str):
        if not any("\udc80" <= c <= "\udcff" for c in value):
            return value
        value = value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytes):
        return value.replace(NUL_IN_HDF5, b"\x00").decode("utf-8")
    return value


def _strings(ds: h5py.Dataset) -> np.ndarray:
    if "nul" not in ds.attrs:
        return ds.asstr()[()].astype(object)
    return np.array([_text(v) for v in ds[()].tolist()], dtype=object)


def load(path: str | Path) -> SetData:
    """Read a file written by ``speeddata pivot`` into numpy arrays, under the fields' own
    names (the export renames those HDF5 cannot hold, and says so in each group's
    ``renamed`` attribute)."""
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as h5:
        data = SetData(path, {k: _text(v) for k, v in h5.attrs.items()
                                   if k not in ("renamed", "nul")})
        for name, group in h5.items():
            schema = json.loads(group.attrs["schema"])
            # every version's fields, oldest first, as the pivot merged them (a field
            # an edit removed is still a dataset, NaN or "" where it was absent)
            versions = json.loads(group.attrs["schemas"]) if "schemas" in group.attrs else [
                schema]
            time_field = versions[0].get("abscissa", "time")
            fields = list(dict.fromkeys(f["name"] for v in versions for f in v["fields"]))
            dataset_of = {f: f for f in [time_field, *fields]
                          if FORMAT_HOLDS["hdf5"](f)}  # the others were renamed
            dataset_of.update({field: ds for ds, field in
                               json.loads(group.attrs.get("renamed", "{}")).items()})
            columns, units, docs, avro_types, expressions = {}, {}, {}, {}, {}
            order = [f for f in fields if f in dataset_of and dataset_of[f] in group]
            for key in order:  # the schema's order, not HDF5's alphabetical one
                if key == time_field:
                    continue
                ds = group[dataset_of[key]]
                columns[key] = _strings(ds) if h5py.check_string_dtype(ds.dtype) else ds[()]
                units[key] = _text(ds.attrs.get("unit", ""))
                docs[key] = _text(ds.attrs.get("doc", ""))
                avro_types[key] = _text(ds.attrs.get("avro_type", ""))
                if "expression" in ds.attrs:
                    expressions[key] = _text(ds.attrs["expression"])
            data.channels[name] = ChannelData(
                name, group[dataset_of[time_field]][()], group["receive_time"][()], columns,
                units, docs, schema, time_field, avro_types, expressions)
    return data
