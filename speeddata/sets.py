"""Loading a pivoted set back: ``speeddata.load("run42.h5")``.

numpy only; ``to_pandas()`` and ``to_xarray()`` work where those libraries are installed
(they stay optional: a Raspberry Pi needs neither).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from speeddata.errors import SpeeddataError
from speeddata.pivot import FORMAT_HOLDS, NUL_IN_HDF5


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

        return pd.DataFrame(self.columns, index=pd.DatetimeIndex(self.datetimes, name="time"))

    def to_xarray(self) -> Any:
        """An xarray Dataset indexed by time, units in each variable's attrs (needs xarray)."""
        xr = _optional("xarray", "xarray")

        return xr.Dataset(
            {name: ("time", values, {"unit": self.units[name], "doc": self.docs[name]})
             for name, values in self.columns.items()},
            coords={"time": self.datetimes},
        )


def _optional(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise SpeeddataError(f"{module} is not installed: pip install 'speeddata[{extra}]'"
                             ) from None


@dataclass
class SetData:
    """A pivoted set: every channel of one HDF5 file, and its attributes."""

    path: Path
    attrs: dict[str, Any]
    channels: dict[str, ChannelData] = field(default_factory=dict)

    def __getitem__(self, channel: str) -> ChannelData:
        return self.channels[channel]

    @property
    def tag(self) -> str:
        return str(self.attrs.get("tag", ""))

    def to_xarray(self) -> dict[str, Any]:
        return {name: channel.to_xarray() for name, channel in self.channels.items()}


def _text(value: Any) -> Any:
    """An HDF5 text value as written (see ``speeddata.pivot.NUL_IN_HDF5``): bytes, or a
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
    path = Path(path)
    with h5py.File(path, "r") as h5:
        data = SetData(path, {k: _text(v) for k, v in h5.attrs.items()
                                   if k not in ("renamed", "nul")})
        for name, group in h5.items():
            schema = json.loads(group.attrs["schema"])
            time_field = schema.get("abscissa", "time")
            dataset_of = {f: f for f in [time_field, *(f["name"] for f in schema["fields"])]
                          if FORMAT_HOLDS["hdf5"](f)}  # the others were renamed
            dataset_of.update({field: ds for ds, field in
                               json.loads(group.attrs.get("renamed", "{}")).items()})
            columns, units, docs, expressions = {}, {}, {}, {}
            order = [f["name"] for f in schema["fields"]
                     if f["name"] in dataset_of and dataset_of[f["name"]] in group]
            for key in order:  # the schema's order, not HDF5's alphabetical one
                if key == time_field:
                    continue
                ds = group[dataset_of[key]]
                columns[key] = _strings(ds) if h5py.check_string_dtype(ds.dtype) else ds[()]
                units[key] = _text(ds.attrs.get("unit", ""))
                docs[key] = _text(ds.attrs.get("doc", ""))
                if "expression" in ds.attrs:
                    expressions[key] = _text(ds.attrs["expression"])
            data.channels[name] = ChannelData(
                name, group[dataset_of[time_field]][()], group["receive_time"][()], columns,
                units, docs, schema, expressions)
    return data
