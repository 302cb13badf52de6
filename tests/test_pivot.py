"""Pivot from a cache written with known receive times, read back with h5py and xarray."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray

import speeddata
from speeddata.cache.catalogue import Catalogue, plan
from speeddata.cache.store import CacheWriter
from speeddata.pivot import PivotError, pivot
from speeddata.readout import ReadError
from speeddata.schemas import Channel, Registry, channel_from_schema
from speeddata.sender import Encoder
from tests.helpers import SCHEMAS

S = 10**9
T0 = 1_795_000_000 * S
REGISTRY, _ = Registry.load_dir(SCHEMAS)


def fill(cache: Path, seconds: int = 60, per_second: int = 10, rotate: int = 2**30) -> None:
    """Motor at ``per_second`` records a second, env at 1 Hz, one batch a second."""
    writer = CacheWriter(cache, rotate, 600)
    motor, env = Encoder(REGISTRY["motor"]), Encoder(REGISTRY["env"])
    for s in range(seconds):
        recv = T0 + s * S
        writer.append(REGISTRY["motor"], [motor.encode({
            "time": recv + i, "speed": float(s * per_second + i), "torque": -1.0,
            "current": 0.5, "voltage": 48.0, "position": float(i), "temperature": 20.0})[10:]
            for i in range(per_second)], recv)
        writer.append(REGISTRY["env"], [env.encode({
            "time": recv, "humidity": 40.0 + s, "pressure": 1000.0,
            "state": ["IDLE", "RUNNING", "FAULT"][s % 3], "message": f"second {s}"})[10:]], recv)
    writer.close()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    fill(tmp_path / "cache")
    return tmp_path / "cache"


def test_pivot_writes_exactly_the_range(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "run.h5"
    result = pivot(cache, out, T0 + 10 * S, T0 + 19 * S, registry=REGISTRY,
                   attrs={"tag": "run", "note": "ten seconds"})
    assert result.channels == {"env": 10, "motor": 100}
    with h5py.File(out) as h5:
        assert h5.attrs["tag"] == "run" and h5.attrs["note"] == "ten seconds"
        assert h5.attrs["speeddata_version"] == speeddata.__version__
        motor = h5["motor"]
        assert motor["speed"][()].tolist() == [float(v) for v in range(100, 200)]
        assert motor["time"][0] == T0 + 10 * S
        assert motor["speed"].attrs["unit"] == "rpm"
        assert motor["speed"].dims[0][0] == motor["time"]  # time is its dimension scale
        assert motor["speed"].compression == "gzip" and motor["speed"].chunks
        assert motor.attrs["count"] == 100
        assert '"name": "motor"' in motor.attrs["schema"]
        env = h5["env"]
        assert env["state"].asstr()[()].tolist() == [["IDLE", "RUNNING", "FAULT"][s % 3]
                                                      for s in range(10, 20)]
        assert env["message"].asstr()[0] == "second 10"


def test_xarray_opens_each_group_indexed_by_time(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.h5"
    pivot(cache, out, T0, T0 + 5 * S, registry=REGISTRY)
    ds = xarray.open_dataset(out, group="motor", engine="h5netcdf")
    assert ds["speed"].dims == ("time",)
    assert ds["time"].dtype.kind == "M"  # datetime64, from the CF units attribute
    assert float(ds["speed"][-1]) == 59.0
    assert ds["speed"].attrs["unit"] == "rpm"
    ds.close()


def test_load_gives_channels_columns_units_and_conversions(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "l.h5"
    pivot(cache, out, T0, T0 + 2 * S, registry=REGISTRY, attrs={"tag": "t"})
    data = speeddata.load(out)
    assert data.tag == "t"
    motor = data["motor"]
    assert motor["speed"].tolist() == [float(v) for v in range(30)]
    assert motor.units["speed"] == "rpm"
    frame = motor.to_pandas()
    assert list(frame.columns)[:2] == ["speed", "torque"] and len(frame) == 30
    assert data["env"].to_xarray()["state"].values.tolist() == ["IDLE", "RUNNING", "FAULT"]


def test_signals_channels_and_decimation(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "d.h5"
    pivot(cache, out, T0, T0 + 9 * S, registry=REGISTRY, signals=["motor.speed"], decimate=3)
    with h5py.File(out) as h5:
        assert list(h5) == ["motor"]
        assert set(h5["motor"]) == {"time", "receive_time", "speed"}
        assert h5["motor"]["speed"][()].tolist() == [float(v) for v in range(0, 100, 3)]


def test_selection_reads_only_the_index_of_overlapping_files(tmp_path: Path) -> None:
    fill(tmp_path / "cache", seconds=60, rotate=4000)  # many small files
    catalogue = Catalogue(tmp_path / "cache")
    selected = plan(catalogue, T0 + 30 * S, T0 + 31 * S)
    assert selected.records == 2 * 10 + 2
    assert len(catalogue.files()) > 10


def test_errors_are_clear_and_leave_no_file(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.h5"
    with pytest.raises(ReadError, match="no data received between"):
        pivot(cache, out, T0 - 100 * S, T0 - 50 * S)
    with pytest.raises(ReadError, match="no cached data for channel"):
        pivot(cache, out, T0, T0 + S, channels=["nope"])
    out.write_bytes(b"precious")
    with pytest.raises(PivotError, match=r"exists already.*--force"):
        pivot(cache, out, T0, T0 + S)
    assert out.read_bytes() == b"precious"

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(PivotError, match="is not an HDF5 file"):  # not ours to delete
        pivot(cache, out, T0, T0 + S, force=True)
    with h5py.File(out, "w") as h5:
        h5.attrs["precious"] = 1
    with pytest.raises(KeyboardInterrupt):
        pivot(cache, out, T0, T0 + 30 * S, force=True, progress=interrupt)
    with h5py.File(out) as h5:  # an interrupted pivot leaves nothing behind
        assert h5.attrs["precious"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_records_in_other_workers_files_are_merged_by_receive_time(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    encoder = Encoder(REGISTRY["example"])
    for worker in (1, 2):
        writer = CacheWriter(cache, 2**30, 600, worker=worker)
        for s in range(worker - 1, 20, 2):  # worker 1 even seconds, worker 2 odd ones
            writer.append(REGISTRY["example"], [encoder.encode({
                "time": T0 + s * S, "message": "", "counter": s, "sine_wave": 0.0,
                "ramp": 0.0, "square_wave": 0.0, "noise": 0.0})[10:]], T0 + s * S)
        writer.close()
    out = tmp_path / "m.h5"
    pivot(cache, out, T0, T0 + 19 * S, registry=REGISTRY)
    with h5py.File(out) as h5:
        assert h5["example"]["counter"][()].tolist() == list(range(20))
        assert np.all(np.diff(h5["example"]["receive_time"][()]) > 0)


def test_half_written_exports_of_killed_pivots_are_removed(tmp_path) -> None:
    import os

    from speeddata.pivot import remove_stale_files

    dead = tmp_path / ".run1.h5.999999999.tmp"  # no such process
    alive = tmp_path / f".run2.h5.{os.getpid()}.tmp"  # a pivot still running
    dead.write_bytes(b"half")
    alive.write_bytes(b"half")
    assert remove_stale_files(tmp_path) == [dead]
    assert alive.exists() and not dead.exists()


def rig(*fields: dict) -> Channel:
    return channel_from_schema({"type": "record", "name": "rig", "fields": [
        {"name": "time", "type": "long"}, *fields]})


def test_a_range_across_schema_edits_keeps_every_value(tmp_path: Path) -> None:
    """The writer starts a new file when a channel's schema changes; the pivot decodes
    each file with its own schema and writes one column per signal over all of them."""
    versions = [
        rig({"name": "pressure", "type": "double", "unit": "bar"},
            {"name": "count", "type": "long"}),
        rig({"name": "pressure", "type": "double", "unit": "kPa"},  # unit edited
            {"name": "count", "type": "double"},  # type changed
            {"name": "state", "type": "string"}),  # field added
        rig({"name": "pressure", "type": "double", "unit": "kPa"},  # count removed
            {"name": "state", "type": "string"}),
    ]
    writer = CacheWriter(tmp_path / "cache", 2**30, 600)
    for v, channel in enumerate(versions):
        encoder = Encoder(channel)
        for s in range(3):
            recv = T0 + (10 * v + s) * S
            record = {"time": recv, "pressure": 100.0 * v + s}
            if v < 2:
                record["count"] = (10 * v + s) if v == 0 else float(10 * v + s) + 0.5
            if v > 0:
                record["state"] = f"v{v}s{s}"
            writer.append(channel, [encoder.encode(record)[10:]], recv)
    writer.close()
    assert len(Catalogue(tmp_path / "cache").files(["rig"])) == 3
    out = tmp_path / "edits.h5"
    result = pivot(tmp_path / "cache", out, T0, T0 + 60 * S)
    assert result.channels == {"rig": 9}
    with h5py.File(out) as h5:
        group = h5["rig"]
        assert group["pressure"][()].tolist() == [0, 1, 2, 100, 101, 102, 200, 201, 202]
        assert group["pressure"].attrs["unit"] == "kPa"  # the newest version's
        count = group["count"][()]
        assert count.dtype == np.float64
        assert count[:6].tolist() == [0, 1, 2, 10.5, 11.5, 12.5] and np.isnan(count[6:]).all()
        assert [v.decode() for v in group["state"][()]] == [
            "", "", "", "v1s0", "v1s1", "v1s2", "v2s0", "v2s1", "v2s2"]
        assert len(json.loads(group.attrs["schemas"])) == 3
        assert "state" in group.attrs["schema"] and "count" not in group.attrs["schema"]


@pytest.mark.parametrize("export_format", ["csv", "parquet"])
def test_csv_and_parquet_hold_every_value_of_the_hdf5(cache: Path, tmp_path: Path,
                                                      export_format: str) -> None:
    start, end = T0 + 10 * S, T0 + 19 * S
    pivot(cache, tmp_path / "run.h5", start, end, registry=REGISTRY, attrs={"tag": "run"})
    out = tmp_path / "run"
    result = pivot(cache, out, start, end, registry=REGISTRY, attrs={"tag": "run"},
                   export_format=export_format)
    assert result.channels == {"env": 10, "motor": 100}
    suffix = ".csv" if export_format == "csv" else ".parquet"
    assert sorted(p.name for p in out.iterdir()) == ["env" + suffix, "export.json",
                                                     "motor" + suffix]
    about = json.loads((out / "export.json").read_text())
    assert about["tag"] == "run" and about["format"] == export_format
    with h5py.File(tmp_path / "run.h5") as h5:
        for channel in ("motor", "env"):
            group = h5[channel]
            if export_format == "csv":
                import csv

                import pandas as pd

                frame = pd.read_csv(out / f"{channel}.csv")
                assert frame["time_ns"].tolist() == group["time"][()].tolist()
                for name in group:
                    if group[name].dtype.kind == "f":
                        assert frame[name].tolist() == group[name][()].tolist(), name
                with (out / f"{channel}.csv").open() as f:
                    rows = list(csv.DictReader(f))
                assert [int(r["time_ns"]) for r in rows] == group["time"][()].tolist()
                assert rows[0]["time_iso"].endswith("Z") and "T" in rows[0]["time_iso"]
                assert np.datetime64(rows[3]["time_iso"][:-1]).astype("datetime64[ns]").astype(
                    np.int64) == group["time"][3]
                assert [int(r["receive_time_ns"]) for r in rows] == \
                    group["receive_time"][()].tolist()
                for name in group:
                    if name in ("time", "receive_time"):
                        continue
                    expected = group[name][()].tolist()
                    got = [r[name] for r in rows]
                    if group[name].dtype.kind == "f":
                        assert [float(v) for v in got] == expected, name
                    else:
                        assert got == [v.decode() if isinstance(v, bytes) else str(v)
                                       for v in expected], name
            else:
                import pandas as pd
                import pyarrow.parquet as pq

                frame = pd.read_parquet(out / f"{channel}.parquet")
                for name in group:
                    if group[name].dtype.kind == "f" and name != "receive_time":
                        assert frame[name].tolist() == group[name][()].tolist(), name
                table = pq.read_table(out / f"{channel}.parquet")
                assert table.column("time").cast("int64").to_pylist() == \
                    group["time"][()].tolist()
                for name in group:
                    if name in ("time", "receive_time"):
                        continue
                    expected = [v.decode() if isinstance(v, bytes) else v
                                for v in group[name][()].tolist()]
                    assert table.column(name).to_pylist() == expected, name
                    field = table.schema.field(name)
                    assert field.metadata[b"unit"].decode() == group[name].attrs["unit"]


def test_a_killed_directory_export_is_removed_by_the_next(cache: Path, tmp_path: Path) -> None:
    stale = tmp_path / ".run.999999999.tmp"
    stale.mkdir()
    (stale / "motor.csv").write_text("half")
    pivot(cache, tmp_path / "other", T0, T0 + 2 * S, export_format="csv")
    assert not stale.exists()
    with pytest.raises(PivotError, match="format 'xml'"):
        pivot(cache, tmp_path / "x", T0, T0 + 2 * S, export_format="xml")


def test_names_holding_nul_are_renamed_and_never_take_an_exports_own_column() -> None:
    from speeddata.sinks import column_names

    fields = ["a\x00b", "a_b", "", ".", "x/y", "receive_time", "receive_time_2", "time_ns"]
    hdf5 = column_names("hdf5", "time", fields)
    assert hdf5 == {"time": "time", "a\x00b": "a_b_2", "a_b": "a_b", "": "_", ".": "__2",
                    "x/y": "x_y", "receive_time": "receive_time_3",
                    "receive_time_2": "receive_time_2", "time_ns": "time_ns"}
    csv = column_names("csv", "time", fields)
    assert csv["a\x00b"] == "a_b_2" and csv["."] == "." and csv["x/y"] == "x/y"
    assert csv["receive_time"] == "receive_time" and csv["time_ns"] == "time_ns_2"
    assert column_names("parquet", "time", fields)["a\x00b"] == "a\x00b"
    # the time field itself may be named like the export's receive time
    assert column_names("csv", "receive_time", ["x"]) == {"receive_time": "receive_time_2",
                                                           "x": "x"}
    for fmt in ("hdf5", "csv", "parquet"):
        names = column_names(fmt, "time", fields)
        assert len(set(names.values())) == len(names)


def test_csv_then_parquet_of_one_tag_and_force_deletes_only_its_own_export(
        cache: Path, tmp_path: Path) -> None:
    """The README's example: CSV, then Parquet, of one tag. --force replaces an export of
    its own format, never another format's, nor a folder speeddata did not write."""
    out = tmp_path / "exports" / "run"
    pivot(cache, out, T0, T0 + 2 * S, export_format="csv")
    with pytest.raises(PivotError, match=r"holds a csv export.*--out"):
        pivot(cache, out, T0, T0 + 2 * S, export_format="parquet", force=True)
    assert sorted(p.name for p in out.iterdir()) == ["env.csv", "export.json", "motor.csv"]
    pivot(cache, tmp_path / "exports" / "parquet" / "run", T0, T0 + 2 * S,
          export_format="parquet")
    pivot(cache, out, T0, T0 + 5 * S, export_format="csv", force=True)  # its own: replaced
    assert len((out / "motor.csv").read_text().splitlines()) == 1 + 60
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PivotError, match=r"did not write \(notes.txt\)"):
        pivot(cache, out, T0, T0 + 2 * S, export_format="csv", force=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("1,2")
    with pytest.raises(PivotError, match="not a speeddata export"):
        pivot(cache, mine, T0, T0 + 2 * S, export_format="csv", force=True)
    with pytest.raises(PivotError, match="not an HDF5 file"):
        pivot(cache, mine, T0, T0 + 2 * S, force=True)
    assert (mine / "data.csv").read_text() == "1,2" and (out / "notes.txt").exists()


def test_text_with_nul_and_renamed_fields_load_back_exactly(tmp_path: Path) -> None:
    channel = rig({"name": "note", "type": "string"},
                  {"name": "receive_time", "type": "double", "unit": "s\x00"})
    writer = CacheWriter(tmp_path / "cache", 2**30, 600)
    writer.append(channel, [Encoder(channel).encode(
        {"time": T0 + i, "note": f"a\x00{i}\n", "receive_time": i / 2})[10:]
        for i in range(3)], T0)
    writer.close()
    result = pivot(tmp_path / "cache", tmp_path / "odd.h5", T0 - S, T0 + S)
    assert [str(r) for r in result.renamed] == [
        "field 'receive_time' of channel 'rig' is named 'receive_time_2'"]
    with h5py.File(tmp_path / "odd.h5") as h5:
        assert json.loads(h5.attrs["renamed"]) == [
            {"channel": "rig", "field": "receive_time", "as": "receive_time_2"}]
        assert json.loads(h5["rig"].attrs["renamed"]) == {"receive_time_2": "receive_time"}
        assert h5["rig/note"].attrs["nul"] == "C0 80"
        assert h5["rig/note"][0] == b"a\xc0\x800\n"
    rig_data = speeddata.load(tmp_path / "odd.h5")["rig"]
    assert rig_data["note"].tolist() == ["a\x000\n", "a\x001\n", "a\x002\n"]
    assert rig_data["receive_time"].tolist() == [0.0, 0.5, 1.0]
    assert rig_data.units["receive_time"] == "s\x00"
    assert rig_data.receive_time.tolist() == [T0] * 3
