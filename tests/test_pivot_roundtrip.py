"""Property: any valid schema and records, cached as the relay caches them, come back
equal from all three exports (HDF5 through h5py and speeddata.load, CSV through the
csv module, Parquet through pyarrow), whatever the text and the names hold."""

from __future__ import annotations

import csv
import json
import math
import struct
import tempfile
from pathlib import Path
from typing import Any

import h5py
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import speeddata
from speeddata.cache.store import CacheWriter
from speeddata.pivot import pivot
from speeddata.schemas import channel_from_schema
from speeddata.sender import Encoder
from speeddata.sinks import NUL_IN_HDF5

S = 10**9
T0 = 1_795_000_000 * S
# Names the formats cannot hold, or that the exports use themselves, and their escapes.
# No control characters, quotes nor backslashes: a schema naming a field with one is no
# channel at all (fastavro's Parsing Canonical Form does not escape them, so it is not
# JSON); test_names_holding_nul_are_renamed covers those names.
ODD_NAMES = [".", "/", "a/b", "a_b", "", "receive_time", "receive_time_2", "receive_time_ns",
             "time_ns", "time_iso", "_", "_2", "..", " ", "é ,'", "/.", "a/"]
NAMES = st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                                    blacklist_characters='"\\'), max_size=4)
VALUES = {
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(width=32),
    "double": st.floats(),
    "boolean": st.booleans(),
    "string": st.text(),  # any character, NUL and line breaks included (no surrogates:
                          # Avro strings are UTF-8)
}


@st.composite
def channels_and_records(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    names = draw(st.lists(st.one_of(st.sampled_from(ODD_NAMES), NAMES),
                          min_size=1, max_size=6, unique=True))
    time_field = draw(st.sampled_from(["time", *names]))
    types = {n: draw(st.sampled_from(sorted(VALUES))) for n in names if n != time_field}
    fields = [{"name": n, "type": "long"} if n == time_field else
              {"name": n, "type": types[n], "unit": n, "doc": f"doc of {n}"} for n in names]
    if time_field == "time" and "time" not in names:
        fields.insert(0, {"name": "time", "type": "long"})
    schema = {"type": "record", "name": "rig", "abscissa": time_field, "fields": fields}
    count = draw(st.integers(1, 12))
    records = [{time_field: T0 + i, **{n: draw(VALUES[t]) for n, t in types.items()}}
               for i in range(count)]
    return schema, records


def stored(avro_type: str, value: Any) -> Any:
    """The value as the cache holds it (a float is 32 bits), NaN made comparable."""
    if avro_type == "float":
        value = struct.unpack("<f", struct.pack("<f", value))[0]
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def comparable(values: list[Any]) -> list[Any]:
    return [("NaN" if isinstance(v, float) and math.isnan(v) else v) for v in values]


def hdf5_text(raw: bytes) -> str:
    return raw.replace(NUL_IN_HDF5, b"\x00").decode("utf-8")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channels_and_records())
def test_every_value_and_name_comes_back_from_every_format(
        case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    schema, records = case
    channel = channel_from_schema(schema)
    bodies = [Encoder(channel).encode(r)[10:] for r in records]
    assert channel.check.valid_bodies(bodies).all()  # as the relay checks them
    types = {f["name"]: f["type"] for f in schema["fields"]}
    time_field = channel.time_field
    signals = [s.name for s in channel.signals]
    expected = {n: [stored(types[n], r[n]) for r in records] for n in signals}
    times = [r[time_field] for r in records]
    with tempfile.TemporaryDirectory(prefix="sd-roundtrip-") as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "out"
        writer = CacheWriter(cache, 2**30, 600)
        writer.append_block(channel, b"".join(bodies), len(bodies), T0)
        writer.close()
        results = {fmt: pivot(cache, out / f"rig-{fmt}", T0 - S, T0 + S, export_format=fmt)
                   for fmt in ("hdf5", "csv", "parquet")}

        # HDF5, with h5py alone: the 'renamed' attribute maps datasets to fields
        with h5py.File(out / "rig-hdf5") as h5:
            group = h5["rig"]
            dataset = {n: n for n in [time_field, *signals]}
            dataset.update({f: d for d, f in json.loads(group.attrs.get("renamed", "{}")).items()})
            assert sorted(group) == sorted({*dataset.values(), "receive_time"})
            assert group[dataset[time_field]][()].tolist() == times
            for name in signals:
                values = group[dataset[name]][()].tolist()
                if types[name] == "string":
                    values = [hdf5_text(v) for v in values]
                assert comparable(values) == expected[name], name
        loaded = speeddata.load(out / "rig-hdf5")["rig"]
        assert loaded.time.tolist() == times
        assert list(loaded.columns) == signals
        assert {n: comparable(v.tolist()) for n, v in loaded.columns.items()} == expected
        assert loaded.units == {n: n for n in signals}

        # CSV, with the csv module: export.json says what was renamed
        about = json.loads((out / "rig-csv" / "export.json").read_text())
        column = {n: n for n in signals}
        column.update({r["field"]: r["as"] for r in about["renamed"] if r["field"] != time_field})
        t = next((r["as"] for r in about["renamed"] if r["field"] == time_field), time_field)
        with (out / "rig-csv" / "rig.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            f.seek(0)
            assert len(next(csv.reader(f))) == 3 + len(signals)  # no column lost to a name
        assert [int(r[f"{t}_ns"]) for r in rows] == times
        assert [int(r["receive_time_ns"]) for r in rows] == [T0] * len(records)
        for name in signals:
            cells = [r[column[name]] for r in rows]
            parse = {"int": int, "long": int, "boolean": lambda c: c == "true",
                     "string": str}.get(types[name], lambda c: float(c) if c else math.nan)
            assert comparable([parse(c) for c in cells]) == expected[name], name

        # Parquet, with pyarrow: each renamed field's metadata names its field
        table = pq.read_table(out / "rig-parquet" / "rig.parquet")
        assert table.num_columns == 2 + len(signals)
        found = {}
        for f in list(table.schema)[2:]:
            meta = f.metadata or {}
            found[meta[b"field"].decode() if b"field" in meta else f.name] = f.name
        assert sorted(found) == sorted(signals)
        assert table.column(0).cast("int64").to_pylist() == times
        for name in signals:
            assert comparable(table.column(found[name]).to_pylist()) == expected[name], name

        renamed = {(r.field, fmt) for fmt, res in results.items() for r in res.renamed}
        if "receive_time" in signals:  # an export's own column: never taken by a signal
            assert {("receive_time", "hdf5"), ("receive_time", "parquet")} <= renamed
