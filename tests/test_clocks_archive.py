"""The clock offset series' lifetime: retention deletes a day's file once no cached data
needs it (kept until archived when that is required), the archive uploads the files
(today's again as it grows, at most once a minute), and ``pivot --archive --clock
corrected`` corrects from the store's copy (real SeaweedFS); stray entries on disk and
bad objects in the store are counted, never raised."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from speeddata import status
from speeddata.cache import ledger as archive_ledger
from speeddata.cache.catalogue import Catalogue
from speeddata.cache.clocks import (
    DAY_NS,
    DIR,
    OffsetLog,
    day_files,
    day_of,
    day_path,
    stale_days,
)
from speeddata.cache.layout import index_path
from speeddata.cache.store import CacheWriter
from speeddata.config import write_file
from speeddata.schemas import load_file
from speeddata.sender import Encoder
from tests.harness.store import Store
from tests.helpers import SCHEMAS, TIMEOUT, relay_settings, wait_until

MOTOR = load_file(SCHEMAS / "motor.avsc")
S = 10**9
DAY = 1_795_000_000 * S // DAY_NS * DAY_NS  # 2026-11-18 00:00 UTC
AHEAD_NS = 3_200_000_000


def write_days(cache: Path, days: list[int]) -> list[Path]:
    """A motor file at noon of each of ``days`` (relative to DAY), whose records' times
    are 3.2 s ahead of their receive time; the last one is the newest file."""
    encoder = Encoder(MOTOR)
    writer = CacheWriter(cache, 2**40, 1)
    for d in days:
        t = DAY + d * DAY_NS + DAY_NS // 2
        bodies = [encoder.encode({"time": t + AHEAD_NS + i, "speed": float(i), "torque": 0.0,
                                  "current": 0.0, "voltage": 0.0, "position": 0.0,
                                  "temperature": 0.0})[10:] for i in range(10)]
        writer.append(MOTOR, bodies, t)
        writer.roll_expired(t + S)
    writer.close()
    return sorted((cache / "motor").glob("*.avro"))


def write_offsets(cache: Path, days: list[int]) -> None:
    OffsetLog(cache, every_ns=0).write(
        [(DAY + d * DAY_NS + h * 3600 * S, "10.0.0.5:4000", "motor", AHEAD_NS, 100_000)
         for d in days for h in (0, 12, 23)])


def test_day_files_are_strictly_named_and_anything_else_is_counted(tmp_path: Path) -> None:
    write_offsets(tmp_path, [-2, 0])
    folder = tmp_path / DIR
    (folder / "notes.txt").write_text("x")
    (folder / "2026-1-5.csv").write_text("x")  # not as the relay names a day
    (folder / "2026-11-10.csv").mkdir()  # a folder of a day's name
    (folder / "2026-11-11.csv").symlink_to("/etc/hostname")  # a link out of the cache
    found, other = day_files(tmp_path)
    assert [day for day, _ in found] == [DAY - 2 * DAY_NS, DAY]
    assert other == 4
    assert day_of("2026-11-18.csv") == DAY and day_of("2026-02-30.csv") is None
    assert day_of(day_path(tmp_path, DAY + 5).name) == DAY
    # the day before the oldest data's is read for the point before a range: kept
    days = [DAY + d * DAY_NS for d in range(-5, 1)]
    assert stale_days(days, DAY + DAY_NS // 2) == days[:4]
    assert day_files(tmp_path / "nowhere") == ([], 0)


def test_retention_deletes_the_clock_days_older_than_all_data(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    paths = write_days(cache, [-4, -3, 0])
    write_offsets(cache, list(range(-6, 1)))
    (cache / DIR / "notes.txt").write_text("a stray file: left alone")
    catalogue = Catalogue(cache)
    doomed = catalogue.enforce(1, set())  # all but the newest file go
    assert [f.path for f in doomed] == paths[:2]
    left = [day for day, _ in day_files(cache)[0]]
    assert left == [DAY - DAY_NS, DAY]  # the day before the oldest data (day 0), and it
    assert (catalogue.deleted_clock_files, catalogue.other_clock_entries) == (5, 1)
    assert (cache / DIR / "notes.txt").exists()


def test_retention_required_keeps_the_clock_days_not_archived(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    paths = write_days(cache, [-4, -3, 0])
    write_offsets(cache, [-6, -5, -4])
    ledger = archive_ledger.Ledger(cache / archive_ledger.LEDGER)
    archived = [*paths[:2], index_path(paths[0]), index_path(paths[1]),
                day_path(cache, DAY - 5 * DAY_NS)]
    for p in archived:
        ledger.record(p.relative_to(cache).as_posix(), p.stat().st_size, "x", "k", 0)
    doomed = Catalogue(cache).enforce(1, set(), archive_ledger.covered(ledger, cache))
    assert [f.path for f in doomed] == paths[:2]
    assert [day for day, _ in day_files(cache)[0]] == [DAY - 6 * DAY_NS, DAY - 4 * DAY_NS]


def test_a_past_day_goes_up_once_and_today_again_as_it_grows(tmp_path: Path) -> None:
    from speeddata.archive.upload import CLOCKS_EVERY_NS, pending_clocks

    write_offsets(tmp_path, [-1, 0])
    ledger = archive_ledger.Ledger(tmp_path / archive_ledger.LEDGER)
    now = DAY + DAY_NS // 2
    found = list(pending_clocks(tmp_path, ledger, now))
    assert [r for _, r, _ in found] == [".clocks/2026-11-17.csv", ".clocks/2026-11-18.csv"]
    for _, relative, size in found:
        ledger.record(relative, size, "x", "k", now)
    assert list(pending_clocks(tmp_path, ledger, now)) == []
    write_offsets(tmp_path, [-1, 0])  # both grow (a late line, and today's)
    soon = [r for _, r, _ in pending_clocks(tmp_path, ledger, now + S)]
    assert soon == [".clocks/2026-11-17.csv"]  # a past day at once; today waits a minute
    later = [r for _, r, _ in pending_clocks(tmp_path, ledger, now + CLOCKS_EVERY_NS)]
    assert later == [".clocks/2026-11-17.csv", ".clocks/2026-11-18.csv"]


@pytest.mark.e2e
def test_pivot_from_the_archive_corrects_with_the_stores_offsets(tmp_path: Path,
                                                                  store: Store) -> None:
    """A relay host's data and offsets go up; another host with no cache pivots from the
    store with ``--clock corrected``: its records on the relay's clock. A second host's
    series that fails its SHA-256 in the store is left out and logged, not fatal."""
    import h5py

    from speeddata.times import format_time
    from tests.test_archive import start_archiver

    cache = tmp_path / "rig1" / "cache"
    write_days(cache, [-1, 0, 1])  # the newest (day 1) waits: it may grow
    write_offsets(cache, [-1, 0])
    settings = relay_settings(tmp_path / "rig1", archive={
        "endpoint": store.endpoint, "host": "rig1", "prefix": "site"})
    config = write_file(tmp_path / "rig1.toml", settings)
    process = start_archiver(config, tmp_path)
    try:
        wait_until(lambda: (s := status.read_all(cache).get("archive", {}))
                   .get("archived_files", 0) >= 6 and s.get("backlog_files") == 0,
                   what="rig1's closed files and its offsets archived")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(TIMEOUT)
    s3 = store.client()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="speeddata",
                                                 Prefix="site/").get("Contents", [])}
    assert {"site/rig1/.clocks/2026-11-17.csv", "site/rig1/.clocks/2026-11-18.csv"} <= keys
    s3.put_object(Bucket="speeddata", Key="site/rig2/.clocks/2026-11-18.csv",
                  Body=f"{DAY},10.0.0.9:1,motor,{-AHEAD_NS},1\n".encode(),
                  Metadata={"sha256": "0" * 64})  # a forged or damaged series
    viewer = write_file(tmp_path / "viewer.toml", relay_settings(
        tmp_path / "viewer", archive={"endpoint": store.endpoint, "prefix": "site"}))
    start, end = DAY, DAY + DAY_NS - 1
    done = subprocess.run(
        [sys.executable, "-m", "speeddata", "pivot", "--archive", "--start",
         format_time(start), "--end", format_time(end), "--clock", "corrected", "--config",
         str(viewer), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    assert done.returncode == 0, done.stderr
    assert "rig2/.clocks/2026-11-18.csv: clock offset series fails its SHA-256" in done.stderr
    (out,) = (tmp_path / "out").glob("*.h5")
    with h5py.File(out) as h5:
        motor = h5["motor"]
        noon = DAY + DAY_NS // 2
        assert motor["time"][()].tolist() == [noon + i for i in range(10)]  # 3.2 s less
        assert motor.attrs["clock"] == "corrected"
        assert motor["clock"]["source"].asstr()[()].tolist() == ["10.0.0.5:4000"] * 3
