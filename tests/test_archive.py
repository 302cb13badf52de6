"""The archive: closed cache files uploaded to a real S3-compatible store (SeaweedFS),
verified, resumable, and kept by retention until archived when required."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from speeddata import archive, status
from speeddata.cache import ledger as archive_ledger
from speeddata.cache.catalogue import scan
from speeddata.cache.layout import index_path
from speeddata.cache.store import CacheWriter
from speeddata.config import ArchiveConfig, build, write_file
from speeddata.errors import ConfigError
from speeddata.schemas import load_file
from speeddata.sender import Encoder
from speeddata.snapshots import Snapshot
from tests.harness.store import Store
from tests.helpers import SCHEMAS, TIMEOUT, relay_settings, wait_until

MOTOR = load_file(SCHEMAS / "motor.avsc")
S = 10**9


def fill(cache: Path, files: int, records: int = 200, start_ns: int = 1_795_000_000 * S,
         blocks: int = 1) -> list[Path]:
    """``files`` closed motor files and one more, the newest, which only its closed marker
    (the writer is closed at the end) tells from a file that may still grow; each file
    ``blocks`` blocks of ``records`` records."""
    encoder = Encoder(MOTOR)
    writer = CacheWriter(cache, 2**40, 1)  # a new file a second
    for f in range(files + 1):
        t = start_ns + f * S
        for b in range(blocks):
            body = encoder.encode({"time": t, "speed": float(f), "torque": float(b),
                                   "current": 0.0, "voltage": 0.0, "position": 0.0,
                                   "temperature": 0.0})[10:]
            writer.append(MOTOR, [body] * records, t + b * S // 10)
        writer.roll_expired(t + S)
    writer.close()
    return sorted((cache / "motor").glob("*.avro"))


# -- the plain parts ---------------------------------------------------------------------

def test_object_keys_and_backoff() -> None:
    assert archive.object_key("", "rig1", "motor/a.avro") == "rig1/motor/a.avro"
    assert archive.object_key("/site/a/", "rig1", "motor/a.avro") == "site/a/rig1/motor/a.avro"
    backoff = archive.Backoff(most=10)
    assert [backoff.next() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    backoff.reset()
    assert backoff.next() == 1


def test_the_ledger_survives_a_torn_line_and_sees_another_process_append(tmp_path: Path
                                                                        ) -> None:
    path = tmp_path / archive_ledger.LEDGER
    ledger = archive_ledger.Ledger(path)
    ledger.record("motor/a.avro", 10, "aa", "k/a", 1)
    with path.open("ab") as f:
        f.write(b'{"path": "motor/b.avro", "si')  # a crash while appending
    other = archive_ledger.Ledger(path)  # the relay's view
    assert other.holds("motor/a.avro", 10) and not other.holds("motor/a.avro", 11)
    assert not other.holds("motor/b.avro", 5)
    ledger2 = archive_ledger.Ledger(path)
    with path.open("ab") as f:  # the line is finished later (never in practice: retried)
        f.write(b'ze": 5, "md5": "bb", "key": "k/b", "ns": 2}\n')
    other.refresh()
    assert other.holds("motor/b.avro", 5) and ledger2.bytes == 10


def test_a_line_written_after_a_torn_one_stands_on_its_own(tmp_path: Path) -> None:
    """After a crash in the middle of a ledger line, the restarted archiver's next line
    is read by everyone (the relay's retention too), the torn one is not."""
    path = tmp_path / archive_ledger.LEDGER
    archive_ledger.Ledger(path).record("motor/a.avro", 10, "aa", "k/a", 1)
    with path.open("ab") as f:
        f.write(b'{"path": "motor/b.avro", "si')  # kill -9 while appending
    restarted = archive_ledger.Ledger(path)
    restarted.record("motor/c.avro", 7, "cc", "k/c", 2)
    reader = archive_ledger.Ledger(path)
    assert reader.holds("motor/a.avro", 10) and reader.holds("motor/c.avro", 7)
    assert not reader.holds("motor/b.avro", 5) and reader.bytes == 17
    restarted.record("motor/c.avro", 8, "cd", "k/c", 3)  # the same file again, grown
    reader.refresh()
    assert reader.holds("motor/c.avro", 8) and reader.bytes == 18


def test_pending_waits_for_the_newest_file_and_takes_summaries_later(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    paths = fill(cache, 3)
    ledger = archive_ledger.Ledger(cache / archive_ledger.LEDGER)
    names = [relative for _, relative, _ in archive.pending(cache, scan(cache), ledger)]
    closed = [p.relative_to(cache).as_posix() for p in paths[:-1]]
    assert names == [n for c in closed for n in (c, c.replace(".avro", ".idx"))]  # oldest 1st
    for _, relative, size in archive.pending(cache, scan(cache), ledger):
        ledger.record(relative, size, "x", relative, 0)
    assert list(archive.pending(cache, scan(cache), ledger)) == []
    from speeddata.cache.layout import summary_path

    summary_path(paths[0]).write_bytes(b"npz")  # the stripchart server summarized it
    assert [r for _, r, _ in archive.pending(cache, scan(cache), ledger)] == [
        summary_path(paths[0]).relative_to(cache).as_posix()]
    covered = archive_ledger.covered(ledger, cache)
    files = {f.path: f for f in scan(cache)}
    assert covered(files[paths[0]]) and not covered(files[paths[-1]])


def test_finished_exports_are_pending_and_half_written_ones_are_not(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    (exports / "run1").mkdir(parents=True)
    (exports / "run1" / "motor.csv").write_text("a")
    (exports / "run2.h5").write_bytes(b"hdf")
    (exports / ".run3.77.tmp").mkdir()  # a pivot still writing a directory export
    (exports / ".run3.77.tmp" / "motor.csv").write_text("b")
    (exports / ".run4.78.tmp").write_bytes(b"half")
    ledger = archive_ledger.Ledger(tmp_path / archive_ledger.LEDGER)
    found = [r for _, r, _ in archive.pending_exports(exports, ledger)]
    assert found == ["exports/run1/motor.csv", "exports/run2.h5"]


def test_retention_required_keeps_what_is_not_archived(tmp_path: Path) -> None:
    from speeddata.cache.catalogue import Catalogue

    cache = tmp_path / "cache"
    paths = fill(cache, 4)
    ledger = archive_ledger.Ledger(cache / archive_ledger.LEDGER)
    first = paths[0]
    for p in (first, index_path(first)):
        ledger.record(p.relative_to(cache).as_posix(), p.stat().st_size, "x", "k", 0)
    doomed = Catalogue(cache).enforce(1, set(), archive_ledger.covered(ledger, cache))
    assert [f.path for f in doomed] == [first]  # only the archived one goes
    assert all(p.exists() for p in paths[1:])


def test_credentials_come_from_the_file_and_a_bad_file_is_one_clear_error(tmp_path: Path
                                                                         ) -> None:
    good = tmp_path / "credentials"
    good.write_text("[default]\naws_access_key_id = AKID\naws_secret_access_key = SECRET\n")
    assert archive.credentials(ArchiveConfig(credentials_file=str(good))) == {
        "aws_access_key_id": "AKID", "aws_secret_access_key": "SECRET"}
    bad = tmp_path / "bad"
    bad.write_text("[default]\naws_access_key_id = AKID\n")
    with pytest.raises(ConfigError, match="needs aws_access_key_id and aws_secret_access_key"):
        archive.credentials(ArchiveConfig(credentials_file=str(bad)))
    assert archive.credentials(ArchiveConfig()) == {}


# -- against the real store ----------------------------------------------------------------

def archive_settings(tmp_path: Path, store: Store, **archive_extra: Any) -> Path:
    settings = relay_settings(tmp_path, archive={"endpoint": store.endpoint, "host": "rig1",
                                                 "prefix": "site", **archive_extra})
    return write_file(tmp_path / "archive.toml", settings)


def start_archiver(config: Path, tmp_path: Path) -> subprocess.Popen:
    env = {"AWS_ACCESS_KEY_ID": "speeddata", "AWS_SECRET_ACCESS_KEY": "test-secret-value",
           "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([sys.executable, "-m", "speeddata", "archive", "--config",
                             str(config), "-v"], env=env,
                            stdout=(tmp_path / "archive.log").open("a"), stderr=subprocess.STDOUT)


def objects(store: Store, bucket: str = "speeddata") -> dict[str, dict[str, Any]]:
    s3 = store.client()
    try:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="site/")
    except s3.exceptions.NoSuchBucket:
        return {}
    return {o["Key"]: o for o in listed.get("Contents", [])}


def test_closed_files_are_uploaded_checked_and_recorded(tmp_path: Path, store: Store) -> None:
    config = archive_settings(tmp_path, store)
    cache = build(config).cache.dir
    paths = fill(cache, 3)
    process = start_archiver(config, tmp_path)
    try:
        def archived() -> dict[str, Any] | None:
            snap = status.read_all(cache).get("archive", {})
            return snap if snap.get("archived_files") == 8 and not snap["backlog_files"] else None

        # the newest too: its writer closed (and marked) it, and no relay runs
        snap = wait_until(archived, what="eight files (four closed, their indexes) archived")
        assert snap["store"] == "up" and snap["errors"] == 0 and snap["host"] == "rig1"
        found = objects(store)
        s3 = store.client()
        ledger = archive_ledger.Ledger(cache / archive_ledger.LEDGER)
        for path in paths:
            for part in (path, index_path(path)):
                key = f"site/rig1/motor/{part.name}"
                got = s3.get_object(Bucket="speeddata", Key=key)
                body = got["Body"].read()
                assert body == part.read_bytes()  # byte for byte
                sha256 = hashlib.sha256(body).hexdigest()
                assert got["Metadata"]["sha256"] == sha256  # x-amz-meta-sha256
                assert ledger.entries[part.relative_to(cache).as_posix()]["sha256"] == sha256
            assert f"site/rig1/motor/{path.stem}.sha256" in found  # its block sums
        assert len(found) == 12
        shown = subprocess.run([sys.executable, "-m", "speeddata", "status", "--config",
                                str(config)], capture_output=True, text=True).stdout
        assert "store up, 8 files" in shown and "backlog 0 files" in shown, shown
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    log = (tmp_path / "archive.log").read_text()
    assert "test-secret-value" not in log and "test-secret-value" not in str(snap)


def test_a_store_down_for_30_s_loses_nothing_and_the_backlog_drains(tmp_path: Path,
                                                                     store: Store) -> None:
    """The store stops while a relay caches at 1 kHz and rolls a file a second: the cache
    keeps every datagram, the archiver counts the backlog and the errors, and once the
    store is back everything is uploaded and verified."""
    from speeddata import Sender
    from tests.helpers import start_relay

    settings = relay_settings(tmp_path, cache={"rotate_seconds": 1.0}, archive={
        "endpoint": store.endpoint, "host": "rig1", "prefix": "site", "required": True})
    relay = start_relay(tmp_path, settings)
    cache = Path(settings["cache"]["dir"])
    process = start_archiver(relay.config_path, tmp_path)
    sent = 0
    try:
        sender = Sender(MOTOR, port=relay.port)

        def send_for(seconds: float) -> None:
            nonlocal sent
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for _ in range(50):
                    sender.send(speed=float(sent), torque=0.0, current=0.0, voltage=0.0,
                                position=0.0, temperature=0.0)
                    sent += 1
                time.sleep(0.05)

        send_for(3)
        wait_until(lambda: status.read_all(cache).get("archive", {}).get("archived_files"),
                   what="the first upload")
        store.stop()
        send_for(30)
        snap = status.read_all(cache)["archive"]
        assert snap["store"] == "down" and snap["errors"] >= 1 and snap["backlog_files"] >= 10
        store.start()
        send_for(2)
        sender.close()
        wait_until(lambda: relay.snapshot()["channels"]["motor"]["datagrams"] == sent,
                   what="every datagram at the relay")

        def drained() -> bool:
            snap = status.read_all(cache).get("archive", {})
            return snap.get("store") == "up" and snap.get("backlog_files") == 0
        wait_until(drained, timeout=60, what="the backlog drained")
    finally:
        relay.stop()
        process.send_signal(signal.SIGTERM)
        process.wait(TIMEOUT)
    # nothing lost in the cache, and every closed file is in the store, verified
    from speeddata.cache import reader

    speeds = [r["speed"] for _, r in reader.records(cache, "motor", 0, 2**62)]
    assert sorted(speeds) == [float(i) for i in range(sent)]
    found = objects(store)
    ledger = archive_ledger.Ledger(cache / archive_ledger.LEDGER)
    for f in scan(cache)[:-1]:
        relative = f.path.relative_to(cache).as_posix()
        entry = ledger.entries[relative]
        assert entry["md5"] == hashlib.md5(f.path.read_bytes()).hexdigest()
        assert found[entry["key"]]["Size"] == f.path.stat().st_size


def test_a_kill_in_the_middle_of_an_upload_uploads_the_file_once_complete(
        tmp_path: Path, store: Store) -> None:
    config = archive_settings(tmp_path, store)
    cache = build(config).cache.dir
    paths = fill(cache, 1, records=1_200_000)  # ~60 MB: the upload takes a while
    big = paths[0]
    process = start_archiver(config, tmp_path)
    wait_until(lambda: big.name in status.read_all(cache).get("archive", {})
               .get("uploading", ""), what="the upload under way")
    process.send_signal(signal.SIGKILL)
    process.wait(TIMEOUT)
    ledger = archive_ledger.Ledger(cache / archive_ledger.LEDGER)
    assert not ledger.holds(big.relative_to(cache).as_posix(), big.stat().st_size)
    process = start_archiver(config, tmp_path)  # the restart
    try:
        def done() -> bool:
            ledger.refresh()
            return ledger.holds(big.relative_to(cache).as_posix(), big.stat().st_size)
        wait_until(done, timeout=60, what="the file archived after the restart")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(TIMEOUT)
    key = f"site/rig1/motor/{big.name}"
    assert [k for k in objects(store) if k.endswith(big.name)] == [key]  # once
    lines = (cache / archive_ledger.LEDGER).read_text().splitlines()
    assert sum(big.name in line and ".idx" not in line for line in lines) == 1
    body = store.client().get_object(Bucket="speeddata", Key=key)["Body"].read()
    assert hashlib.md5(body).hexdigest() == hashlib.md5(big.read_bytes()).hexdigest()


def test_archive_without_an_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "speeddata", "archive", "--cache-dir",
                           str(tmp_path / "c")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "[archive] endpoint is empty" in done.stderr and "Traceback" not in done.stderr


def test_pivot_from_the_archive_merges_every_relay_host_exactly(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two relay hosts archive their own channels; a third host with no cache of its own
    pivots a range from the archive: every record in the range from both, none outside,
    fetched by ranged GETs (less than the files' size). A query of the archive gives
    the pivot's values."""
    import h5py

    from speeddata.times import format_time

    env = load_file(SCHEMAS / "env.avsc")
    hosts = {"rig1": (MOTOR, "speed"), "rig2": (env, "humidity")}
    expected: dict[str, list[float]] = {}
    start, end = 1_795_000_000 * S + 2 * S + S // 2, 1_795_000_000 * S + 3 * S + S // 2
    total = 0
    for host, (channel, signal_name) in hosts.items():
        cache = tmp_path / host / "cache"
        encoder = Encoder(channel)
        writer = CacheWriter(cache, 2**40, 1)
        values = []
        for block in range(50):  # 5 s in 100 ms blocks of 500 records; a file a second
            t = 1_795_000_000 * S + block * S // 10
            records = []
            for i in range(500):
                value = float(block * 500 + i)
                record = {"time": t + i, signal_name: value}
                for f in channel.signals:
                    record.setdefault(f.name, "IDLE" if f.kind != "number" else 0.0)
                records.append(encoder.encode(record)[10:])
                if start <= t <= end:
                    values.append(value)
            writer.append(channel, records, t)
            writer.roll_expired(t + S // 10)
        writer.close()
        expected[channel.name] = values
        total += sum(p.stat().st_size for p in cache.rglob("*.avro"))
        settings = relay_settings(tmp_path / host, archive={
            "endpoint": store.endpoint, "host": host, "prefix": "site"})
        config = write_file(tmp_path / f"{host}.toml", settings)
        process = start_archiver(config, tmp_path)
        try:
            wait_until(lambda cache=cache: (s := status.read_all(cache).get("archive", {}))
                       .get("archived_files", 0) > 0 and s.get("backlog_files") == 0,
                       what=f"{host}'s closed files archived")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(TIMEOUT)
    viewer = relay_settings(tmp_path / "viewer", archive={"endpoint": store.endpoint,
                                                          "prefix": "site"})
    config = write_file(tmp_path / "viewer.toml", viewer)
    done = subprocess.run(
        [sys.executable, "-m", "speeddata", "pivot", "--archive", "--start",
         format_time(start), "--end", format_time(end), "--config", str(config),
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
        env={"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "of 2 relay hosts (rig1, rig2) in the archive" in done.stdout, done.stdout
    fetched = float(done.stdout.split("blocks (")[1].split(" MiB")[0]) * 2**20
    assert fetched < total / 3  # a fifth of the data, by ranged GETs, not whole files
    (out,) = tmp_path.glob("*.h5")
    with h5py.File(out) as h5:
        assert sorted(h5) == ["env", "motor", "power"]  # power: the demo's derived channel
        motor = h5["motor"]
        assert h5["power"]["power"][()].tolist() == (
            motor["current"][()] * motor["voltage"][()]).tolist()  # from the archive's data
        assert h5["motor"]["speed"][()].tolist() == expected["motor"]
        assert h5["env"]["humidity"][()].tolist() == expected["env"]
    import speeddata

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    found = speeddata.query(start=format_time(start), end=format_time(end), config=config,
                            archive=True).read()
    written = speeddata.load(out)
    for name in ("motor", "env"):
        assert found[name].time.tolist() == written[name].time.tolist()
        for signal_name, values in written[name].columns.items():
            assert found[name][signal_name].tolist() == values.tolist(), signal_name


# -- integrity, order and closing: the plain parts -------------------------------------------

def test_the_ledger_keeps_each_files_sha256(tmp_path: Path) -> None:
    path = tmp_path / archive_ledger.LEDGER
    archive_ledger.Ledger(path).record("motor/a.avro", 10, "aa", "k/a", 1, sha256="ab" * 32)
    assert archive_ledger.Ledger(path).entries["motor/a.avro"]["sha256"] == "ab" * 32


def test_each_files_data_goes_up_before_its_index_and_summary(tmp_path: Path) -> None:
    from speeddata.cache.layout import summary_path

    cache = tmp_path / "cache"
    paths = fill(cache, 3)
    summary_path(paths[1]).write_bytes(b"npz")
    ledger = archive_ledger.Ledger(cache / archive_ledger.LEDGER)
    found = list(archive.pending(cache, scan(cache), ledger, growing=set()))
    grouped = archive.groups(found)
    assert [[r for _, r, _ in g] for g in grouped] == [
        [f"motor/{p.name}", f"motor/{p.stem}.idx"] + (
            [f"motor/{p.name}.sum.npz"] if p == paths[1] else []) for p in paths]
    # the data already archived: its index alone is a group, uploaded after it anyway
    first = paths[0]
    ledger.record(f"motor/{first.name}", first.stat().st_size, "x", "k", 0)
    assert archive.groups(archive.pending(cache, scan(cache), ledger, growing=set()))[0] == [
        (index_path(first), f"motor/{first.stem}.idx", index_path(first).stat().st_size)]
    assert archive.owner("exports/run1/motor.csv") == "exports/run1/motor.csv"


def test_the_newest_file_is_open_until_marked_closed_or_its_relay_is_gone(tmp_path: Path
                                                                         ) -> None:
    cache = tmp_path / "cache"
    writer = CacheWriter(cache, 2**40, 600, idle_seconds=5)
    body = Encoder(MOTOR).encode({"time": 1, "speed": 1.0, "torque": 0.0, "current": 0.0,
                                  "voltage": 0.0, "position": 0.0, "temperature": 0.0})[10:]
    t = 1_795_000_000 * S
    writer.append(MOTOR, [body], t)
    writer.roll_expired(t + 4 * S)  # quiet for 4 s: still open
    files = scan(cache)
    (newest,) = [f.path for f in files]
    assert archive.closed_marks(files) == {}
    assert archive.still_open(files, archive.closed_marks(files), {""}) == {newest}
    assert archive.still_open(files, {}, set()) == set()  # no relay runs: nothing grows
    assert archive.still_open(files, {}, {"2"}) == set()  # another worker's relay
    writer.roll_expired(t + 5 * S)  # 5 s without new data: closed and marked
    assert writer.statistics()["open_files"] == 0
    assert archive.closed_marks(files) == {("motor", ""): newest.name}
    assert archive.still_open(files, archive.closed_marks(files), {""}) == set()
    writer.append(MOTOR, [body], t + 6 * S)  # data again: a new file, open
    files = scan(cache)
    assert archive.still_open(files, archive.closed_marks(files), {""}) == {files[-1].path}
    writer.close()  # stopping closes and marks it too
    assert archive.closed_marks(scan(cache)) == {("motor", ""): files[-1].path.name}
    worker = CacheWriter(cache, 2**40, 600, worker=3)
    worker.append(MOTOR, [body], t + 7 * S)
    worker.close()
    assert (cache / "motor" / ".closed-w3").read_text().endswith("-w3.avro")


def test_a_relay_runs_while_its_process_lives_and_its_status_is_recent(tmp_path: Path
                                                                       ) -> None:
    cache = tmp_path / "cache"
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    now = time.time()
    status.write(cache, "relay", Snapshot("relay", os.getpid(), now, 0.0))
    status.write(cache, "relay-w2", Snapshot("relay", os.getpid(), now, 0.0))
    status.write(cache, "relay-w3", Snapshot("relay", gone.pid, now, 0.0))  # crashed
    status.write(cache, "relay-w4", Snapshot("relay", os.getpid(), now - 120, 0.0))  # hung
    status.write(cache, "archive", Snapshot("archive", os.getpid(), now, 0.0))
    (status.directory(cache) / "relay-w5.json").write_text("{torn")
    assert archive.relays_running(cache, now) == {"", "2"}


def test_block_checks_find_every_damaged_block_and_only_those(tmp_path: Path) -> None:
    from speeddata.cache import index

    cache = tmp_path / "cache"
    encoder = Encoder(MOTOR)
    writer = CacheWriter(cache, 2**40, 600)
    for b in range(4):
        body = encoder.encode({"time": b, "speed": float(b), "torque": 0.0, "current": 0.0,
                               "voltage": 0.0, "position": 0.0, "temperature": 0.0})[10:]
        writer.append(MOTOR, [body] * (10 + b), 1_795_000_000 * S + b)
    writer.close()
    (path,) = (cache / "motor").glob("*.avro")
    data = path.read_bytes()
    entries = index.unpack(index_path(path).read_bytes())
    sums = archive.parse_sums(archive.block_sums(data, entries))
    assert archive.digests(path, entries)[2] == archive.block_sums(data, entries)
    head, first = data[:entries[0].offset], entries[1].offset
    picked = entries[1:]
    body = data[first:]
    assert archive.damaged_blocks(head, body, first, picked, sums) == []
    flipped = bytearray(body)
    flipped[entries[2].offset - first + 30] ^= 1  # a value's byte: only a sum can tell
    assert archive.damaged_blocks(head, bytes(flipped), first, picked, sums) == [entries[2]]
    assert archive.damaged_blocks(head, bytes(flipped), first, picked, None) == []
    flipped = bytearray(body)
    flipped[entries[3].offset - first + entries[3].length - 1] ^= 1  # its sync marker
    assert archive.damaged_blocks(head, bytes(flipped), first, picked, None) == [entries[3]]
    flipped = bytearray(body)
    flipped[0] ^= 2  # the first picked block's count
    assert archive.damaged_blocks(head, bytes(flipped), first, picked, None) == [entries[1]]
    cut = body[:entries[2].offset - first + 5]  # truncated in the second picked block
    assert archive.damaged_blocks(head, cut, first, picked, sums) == entries[2:]
    bad_head = bytearray(head)
    bad_head[-1] ^= 1  # the header's sync marker: no block can be trusted
    assert archive.damaged_blocks(bytes(bad_head), body, first, picked, sums) == picked
    assert archive.damaged_blocks(head[:-3], body, first, picked, None) == picked
    with pytest.raises(ValueError):
        archive.parse_sums(b"x" * (archive.SUM.size + 1))


def test_an_index_is_checked_by_its_sha256_and_its_shape() -> None:
    from speeddata.cache import index

    good = b"".join(index.Entry(100 + 50 * i, 50, 3, i).pack() for i in range(3))
    sha = hashlib.sha256(good).hexdigest()
    assert archive.index_problem(good, sha) is None
    assert archive.index_problem(good, None) is None  # archived before sums: shape only
    assert "SHA-256" in archive.index_problem(good[:-5], sha)
    assert "truncated" in archive.index_problem(good[:-5], None)
    gap = good[:index.ENTRY_SIZE] + index.Entry(160, 50, 3, 1).pack()
    assert "block at byte 160" in archive.index_problem(gap, None)
    assert archive.index_problem(index.Entry(100, 50, 0, 1).pack(), None)  # no records


# -- integrity, order and closing: against the real store ------------------------------------

def archiver_in_process(tmp_path: Path, store: Store, **archive_extra: Any
                        ) -> archive.Archiver:
    return archive.Archiver(build(archive_settings(tmp_path, store, **archive_extra)),
                            store.client())


def replace_object(store: Store, key: str, change: Any) -> bytes:
    """Put ``change(body)`` in place of an object, its metadata (its SHA-256) kept: what
    a store that rots or loses bytes would serve. Returns the original."""
    s3 = store.client()
    got = s3.get_object(Bucket="speeddata", Key=key)
    body = got["Body"].read()
    s3.put_object(Bucket="speeddata", Key=key, Body=change(body), Metadata=got["Metadata"])
    return body


def test_a_quiet_channels_last_file_is_archived_while_its_relay_runs(tmp_path: Path,
                                                                     store: Store) -> None:
    archiver = archiver_in_process(tmp_path, store)
    cache = archiver.cache
    status.write(cache, "relay", Snapshot("relay", os.getpid(), time.time(), 0.0))  # it runs
    writer = CacheWriter(cache, 2**40, 600, idle_seconds=30)
    body = Encoder(MOTOR).encode({"time": 1, "speed": 1.0, "torque": 0.0, "current": 0.0,
                                  "voltage": 0.0, "position": 0.0, "temperature": 0.0})[10:]
    t = 1_795_000_000 * S
    writer.append(MOTOR, [body] * 10, t)
    (path,) = (cache / "motor").glob("*.avro")
    assert archiver.round() == 0  # open: it may still grow
    writer.roll_expired(t + 30 * S)  # the end of the test: quiet for 30 s
    assert archiver.round() == 2  # its data and its index
    assert archiver.ledger.holds(f"motor/{path.name}", path.stat().st_size)
    assert f"site/rig1/motor/{path.name}" in objects(store)


def test_an_index_never_reaches_the_store_before_its_data(tmp_path: Path, store: Store
                                                          ) -> None:
    """Four streams, forty small files: at each PUT of an index or a summary, its data is
    in the store already (asked of the store itself, at that moment)."""
    from speeddata.cache.layout import summary_path

    archiver = archiver_in_process(tmp_path, store, streams=4)
    paths = fill(archiver.cache, 39, records=20)
    for path in paths[::3]:
        summary_path(path).write_bytes(b"npz" * 100)
    archiver.ensure_bucket()
    probe = store.client()
    seen: list[str] = []
    early: list[str] = []

    def check(params: dict[str, Any], **_: Any) -> None:
        key = params["Key"]
        seen.append(key)
        if key.endswith((".idx", ".sum.npz", ".sha256")):
            data = key.removesuffix(".sum.npz").rsplit(".", 1)[0] + ".avro"
            try:
                probe.head_object(Bucket="speeddata", Key=data)
            except probe.exceptions.ClientError:
                early.append(key)

    archiver.s3.meta.events.register("before-parameter-build.s3.PutObject", check)
    assert archiver.round() == 2 * 40 + 14
    assert sum(k.endswith(".idx") for k in seen) == 40 and early == []
    lines = [json.loads(line)["path"] for line in
             (archiver.cache / archive_ledger.LEDGER).read_text().splitlines()]
    for path in paths:  # and the ledger says so
        assert lines.index(f"motor/{path.name}") < lines.index(f"motor/{path.stem}.idx")


def test_pivot_from_the_archive_reads_around_damage_and_counts_it_exactly(
        tmp_path: Path, store: Store) -> None:
    """Five archived files of four blocks of 50 records; in the store one gets a flipped
    byte, one is cut short, one loses its data, one its index's tail: each is one line
    naming it, the records not read are counted exactly, the rest is read whole. The
    pivot fails unless --partial, which exports the rest and says what is missing."""
    import h5py

    from speeddata.cache import reader
    from speeddata.times import format_time

    archiver = archiver_in_process(tmp_path, store)
    paths = fill(archiver.cache, 4, records=50, blocks=4)
    assert archiver.round() == 10
    key = {p: f"site/rig1/motor/{p.stem}" for p in paths}
    _intact, flipped, cut, lost, unindexed = paths

    def flip(body: bytes) -> bytes:  # a byte of a value in the third block
        from speeddata.cache import index

        third = index.unpack(index_path(flipped).read_bytes())[2]
        return body[:third.offset + 40] + bytes([body[third.offset + 40] ^ 1]) + \
            body[third.offset + 41:]

    replace_object(store, key[flipped] + ".avro", flip)
    replace_object(store, key[cut] + ".avro", lambda b: b[:len(b) * 5 // 8])  # in block 3
    store.client().delete_object(Bucket="speeddata", Key=key[lost] + ".avro")
    replace_object(store, key[unindexed] + ".idx", lambda b: b[:-7])
    start, end = 1_795_000_000 * S, 1_795_000_000 * S + 10 * S

    into = tmp_path / "fetched"
    fetched = archive.fetch_range(archiver.config, start, end, into, s3=store.client())
    assert fetched["records"] == 4 * 200  # as the intact indexes count them
    assert fetched["unread_records"] == 50 + 100 + 200  # a block, two blocks, a file
    assert fetched["unknown_files"] == 1 and fetched["refetched"] >= 2
    problems = fetched["problems"]
    assert len(problems) == 4, problems
    assert [p.split(":")[0] for p in problems] == [
        f"speeddata/{key[flipped]}.avro", f"speeddata/{key[cut]}.avro",
        f"speeddata/{key[lost]}.avro", f"speeddata/{key[unindexed]}.idx"]
    assert "damaged: 1 of 4 blocks" in problems[0] and "50 records" in problems[0]
    assert "truncated: the store holds" in problems[1] and "100 records" in problems[1]
    assert "missing from the store; 200 records" in problems[2]
    assert "their number unknown" in problems[3]
    assert all("\n" not in p for p in problems)
    speeds = [r["speed"] for _, r in reader.records(into, "motor", 0, 2**62)]
    assert len(speeds) == 800 - 350  # every block that came back whole, read
    assert sorted(set(speeds)) == [0.0, 1.0, 2.0]

    config = write_file(tmp_path / "viewer.toml", relay_settings(
        tmp_path / "viewer", archive={"endpoint": store.endpoint, "prefix": "site"}))
    argv = [sys.executable, "-m", "speeddata", "pivot", "--archive", "--start",
            format_time(start), "--end", format_time(end), "--config", str(config),
            "--out", str(tmp_path / "out")]
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "IndexError" not in done.stderr
    assert ("350 of 800 records in the range could not be read from the archive, and 1 files "
            "whose records could not even be counted: nothing exported") in done.stderr
    assert all(p in done.stderr for p in problems)
    assert not list((tmp_path / "out").glob("*.h5"))
    done = subprocess.run([*argv, "--partial"], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert "exporting the rest (--partial)" in done.stderr
    (out,) = (tmp_path / "out").glob("*.h5")
    with h5py.File(out) as h5:
        assert len(h5["motor"]["speed"]) == 450
        assert h5.attrs["archive_unread_records"] == 350
        assert h5.attrs["archive_unknown_files"] == 1


def test_a_refetch_reads_what_a_first_get_got_damaged(tmp_path: Path, store: Store) -> None:
    """A block that fails its sum once (damage on the way) is fetched again and read."""
    archiver = archiver_in_process(tmp_path, store)
    paths = fill(archiver.cache, 0, records=50, blocks=3)
    assert archiver.round() == 2
    key = f"site/rig1/motor/{paths[0].stem}.avro"
    original = replace_object(store, key, lambda b: b[:-20] + bytes([b[-20] ^ 1]) + b[-19:])
    s3 = store.client()
    blocks_got = []

    def heal_before_the_second(params: dict[str, Any], **_: Any) -> None:
        if params["Key"] == key and not params.get("Range", "").startswith("bytes=0-"):
            blocks_got.append(params["Range"])  # the first got the damage, the next not
            if len(blocks_got) == 2:
                replace_object(store, key, lambda _: original)

    s3.meta.events.register("before-parameter-build.s3.GetObject", heal_before_the_second)
    fetched = archive.fetch_range(archiver.config, 0, 2**62, tmp_path / "f", s3=s3)
    assert len(blocks_got) == 2 and fetched["refetched"] == 1
    assert fetched["problems"] == [] and fetched["unread_records"] == 0
    assert fetched["records"] == 150 and fetched["blocks"] == 3


def test_stopping_archives_the_last_file_of_every_channel(tmp_path: Path, store: Store
                                                          ) -> None:
    """A relay and its archiver stop together (as ./stop stops them): the file the relay
    still had open, quiet or not, is in the store when the archiver has exited."""
    from speeddata import Sender
    from tests.helpers import start_relay

    settings = relay_settings(tmp_path, archive={"endpoint": store.endpoint, "host": "rig1",
                                                 "prefix": "site"})
    relay = start_relay(tmp_path, settings)
    cache = Path(settings["cache"]["dir"])
    process = start_archiver(relay.config_path, tmp_path)
    try:
        sender = Sender(MOTOR, port=relay.port, probe=0)  # no clock series: data files only
        for i in range(100):
            sender.send(speed=float(i), torque=0.0, current=0.0, voltage=0.0, position=0.0,
                        temperature=0.0)
        sender.close()
        wait_until(lambda: relay.snapshot().get("channels", {}).get("motor", {})
                   .get("datagrams") == 100, what="the relay to cache 100 datagrams")
        wait_until(lambda: status.read_all(cache).get("archive", {}).get("store") == "up",
                   what="the archiver's first round")
        (path,) = (cache / "motor").glob("*.avro")
        time.sleep(archive.SCAN_SECONDS + 0.5)  # rounds go by: the open file waits
        assert archive_ledger.Ledger(cache / archive_ledger.LEDGER).entries == {}
    finally:
        process.send_signal(signal.SIGTERM)
        assert relay.stop() == 0
        assert process.wait(TIMEOUT) == 0
    ledger = archive_ledger.Ledger(cache / archive_ledger.LEDGER)
    for part in (path, index_path(path)):
        assert ledger.holds(part.relative_to(cache).as_posix(), part.stat().st_size)
    body = store.client().get_object(Bucket="speeddata", Key=f"site/rig1/motor/{path.name}")
    assert body["Body"].read() == path.read_bytes()
    assert "last round uploaded 2 files" in (tmp_path / "archive.log").read_text()


def test_any_flipped_byte_is_read_around_or_counted_never_silent(tmp_path: Path,
                                                                  store: Store) -> None:
    """Random single-byte flips in the data, index or sums of an archived file: the fetch
    either reads every record of the range or says exactly how many it did not."""
    import random

    from speeddata.cache import reader

    archiver = archiver_in_process(tmp_path, store)
    (path,) = fill(archiver.cache, 0, records=30, blocks=6)
    assert archiver.round() == 2
    base = f"site/rig1/motor/{path.stem}"
    chance = random.Random(20)
    for trial in range(15):
        key = base + chance.choice([".avro", ".avro", ".idx", ".sha256"])
        size = store.client().head_object(Bucket="speeddata", Key=key)["ContentLength"]
        at, bit = chance.randrange(size), 1 << chance.randrange(8)
        original = replace_object(store, key, lambda b, at=at, bit=bit: b[:at] + bytes(
            [b[at] ^ bit]) + b[at + 1:])
        into = tmp_path / f"t{trial}"
        fetched = archive.fetch_range(archiver.config, 0, 2**62, into, s3=store.client())
        read = sum(1 for _ in reader.records(into, "motor", 0, 2**62))
        said = f"{key} byte {at}: {fetched}"
        if fetched["unknown_files"]:
            assert key.endswith(".idx") and fetched["problems"], said
        else:
            assert fetched["records"] == 180, said
            assert read + fetched["unread_records"] == 180, said
            assert bool(fetched["problems"]) == bool(fetched["unread_records"]), said
        replace_object(store, key, lambda _, original=original: original)


def test_up_stopped_as_stop_does_leaves_nothing_unarchived(tmp_path: Path, store: Store
                                                           ) -> None:
    """``speeddata up`` with an archive, a channel's data, then SIGTERM to ``up`` (what
    ./stop sends): every cache file, the one the relay had open too, is archived."""
    from speeddata import Sender

    settings = relay_settings(tmp_path, archive={"endpoint": store.endpoint, "host": "rig1",
                                                 "prefix": "site"})
    config = write_file(tmp_path / "up.toml", settings)
    cache = Path(settings["cache"]["dir"])
    env = {"AWS_ACCESS_KEY_ID": "speeddata", "AWS_SECRET_ACCESS_KEY": "test",
           "PATH": "/usr/bin:/bin"}
    up = subprocess.Popen([sys.executable, "-m", "speeddata", "up", "--config", str(config)],
                          env=env, stdout=(tmp_path / "up.log").open("w"),
                          stderr=subprocess.STDOUT)
    try:
        snap = wait_until(lambda: status.all_running(cache, ("relay", "archive"))
                          and status.read_all(cache)["relay"], what="relay and archiver up")
        sender = Sender(MOTOR, port=int(snap["listen"].rsplit(":", 1)[1]))
        for i in range(50):
            sender.send(speed=float(i), torque=0.0, current=0.0, voltage=0.0, position=0.0,
                        temperature=0.0)
        sender.close()
        wait_until(lambda: status.read_all(cache)["relay"].get("channels", {})
                   .get("motor", {}).get("datagrams") == 50, what="50 datagrams cached")
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(TIMEOUT) == 0, (tmp_path / "up.log").read_text()
    ledger = archive_ledger.Ledger(cache / archive_ledger.LEDGER)
    files = scan(cache)
    assert files and all(archive_ledger.covered(ledger, cache)(f) for f in files)
    assert list(archive.pending(cache, files, ledger, growing=set())) == []
