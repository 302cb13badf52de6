"""Derived channels in the exports: HDF5, CSV and Parquet hold them next to their inputs,
equal to the formula and to the live computation to the last bit, across cache files
and a schema edit, windows warmed before the range; speeddata.load reads them."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

import speeddata
from speeddata.cache.catalogue import Catalogue
from speeddata.cache.store import CacheWriter
from speeddata.pivot import pivot
from speeddata.schemas import Registry, channel_from_schema
from speeddata.sender import Encoder
from tests.derived.common import PAIR, REGISTRY, SLOW, T0, derived, sines, toml

TEXT = toml("calc", diff="pair.a - pair.b", m="mean(pair.a, 25)", t='max(pair.b, "30ms")',
            j="pair.a * slow.x")
BLOCK = 100  # samples a block: 100 ms at 1 kHz
N = 6000
EDITED = {**PAIR, "fields": [*PAIR["fields"], {"name": "c", "type": "float"}]}


def fill(cache: Path, columns: dict[str, np.ndarray]) -> list[tuple[str, int, int]]:
    """Blocks of pair (its schema edited halfway) and slow, small files; returns what
    was written, in order: (channel, first row, rows) for pair."""
    writer = CacheWriter(cache, 40_000, 600)
    versions = [REGISTRY["pair"], channel_from_schema(EDITED, limits=True)]
    blocks = []
    for lo in range(0, N, BLOCK):
        recv = int(columns["time"][lo + BLOCK - 1]) + 1_000_000
        slow = {"time": recv - 2_000_000, "x": float(lo)}
        writer.append(REGISTRY["slow"], [Encoder(REGISTRY["slow"]).encode(slow)[10:]], recv)
        version = versions[lo >= N // 2]
        encoder = Encoder(version)
        names = [f["name"] for f in version.schema["fields"]]
        writer.append(version, [encoder.encode({k: columns[k][i].item() if k in columns
                                                else 0.5 for k in names})[10:]
                                for i in range(lo, lo + BLOCK)], recv)
        blocks.append(("slow", lo, 1))
        blocks.append(("pair", lo, BLOCK))
    writer.close()
    return blocks


def live_values(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the hub computes, fed the same samples in other batches (slow before each)."""
    computed = derived(TEXT)
    out: dict[str, list[np.ndarray]] = {}
    # slow's one sample per block is at the block's receive time: feed it just before the
    # block's first row (as the relay's order has it) and pair in 37-row batches otherwise
    edges = sorted({*range(0, N, 37), *range(0, N, BLOCK), N})
    for lo, hi in itertools.pairwise(edges):
        if lo % BLOCK == 0:
            recv = int(columns["time"][lo + BLOCK - 1]) + 1_000_000
            computed.compute(REGISTRY["slow"], {"time": np.array([recv - 2_000_000]),
                                                "x": np.array([float(lo)])})
        ((_, result),) = computed.compute(REGISTRY["pair"],
                                          {k: v[lo:hi] for k, v in columns.items()})
        for k, v in result.items():
            out.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("derived-export")
    channels = tmp / "schemas"
    channels.mkdir()
    for schema in (PAIR, SLOW):
        (channels / f"{schema['name']}.avsc").write_text(json.dumps(schema))
    (channels / "calc.derived.toml").write_text(TEXT)
    columns = sines(N)
    fill(tmp / "cache", columns)
    return tmp, channels, columns


def test_the_cache_has_several_files_and_both_schema_versions(rig) -> None:
    tmp, _, _ = rig
    files = [f for f in Catalogue(tmp / "cache").files() if f.channel == "pair"]
    assert len(files) >= 4


