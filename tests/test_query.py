"""speeddata.query against the pivot: the same range gives the same values, value for
value, read back from the HDF5 the pivot writes; batches by window; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import speeddata
from speeddata import config as configuration
from speeddata.errors import NotFoundError
from speeddata.pivot import pivot
from speeddata.readout import NoData
from speeddata.sets import ChannelData
from speeddata.tags import TagNotFound, TagStore
from speeddata.times import TimeError, format_time
from tests.helpers import SCHEMAS
from tests.test_pivot import REGISTRY, T0, S, fill, rig

iso = format_time
CONFIG = configuration.build(overrides={("channels", "dir"): str(SCHEMAS)})


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    fill(tmp_path / "cache")
    return tmp_path / "cache"


def edited_cache(cache: Path) -> None:
    """A channel whose schema is edited twice inside the range (see test_pivot)."""
    from speeddata.cache.store import CacheWriter
    from speeddata.sender import Encoder

    versions = [
        rig({"name": "pressure", "type": "double", "unit": "bar"},
            {"name": "count", "type": "long"}),
        rig({"name": "pressure", "type": "double", "unit": "kPa"},
            {"name": "count", "type": "double"}, {"name": "state", "type": "string"}),
        rig({"name": "pressure", "type": "double", "unit": "kPa"},
            {"name": "state", "type": "string"}),
    ]
    writer = CacheWriter(cache, 2**30, 600)
    for v, channel in enumerate(versions):
        encoder = Encoder(channel)
        for s in range(3):
            recv = T0 + (10 * v + s) * S
            record = {"time": recv, "pressure": 100.0 * v + s}
            if v < 2:
                record["count"] = (10 * v + s) if v == 0 else float(10 * v + s) + 0.5
            if v > 0:
                record["state"] = f"v{v}s{s}\x00"  # a NUL: HDF5 escapes it, load restores
            writer.append(channel, [encoder.encode(record)[10:]] * 4, recv)
    writer.close()


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    return a.dtype.kind == b.dtype.kind and a.tolist() == b.tolist()


def assert_same_channel(got: ChannelData, expected: ChannelData) -> None:
    assert got.name == expected.name
    assert got.time.dtype == np.int64 and got.time.tolist() == expected.time.tolist()
    assert got.receive_time.tolist() == expected.receive_time.tolist()
    assert list(got.columns) == list(expected.columns)
    for name, values in expected.columns.items():
        assert same_values(got.columns[name], values), name
    assert got.units == expected.units and got.docs == expected.docs
    assert got.schema == expected.schema


def test_a_query_gives_what_the_pivot_writes_value_for_value(cache: Path,
                                                              tmp_path: Path) -> None:
    edited_cache(cache)
    start, end = T0 + 1 * S, T0 + 40 * S
    out = tmp_path / "run.h5"
    pivot(cache, out, start, end, registry=REGISTRY, compression=None, channels_dir=SCHEMAS)
    written = speeddata.load(out)
    found = speeddata.query(start=iso(start), end=iso(end),
                            cache=cache, config=CONFIG)
    assert (found.start_ns, found.end_ns) == (start, end)
    got = found.read()
    assert sorted(got.channels) == ["env", "motor", "power", "rig"]  # power: derived
    for name, channel in written.channels.items():
        assert_same_channel(got[name], channel)
    rig_state = got["rig"]["state"].tolist()
    assert rig_state[:8] == [""] * 8 and rig_state[-1] == "v2s2\x00"
    assert np.isnan(got["rig"]["count"][-12:]).all()


def test_xarray_pandas_and_arrow_are_the_loaded_sets(cache: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    import xarray

    start, end = T0 + 10 * S, T0 + 19 * S
    pivot(cache, tmp_path / "run.h5", start, end, registry=REGISTRY, channels_dir=SCHEMAS)
    pivot(cache, tmp_path / "run", start, end, registry=REGISTRY, export_format="parquet",
          channels_dir=SCHEMAS)
    written = speeddata.load(tmp_path / "run.h5")
    found = speeddata.query(start=iso(start), end="+9s", cache=cache, config=CONFIG,
                            now_ns=start)
    for name, dataset in found.to_xarray().items():
        xarray.testing.assert_identical(dataset, written.channels[name].to_xarray())
    for name, frame in found.to_pandas().items():
        assert frame.equals(written.channels[name].to_pandas())
    for name, table in found.to_arrow().items():
        parquet = pq.read_table(tmp_path / "run" / f"{name}.parquet")
        assert table.equals(parquet)
        assert table.schema.equals(parquet.schema, check_metadata=True)


def test_polars_where_it_is_installed(cache: Path) -> None:
    polars = pytest.importorskip("polars")
    found = speeddata.query(start=iso(T0 + 10 * S), end=iso(T0 + 19 * S),
                            cache=cache, config=CONFIG, channels=["motor"])
    frame = found.to_polars()["motor"]
    assert isinstance(frame, polars.DataFrame)
    assert frame["speed"].to_list() == [float(v) for v in range(100, 200)]


def test_a_tag_names_the_range_and_its_channels(cache: Path, tmp_path: Path) -> None:
    TagStore(cache).add("run42", T0 + 10 * S, T0 + 19 * S, note="ten s", channels=("env",))
    found = speeddata.query("run42", cache=cache, config=CONFIG)
    assert list(found.read().channels) == ["env"]
    assert found.read().attrs["tag"] == "run42" and found.read().attrs["note"] == "ten s"
    pivot(cache, tmp_path / "e.h5", T0 + 10 * S, T0 + 19 * S, channels=["env"])
    assert_same_channel(found["env"], speeddata.load(tmp_path / "e.h5")["env"])
    narrow = speeddata.query("run42", cache=cache, config=CONFIG, channels="motor",
                             signals="speed,motor.torque")
    assert list(narrow["motor"].columns) == ["speed", "torque"]


def test_a_missing_tag_or_an_empty_range_is_a_clear_not_found(cache: Path) -> None:
    with pytest.raises(TagNotFound, match="no tag named 'nope'") as missing:
        speeddata.query("nope", cache=cache, config=CONFIG)
    with pytest.raises(NoData, match="no data received between") as empty:
        speeddata.query(start="2020-01-01T00:00:00Z", end="2020-01-02T00:00:00Z",
                        cache=cache, config=CONFIG)
    assert isinstance(missing.value, NotFoundError) and isinstance(empty.value, NotFoundError)
    with pytest.raises(NoData, match="no cached data for channel"):
        speeddata.query(start=iso(T0 + 10 * S), cache=cache, config=CONFIG,
                        channels=["nope"])
    with pytest.raises(TimeError, match="not both"):
        speeddata.query("run42", start="-1m", cache=cache, config=CONFIG)


def test_decimation_is_the_pivots(cache: Path, tmp_path: Path) -> None:
    pivot(cache, tmp_path / "d.h5", T0, T0 + 59 * S, decimate=7, channels=["motor"])
    found = speeddata.query(start=iso(T0), end=iso(T0 + 59 * S),
                            cache=cache, config=CONFIG, channels=["motor"], decimate=7)
    assert_same_channel(found["motor"], speeddata.load(tmp_path / "d.h5")["motor"])


def test_batches_come_window_by_window_and_join_to_the_whole(cache: Path) -> None:
    import pyarrow as pa

    found = speeddata.query(start=iso(T0), end=iso(T0 + 59 * S),
                            cache=cache, config=CONFIG)
    batches = list(found.batches(window="5s", rows=16))
    windows = [b.window for b in batches]
    assert windows == sorted(windows) and windows[-1] == 11
    for b in batches:
        assert b.batch.num_rows < 16 + 10  # a block (10 records) is never cut
        receive = b.batch.column("receive_time").cast(pa.int64()).to_numpy()
        assert ((receive - T0) // (5 * S) == b.window).all()
    whole = found.read()
    for name in ("motor", "env"):
        table = pa.Table.from_batches([b.batch for b in batches if b.channel == name])
        assert table.equals(whole[name].to_arrow())
    one = found.reader("env", window=10)
    assert one.read_all().num_rows == 60


def test_a_bad_window_is_a_time_error(cache: Path) -> None:
    found = speeddata.query(start=iso(T0), cache=cache, config=CONFIG)
    with pytest.raises(TimeError, match="cannot read duration"):
        next(iter(found.batches(window="ten seconds")))
    with pytest.raises(TimeError, match="more than 0"):
        next(iter(found.batches(window=0)))


def test_blocks_whose_record_size_changes_decode_by_rows_each(tmp_path: Path) -> None:
    """A counter that grows a varint byte changes the record size between blocks: each
    run of one size is still a matrix of rows (not fastavro for the whole chunk)."""
    from speeddata.cache.store import CacheWriter
    from speeddata.columns import ColumnDecoder
    from speeddata.readout import _decode_runs, chunks, select
    from speeddata.sender import Encoder

    channel = rig({"name": "n", "type": "long"}, {"name": "x", "type": "double"})
    encoder = Encoder(channel)
    writer = CacheWriter(tmp_path / "cache", 2**30, 600)
    values = []
    for b in range(8):  # n: 1 varint byte in blocks 0-3, 2 bytes in 4-7
        block = [b * 16 + i for i in range(16)] if b < 4 else [1000 + i for i in range(16)]
        values += block
        writer.append(channel, [encoder.encode({"time": T0 + b * S + i, "n": n,
                                                "x": n / 2})[10:] for i, n in
                                enumerate(block)], T0 + b * S)
    writer.close()
    with select(tmp_path / "cache", T0, T0 + 10 * S) as selection:
        (part,) = selection.channels
        found = list(chunks(selection.reader, part))
        (path,) = part.versions
        decoder = ColumnDecoder(part.versions[path])
        group = [(e, d) for _, e, d in selection.reader.bodies(part.blocks)]
        columns, kept = _decode_runs(selection.reader, decoder, path, group)
    assert decoder.fallbacks == 0 and all(kept) and columns["n"].tolist() == values
    assert len(found) == 1 and found[0].columns["n"].tolist() == values
    assert found[0].columns["x"].tolist() == [n / 2 for n in values]
