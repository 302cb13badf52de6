"""A damaged cache (a file cut in half, one with 4 kB overwritten, one with a zeroed
header): pivot, replay and verify go on with the rest and say what they skipped."""

from __future__ import annotations

import io
import json
import os
import socket
import time
from pathlib import Path

import fastavro
import h5py
import pytest

from speeddata import cli, status
from speeddata.cache.check import Skipped
from speeddata.cache.layout import DAMAGED_DIR, index_path
from speeddata.pivot import pivot
from speeddata.replay import batches
from speeddata.snapshots import Snapshot
from speeddata.verify import check_file, verify
from tests.damage import REGISTRY, SECONDS, T0, Damaged, S, make, write_cache
from tests.helpers import SCHEMAS

START, END = "2026-11-18T11:06:40Z", "2026-11-18T11:08:00Z"  # T0 to after the last block


@pytest.fixture
def cache(tmp_path: Path) -> Damaged:
    return make(tmp_path)


def covers(skipped: list[dict], cache: Damaged) -> None:
    """Each damaged file is listed with a byte range that meets its damage."""
    for path, (start, end) in cache.ranges.items():
        name = str(path.relative_to(cache.cache))
        assert any(s["file"] == name and s["start"] < end and s["end"] > start
                   for s in skipped), (name, skipped)


def test_pivot_exports_the_rest_and_lists_what_it_skipped(cache: Damaged, tmp_path: Path
                                                         ) -> None:
    out = tmp_path / "run.h5"
    result = pivot(cache.cache, out, 0, T0 + SECONDS * S, registry=REGISTRY)
    assert result.records == len(cache.expected_speeds())
    assert result.skipped.records == cache.lost() > 0
    with h5py.File(out) as h5:
        assert h5["motor"]["speed"][()].tolist() == cache.expected_speeds()
        skipped = json.loads(h5.attrs["skipped"])
        assert h5.attrs["skipped_records"] == cache.lost()
    covers(skipped, cache)
    reasons = {s["file"]: s["reason"] for s in skipped}
    assert reasons[str(cache.kinds["zeroed"].relative_to(cache.cache))] == "header"
    assert all(s["records"] for s in skipped)


def test_a_directory_export_lists_what_it_skipped_too(cache: Damaged, tmp_path: Path) -> None:
    out = tmp_path / "run"
    pivot(cache.cache, out, 0, T0 + SECONDS * S, registry=REGISTRY, export_format="csv")
    described = json.loads((out / "export.json").read_text())
    covers(described["skipped"], cache)
    rows = (out / "motor.csv").read_text().splitlines()[1:]
    assert len(rows) == len(cache.expected_speeds())


def test_an_undamaged_export_says_it_skipped_nothing(tmp_path: Path) -> None:
    write_cache(tmp_path / "cache", seconds=3)
    pivot(tmp_path / "cache", tmp_path / "ok.h5", 0, T0 + 10 * S)
    with h5py.File(tmp_path / "ok.h5") as h5:
        assert json.loads(h5.attrs["skipped"]) == [] and h5.attrs["skipped_records"] == 0