@pytest.mark.parametrize("export_format", ["hdf5", "csv", "parquet"])
def test_a_minus_b_in_every_format_is_the_formula_and_the_live_bits(rig, export_format: str
                                                                   ) -> None:
    tmp, channels, columns = rig
    out = tmp / f"all.{export_format}"
    result = pivot(tmp / "cache", out, T0 - 10**9, T0 + 10 * 10**9, export_format=export_format,
                   channels_dir=channels, registry=Registry.load_dir(channels)[0])
    assert result.channels["calc"] == N and result.channels["pair"] == N
    expected = live_values(columns)
    assert expected["diff"].tobytes() == (columns["a"] - columns["b"]).tobytes()
    if export_format == "hdf5":
        with h5py.File(out) as h5:
            group = h5["calc"]
            got = {k: group[k][()] for k in ("time", "diff", "m", "t", "j")}
            assert group["diff"].attrs["expression"] == "pair.a - pair.b"
            assert group["diff"].attrs["unit"] == "bar"
            assert group["diff"].dims[0][0] == group["time"]
        loaded = speeddata.load(out)["calc"]
        assert loaded.expressions["m"] == "mean(pair.a, 25)"
        assert loaded["diff"].tobytes() == got["diff"].tobytes()
    elif export_format == "csv":
        with (out / "calc.csv").open() as f:
            rows = list(csv.DictReader(f))
        got = {k: np.array([float(r[k]) if r[k] else np.nan for r in rows])
               for k in ("diff", "m", "t", "j")}
        got["time"] = np.array([int(r["time_ns"]) for r in rows])
        about = json.loads((out / "export.json").read_text())["channels"]["calc"]
        assert about["schemas"][0]["fields"][1]["expression"] == "pair.a - pair.b"
    else:
        table = pq.read_table(out / "calc.parquet")
        got = {k: table[k].to_numpy() for k in ("diff", "m", "t", "j")}
        got["time"] = table["time"].cast("int64").to_numpy()
        meta = table.schema.field("diff").metadata
        assert meta[b"expression"] == b"pair.a - pair.b" and meta[b"unit"] == b"bar"
    assert got["time"].tolist() == columns["time"].tolist()
    for k in ("diff", "m", "t", "j"):
        assert got[k].tobytes() == expected[k].tobytes(), k


