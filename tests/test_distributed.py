"""Archived ranges read on dask.distributed: a LocalCluster of 2 worker processes against
a real SeaweedFS, two relay hosts archiving the same channel (merged by receive time),
files across a schema edit, a damaged object. The Dask pivot's HDF5 equals the local
pivot's, every dataset and attribute; the Dask query equals the local query."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from speeddata import archive
from speeddata.cache import index
from speeddata.cache.layout import index_path
from speeddata.cache.store import CacheWriter
from speeddata.cli import main
from speeddata.config import build, write_file
from speeddata.schemas import channel_from_schema, load_file
from speeddata.sender import Encoder
from speeddata.times import format_time
from tests.harness.store import Store
from tests.helpers import SCHEMAS, relay_settings
from tests.test_archive import replace_object

pytestmark = pytest.mark.e2e

S = 10**9
T0 = 1_795_000_000 * S
MOTOR = load_file(SCHEMAS / "motor.avsc")
ENV = load_file(SCHEMAS / "env.avsc")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "speeddata", "AWS_SECRET_ACCESS_KEY": "test-secret"}


def _edited() -> Any:
    """motor after a schema edit: temperature gone, a text and an int field added, the
    units of speed changed."""
    schema = dict(MOTOR.schema)
    fields = [dict(f) for f in schema["fields"] if f["name"] != "temperature"]
    for f in fields:
        if f["name"] == "speed":
            f["unit"] = "rad/s"
    fields += [{"name": "mode", "type": "string"}, {"name": "gear", "type": "int"}]
    return channel_from_schema({**schema, "fields": fields}, "motor (edited)")


MOTOR_EDITED = _edited()


def _record(channel: Any, t: int, value: float) -> dict[str, Any]:
    record: dict[str, Any] = {"time": t}
    for f in channel.signals:
        if f.name == "time":
            continue
        if f.name == "mode":
            record[f.name] = f"m{int(value) % 3}"
        elif f.name == "gear":
            record[f.name] = int(value) % 5
        else:
            record[f.name] = "IDLE" if f.kind != "number" else value * 0.5 + len(f.name)
    return record


def _archive_host(tmp_path: Path, store: Store, host: str, shift_ns: int,
                  plan: list[tuple[Any, int]]) -> None:
    """One relay host's cache: a file a second, each ``(channel, blocks)`` of 100 records
    a block, then archived whole by an Archiver."""
    cache = tmp_path / host / "cache"
    writer = CacheWriter(cache, 2**40, 1)
    value = 0.0
    for second, files in enumerate(plan):
        for channel, blocks in files:
            encoder = Encoder(channel)
            for b in range(blocks):
                t = T0 + second * S + b * S // 10 + shift_ns
                bodies = []
                for i in range(100):
                    bodies.append(encoder.encode(_record(channel, t + i * 1000, value))[10:])
                    value += 1
                writer.append(channel, bodies, t)
        writer.roll_expired(T0 + (second + 1) * S + shift_ns)
    writer.close()
    settings = relay_settings(tmp_path / host, archive={"endpoint": store.endpoint,
                                                        "host": host, "prefix": "site"})
    archiver = archive.Archiver(build(write_file(tmp_path / f"{host}.toml", settings)),
                                store.client())
    while archiver.round():
        pass


def archived_range(tmp_path: Path, store: Store) -> Path:
    """Two relay hosts, both with motor (rig2's blocks 50 ms after rig1's), rig1's motor
    edited half-way, rig2 with env too; one of rig1's objects with a flipped byte. The
    viewer's config file is returned."""
    _archive_host(tmp_path, store, "rig1", 0,
                  [[(MOTOR, 5)]] * 3 + [[(MOTOR_EDITED, 5)]] * 3)
    _archive_host(tmp_path, store, "rig2", S // 20, [[(MOTOR, 5), (ENV, 3)]] * 5)
    listed = store.client().list_objects_v2(Bucket="speeddata", Prefix="site/rig1/motor/")
    keys = sorted(o["Key"] for o in listed["Contents"] if o["Key"].endswith(".avro"))
    second = keys[1]
    local = next((tmp_path / "rig1" / "cache" / "motor").glob(Path(second).name))
    third = index.unpack(index_path(local).read_bytes())[2]
    replace_object(store, second, lambda body: body[:third.offset + 40]
                   + bytes([body[third.offset + 40] ^ 1]) + body[third.offset + 41:])
    viewer = relay_settings(tmp_path / "viewer", archive={"endpoint": store.endpoint,
                                                          "prefix": "site"})
    return write_file(tmp_path / "viewer.toml", viewer)


def local_cluster(workers: int, env: dict[str, str]) -> Any:
    """``workers`` worker processes; the scheduler on a port of its own, its dashboard off
    and its HTTP server (health) on a port of its own too (8787 may be another's)."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                        scheduler_port=0, dashboard_address=None,
                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, env=env)


@pytest.fixture(autouse=True)
def _dask_logs_to_this_tests_stderr() -> None:
    """distributed's log handlers keep the stderr of the test that imported it: once
    pytest closed that capture, each log line is a "--- Logging error ---" traceback."""
    import logging
    import sys

    pytest.importorskip("distributed")
    loggers = [logging.getLogger(), *(logger for logger in
                                      logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler and handler.stream is not sys.stdout:
                handler.stream = sys.stderr  # not setStream: it flushes the closed one


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(2, CREDENTIALS) as found:
        yield found


RANGE = (T0 + S // 2, T0 + 5 * S + S // 2)  # across the edit, both hosts, most files


def _pivot(config: Path, out: Path, *extra: str) -> int:
    return main(["pivot", "--archive", "--partial", "--start", format_time(RANGE[0]),
                 "--end", format_time(RANGE[1]), "--config", str(config), "--out", str(out),
                 "--quiet", *extra])


def _same_hdf5(a: Path, b: Path) -> int:
    """Every group, dataset (values, dtype, dimension scales) and attribute of ``a`` in
    ``b`` and equal, and nothing more; the time each was written excepted. Returns the
    datasets compared."""
    import h5py

    def items(h5: Any) -> dict[str, Any]:
        found: dict[str, Any] = {"/": h5}
        h5.visititems(lambda name, obj: found.__setitem__(name, obj))
        return found

    def attrs(obj: Any) -> dict[str, Any]:
        return {k: v for k, v in obj.attrs.items()
                if k not in ("created", "DIMENSION_LIST", "REFERENCE_LIST")}

    compared = 0
    with h5py.File(a) as ha, h5py.File(b) as hb:
        left, right = items(ha), items(hb)
        assert sorted(left) == sorted(right)
        for name, x in left.items():
            y = right[name]
            got, want = attrs(x), attrs(y)
            assert sorted(got) == sorted(want), name
            for key, value in got.items():
                assert np.array_equal(np.asarray(value), np.asarray(want[key])), (name, key)
            if isinstance(x, h5py.Dataset):
                assert x.dtype == y.dtype and x.shape == y.shape, name
                assert np.array_equal(x[()], y[()], equal_nan=x.dtype.kind == "f"), name
                assert ([[s.name for s in d.values()] for d in x.dims]
                        == [[s.name for s in d.values()] for d in y.dims]), name
                compared += 1
    return compared


def test_a_dask_pivot_and_query_equal_the_local_ones(
        tmp_path: Path, store: Store, cluster: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import h5py

    import speeddata

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    config = archived_range(tmp_path, store)
    assert _pivot(config, tmp_path / "local") == 0
    said_local = capsys.readouterr()
    assert _pivot(config, tmp_path / "dask", "--dask", cluster.scheduler_address) == 0
    said_dask = capsys.readouterr()
    assert "damaged: 1 of" in said_local.err and "exporting the rest" in said_local.err
    assert "of 2 relay hosts (rig1, rig2)" in said_dask.out
    assert said_dask.out.split(" in ")[0] == said_local.out.split(" in ")[0]
    def said(err: str) -> list[str]:  # the command's lines (the log's are the workers')
        return [line for line in err.splitlines() if line.startswith("speeddata ")]

    assert said(said_dask.err) == said(said_local.err)
    (local,) = (tmp_path / "local").glob("*.h5")
    (dask,) = (tmp_path / "dask").glob("*.h5")
    assert _same_hdf5(local, dask) >= 19  # motor (both versions), env, power, clocks
    with h5py.File(dask) as h5:
        assert sorted(h5) == ["env", "motor", "power"]  # the derived channel too
        motor = h5["motor"]
        assert h5.attrs["archive_unread_records"] == 100  # the flipped byte's block
        assert np.isnan(motor["gear"][()]).any() and not np.isnan(motor["gear"][()]).all()
        assert set(motor["mode"].asstr()[()]) == {"", "m0", "m1", "m2"}
        receive = motor["receive_time"][()]
        assert (np.diff(receive) >= 0).all()  # both hosts merged in receive order
        assert h5["power"]["power"][()].tolist() == (
            motor["current"][()] * motor["voltage"][()]).tolist()

    def query(**extra: Any) -> Any:
        return speeddata.query(start=format_time(RANGE[0]), end=format_time(RANGE[1]),
                               config=config, archive=True, partial=True, **extra)

    files: list[tuple[int, int]] = []
    with query() as here, query(dask=cluster.scheduler_address,
                                progress=lambda *done: files.append(done)) as there:
        assert files[-1][0] == files[-1][1] >= 11  # the workers' files, as they finish
        assert [d for d, _ in files] == list(range(1, files[-1][1] + 1))
        records: list[tuple[int, int]] = []
        there.progress = lambda *done: records.append(done)
        mine, theirs = here.read(), there.read()
        assert records[-1][0] == records[-1][1] == len(theirs["motor"]) + len(theirs["env"])
        # the derived power too, computed from the workers' columns
        assert sorted(mine.channels) == sorted(theirs.channels) == ["env", "motor", "power"]
        for name, channel in mine.channels.items():
            other = theirs[name]
            assert channel.time.tolist() == other.time.tolist()
            assert channel.receive_time.tolist() == other.receive_time.tolist()
            assert (channel.units, channel.schema) == (other.units, other.schema)
            assert sorted(channel.columns) == sorted(other.columns)
            for signal_name, values in channel.columns.items():
                assert np.array_equal(values, other[signal_name],
                                      equal_nan=values.dtype.kind == "f"), signal_name
        statement = ("select count(*) n, sum(speed) s, count(distinct mode) m, "
                     "min(receive_time) r from motor")
        from speeddata import queries

        assert queries.sql(here, statement).to_pylist() == queries.sql(
            there, statement).to_pylist()
        assert [b.batch.num_rows for b in here.batches("1s")] == [
            b.batch.num_rows for b in there.batches("1s")]


def test_a_wrong_scheduler_address_is_one_clear_error(
        tmp_path: Path, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_file(tmp_path / "viewer.toml", relay_settings(
        tmp_path / "viewer", archive={"endpoint": store.endpoint, "prefix": "site"}))
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert _pivot(config, tmp_path / "out", "--dask", f"tcp://127.0.0.1:{port}") == 2
    said = capsys.readouterr().err
    assert f"cannot reach the Dask scheduler at 'tcp://127.0.0.1:{port}'" in said, said
    assert "dask scheduler" in said and "Traceback" not in said
    assert not list((tmp_path / "out").glob("*"))


def test_a_worker_that_cannot_reach_the_store_is_one_clear_error(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The workers go through a proxy that is not there; the client reaches the store."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    config = archived_range(tmp_path, store)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {**CREDENTIALS, "HTTP_PROXY": dead, "http_proxy": dead, "NO_PROXY": "",
           "no_proxy": ""}
    with local_cluster(1, env) as cut_off:
        assert _pivot(config, tmp_path / "out", "--dask", cut_off.scheduler_address) == 2
    said = capsys.readouterr().err
    assert "cannot reach the archive's store" in said and store.endpoint in said, said
    assert "give every worker a network path to the store" in said
    assert "Traceback" not in said
    assert not list((tmp_path / "out").glob("*.h5"))


def test_dask_without_the_archive_is_refused(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = write_file(tmp_path / "c.toml", relay_settings(tmp_path))
    assert main(["pivot", "--start", "-1m", "--config", str(config), "--dask",
                 "tcp://127.0.0.1:1"]) == 2
    assert "--dask reads archived ranges on a Dask cluster: add --archive" in \
        capsys.readouterr().err