def test_pivot_command_warns_with_each_skipped_range(cache: Damaged, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    code = cli.main(["pivot", "--start", START, "--end", END, "--cache-dir",
                     str(cache.cache), "--channels-dir", str(SCHEMAS), "--out",
                     str(tmp_path / "exports"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"{len(cache.expected_speeds())} records" in captured.out
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert f"({cache.lost()} records known lost) in 3 cache files" in warnings[0]
    for path in cache.kinds.values():
        assert any(str(path) in line for line in warnings)


def test_replay_sends_the_rest_and_notes_what_it_skipped(cache: Damaged) -> None:
    skipped = Skipped()
    speeds = [fastavro.schemaless_reader(io.BytesIO(d[10:]), REGISTRY["motor"].parsed, None)[
        "speed"] for _, datagrams in batches(cache.cache, 0, T0 + SECONDS * S, None, REGISTRY,
                                             skipped) for d in datagrams]
    assert speeds == cache.expected_speeds()
    assert skipped.records == cache.lost()
    covers(skipped.as_list(cache.cache), cache)


def test_replay_command_goes_on_and_warns(cache: Damaged, capsys: pytest.CaptureFixture
                                          ) -> None:
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target.bind(("127.0.0.1", 0))
    try:
        code = cli.main(["replay", "--start", START, "--end", END, "--max", "--to", "relay",
                         "--target", f"127.0.0.1:{target.getsockname()[1]}", "--cache-dir",
                         str(cache.cache), "--channels-dir", str(SCHEMAS)])
    finally:
        target.close()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"replayed {len(cache.expected_speeds())} datagrams" in captured.out
    assert "speeddata replay: warning: skipped" in captured.err
    assert str(cache.kinds["cut"]) in captured.err


def test_verify_finds_each_damage_kind(cache: Damaged) -> None:
    reasons = {kind: {d.reason for d in check_file(path, REGISTRY).damage}
               for kind, path in cache.kinds.items()}
    assert reasons["cut"] == {"missing"}
    assert reasons["zeroed"] == {"header"}
    assert reasons["overwritten"] and reasons["overwritten"] <= {"block", "decode", "index"}
    for path, (start, end) in cache.ranges.items():
        assert any(d.start < end and d.end > start for d in check_file(path).damage)
    whole = check_file(cache.files[0], REGISTRY)
    assert not whole.damage and whole.records == sum(e.count for e in cache.entries[
        cache.files[0]])
    verdict = verify(cache.cache, REGISTRY)
    assert [f.path for f in verdict.damaged] == [cache.files[1], cache.files[2],
                                                 cache.files[3]]
    row = verdict.channels()["motor"]
    assert row["files"] == 5 and row["damaged_files"] == 3
    assert row["records"] == len(cache.expected_speeds())


def test_verify_command_reports_repairs_and_exits_non_zero(cache: Damaged,
                                                           capsys: pytest.CaptureFixture
                                                           ) -> None:
    args = ["verify", "--cache-dir", str(cache.cache), "--channels-dir", str(SCHEMAS)]
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    for path in cache.ranges:
        assert f"damage: {path} bytes" in out
    assert "5 files checked, 3 damaged; 'speeddata verify --repair'" in out
    assert cli.main([*args, "--repair"]) == 1
    out = capsys.readouterr().out
    zeroed, cut = cache.kinds["zeroed"], cache.kinds["cut"]
    assert f"moved to {zeroed.parent / DAMAGED_DIR / zeroed.name}" in out
    assert "cut " in out and "torn bytes" in out
    assert not zeroed.exists() and (zeroed.parent / DAMAGED_DIR / zeroed.name).exists()
    kept = index_path(cut).read_bytes()
    assert kept and len(kept) < len(b"".join(e.pack() for e in cache.entries[cut]))
    # what stays: the overwritten blocks (their data is gone; readers skip them)
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert "4 files checked, 1 damaged" in out
    assert "1 file moved aside earlier" in out
    assert f"damage: {cache.kinds['overwritten']}" in out


def test_verify_repairs_no_file_a_running_relay_may_write(cache: Damaged) -> None:
    newest = cache.files[-1]
    with newest.open("ab") as f:
        f.write(b"\x10\x80\x01half a block")  # as if a block were being written now
    before = newest.read_bytes()
    status.write(cache.cache, "relay", Snapshot("relay", os.getpid(), time.time(), 0.0))
    verdict = verify(cache.cache, REGISTRY, fix=True,
                     relay_running=status.all_running(cache.cache, ("relay",)))
    assert newest not in [f.path for f in verdict.damaged]  # a growing end is no damage
    assert newest.read_bytes() == before
    assert not cache.kinds["zeroed"].exists()  # the closed files are repaired


def test_verify_of_a_whole_cache_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture
                                            ) -> None:
    write_cache(tmp_path / "cache", seconds=30)
    code = cli.main(["verify", "--cache-dir", str(tmp_path / "cache"), "--channels-dir",
                     str(SCHEMAS)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 files checked, 0 damaged" in out and "3000" in out