def test_a_range_in_the_middle_warms_its_windows_before_it(rig) -> None:
    tmp, channels, columns = rig
    out = tmp / "middle.h5"
    start_row = 2950  # the schema edit is at 3000, a new cache file too
    start = int(columns["time"][start_row + BLOCK - 1 - (start_row % BLOCK)]) + 1_000_000
    pivot(tmp / "cache", out, start - 1, start + 10**9 // 2, channels_dir=channels)
    whole = live_values(columns)
    with h5py.File(out) as h5:
        times = h5["calc"]["time"][()]
        first = int(np.searchsorted(columns["time"], times[0]))
        for k in ("m", "t", "diff"):
            got = h5["calc"][k][()]
            assert not np.isnan(got).any(), k  # full from the first row: warmed
            assert got.tobytes() == whole[k][first: first + len(got)].tobytes(), k


def test_only_the_derived_channel_named_is_exported_with_its_inputs(rig) -> None:
    tmp, channels, _ = rig
    out = tmp / "named.h5"
    result = pivot(tmp / "cache", out, T0 - 10**9, T0 + 10 * 10**9, channels=["calc"],
                   channels_dir=channels)
    assert set(result.channels) == {"calc", "pair"}


def test_a_query_gives_the_derived_values_of_the_pivot_to_the_last_bit(rig) -> None:
    """One reading pass for pivot and query: the derived channel comes with its inputs,
    value for value what the pivot writes (and the live bits), in memory and in
    Arrow batches by window."""
    from speeddata.queries import Query
    from speeddata.tags import Span

    tmp, channels, columns = rig
    start = int(columns["time"][2 * BLOCK - 1]) + 1_000_000
    end = start + 3 * 10**9
    out = tmp / "queried.h5"
    pivot(tmp / "cache", out, start, end, channels_dir=channels)
    found = Query(tmp / "cache", Span(start, end, "q"), channels_dir=channels)
    data = found.read()
    assert set(data.channels) == {"pair", "slow", "calc"}
    assert data["calc"].expressions["diff"] == "pair.a - pair.b"
    whole = live_values(columns)
    with h5py.File(out) as h5:
        assert data["calc"].time.tolist() == h5["calc"]["time"][()].tolist()
        for k in ("diff", "m", "t", "j"):
            assert data["calc"][k].tobytes() == h5["calc"][k][()].tobytes(), k
        assert data["pair"]["a"].tobytes() == h5["pair"]["a"][()].tobytes()
    first = int(np.searchsorted(columns["time"], data["calc"].time[0]))
    assert data["calc"]["m"].tobytes() == whole["m"][first: first + len(data["calc"]["m"])
                                                     ].tobytes()
    batches = [b for b in found.batches("1s") if b.channel == "calc"]
    assert [b.window for b in batches] == sorted(b.window for b in batches)
    diff = np.concatenate([b.batch.column("diff").to_numpy() for b in batches])
    assert diff.tobytes() == data["calc"]["diff"].tobytes()


def test_a_damaged_input_block_is_counted_once(tmp_path: Path) -> None:
    """The derived channel reads its inputs in the export's one pass: a damaged block of
    its driver is one skipped block, and the derived rows lack just its records."""
    channels = tmp_path / "schemas"
    channels.mkdir()
    (channels / "pair.avsc").write_text(json.dumps(PAIR))
    (channels / "d.derived.toml").write_text(toml("d", diff="pair.a - pair.b"))
    columns = sines(1000)
    writer = CacheWriter(tmp_path / "cache", 2**30, 600)
    encoder = Encoder(REGISTRY["pair"])
    for lo in range(0, 1000, BLOCK):
        writer.append(REGISTRY["pair"], [encoder.encode({k: columns[k][i].item() for k in
                                                         ("time", "a", "b", "word", "flag")}
                                                        )[10:] for i in range(lo, lo + BLOCK)],
                      int(columns["time"][lo]) + 10**6)
    writer.close()
    (cached,) = Catalogue(tmp_path / "cache").files()
    raw = bytearray(cached.path.read_bytes())
    middle = len(raw) // 2
    raw[middle: middle + 40] = b"\xff" * 40  # one block's body torn
    cached.path.write_bytes(bytes(raw))
    result = pivot(tmp_path / "cache", tmp_path / "d.h5", T0 - 10**9, T0 + 10**10,
                   channels_dir=channels)
    assert result.skipped.blocks == 1
    assert result.channels["d"] == result.channels["pair"] == 1000 - BLOCK
    with h5py.File(tmp_path / "d.h5") as h5:
        assert h5["d"]["diff"][()].tobytes() == (h5["pair"]["a"][()] - h5["pair"]["b"][()]
                                                 ).tobytes()


ANCHORED = toml("acc", i='integral(pair.a, "1s")', f='lowpass(pair.b, 0.05, "1s")',
                g="integral(pair.a - slow.x)")


def test_integral_and_lowpass_start_at_utc_boundaries_live_and_exported_alike(rig) -> None:
    """Reset at each whole second (the default: each UTC hour): NaN live until a
    boundary passed, then the same bits in an export of a range in the middle, which
    reads from the boundary before its range."""
    tmp, _, columns = rig
    channels = tmp / "anchored"
    channels.mkdir()
    for schema in (PAIR, SLOW):
        (channels / f"{schema['name']}.avsc").write_text(json.dumps(schema))
    (channels / "acc.derived.toml").write_text(ANCHORED)
    computed = derived(ANCHORED)
    out: dict[str, list[np.ndarray]] = {}
    edges = sorted({*range(0, N, 37), *range(0, N, BLOCK), N})
    for lo, hi in itertools.pairwise(edges):
        if lo % BLOCK == 0:
            recv = int(columns["time"][lo + BLOCK - 1]) + 1_000_000
            computed.compute(REGISTRY["slow"], {"time": np.array([recv - 2_000_000]),
                                                "x": np.array([float(lo)])})
        ((_, result),) = computed.compute(REGISTRY["pair"],
                                          {k: v[lo:hi] for k, v in columns.items()})
        for k, v in result.items():
            out.setdefault(k, []).append(v)
    whole = {k: np.concatenate(v) for k, v in out.items()}
    second = int(np.searchsorted(columns["time"], T0 + 10**9))
    assert np.isnan(whole["i"][:second]).all() and whole["i"][second] == 0.0
    assert whole["f"][second] == columns["b"][second]
    assert np.isnan(whole["g"]).all()  # an hour's boundary is not in these 6 s
    start = int(columns["time"][5499]) + 1_000_000
    pivot(tmp / "cache", tmp / "anchored.h5", start, start + 10**9 // 2,
          channels_dir=channels)
    with h5py.File(tmp / "anchored.h5") as h5:
        first = int(np.searchsorted(columns["time"], h5["acc"]["time"][0]))
        for k in ("i", "f"):
            got = h5["acc"][k][()]
            assert not np.isnan(got).any(), k
            assert got.tobytes() == whole[k][first: first + len(got)].tobytes(), k


def test_decimation_and_the_receive_clock_take_the_derived_rows_with_their_inputs(rig
                                                                                 ) -> None:
    """Every 7th row (counted across blocks and chunks) of the derived channel is the
    same row as its driver's; on the receive clock both have the driver's axis."""
    tmp, channels, columns = rig
    out = tmp / "every7.h5"
    pivot(tmp / "cache", out, T0 - 10**9, T0 + 10 * 10**9, channels_dir=channels, decimate=7,
          clock="receive")
    whole = live_values(columns)
    with h5py.File(out) as h5:
        assert h5["calc"]["time"][()].tolist() == h5["pair"]["time"][()].tolist()
        assert h5["calc"]["receive_time"][()].tolist() == h5["calc"]["time"][()].tolist()
        assert h5["calc"]["diff"][()].tobytes() == whole["diff"][::7].tobytes()
        assert h5["calc"]["m"][()].tobytes() == whole["m"][::7].tobytes()
