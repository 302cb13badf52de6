"""Retention that need not scan: a running total under quota skips the round, a changed
directory or a total near quota scans, and a rescan reads only files not seen closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from speeddata.cache import catalogue
from speeddata.cache.catalogue import Catalogue, RetentionGate, dir_signature, scan
from speeddata.cache.store import CacheWriter
from tests.cache.test_store import EXAMPLE, T0, bodies

S = 10**9


def test_the_gate_scans_first_then_only_near_quota_or_on_a_change() -> None:
    gate = RetentionGate(near=0.9, full_scan_seconds=600)
    assert gate.due(1000, ("a",), now=0.0, written=0)  # nothing known yet
    gate.scanned(500, ("a",), now=0.0, written=0)
    assert not gate.due(1000, ("a",), now=10.0, written=300)  # 800 < 900
    assert gate.estimate() == 800
    assert gate.due(1000, ("a",), now=20.0, written=400)  # 900: near the quota
    assert gate.due(1000, ("b",), now=20.0, written=0)  # another process changed it
    assert gate.due(1000, ("a",), now=600.0, written=0)  # and a full scan now and then
    gate.scanned(600, ("a",), now=600.0, written=400)
    assert not gate.due(1000, ("a",), now=610.0, written=500)
    assert gate.statistics() == {"estimated_bytes": 700, "scans": 2, "scans_skipped": 2}


def test_the_signature_changes_when_a_file_comes_or_goes(tmp_path: Path) -> None:
    (tmp_path / "motor").mkdir()
    before = dir_signature(tmp_path)
    (tmp_path / ".status").mkdir()  # status files, rewritten every second: not data
    (tmp_path / ".status" / "relay.json").write_text("{}")
    assert dir_signature(tmp_path) == before
    (tmp_path / "motor" / "x.avro").write_bytes(b"")
    assert dir_signature(tmp_path) != before
    assert dir_signature(tmp_path / "missing") == ()


def test_a_rescan_reads_only_files_it_has_not_seen_closed(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    cache = tmp_path / "cache"
    writer = CacheWriter(cache, rotate_bytes=10**9, rotate_seconds=1)
    for i in range(3):  # three files of one channel: two closed, the newest open
        writer.append(EXAMPLE, bodies(i * 10, 10), T0 + i * 2 * S)
    known: dict = {}
    first = scan(cache, known=known)
    assert len(first) == 3 and set(known) == {f.path for f in first[:2]}
    read = []
    real = catalogue._last_entry
    monkeypatch.setattr(catalogue, "_last_entry", lambda idx: read.append(idx) or real(idx))
    again = scan(cache, known=known)
    assert again == first and len(read) == 1  # only the open file was read again
    writer.close()


def test_enforce_leaves_its_running_total(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    writer = CacheWriter(cache, rotate_bytes=10**9, rotate_seconds=1)
    for i in range(3):
        writer.append(EXAMPLE, bodies(i * 10, 10), T0 + i * 2 * S)
    writer.close()
    cat = Catalogue(cache)
    sizes = [f.size for f in cat.files()]
    assert cat.enforce(10**9, set(), remember=True) == [] and cat.total == sum(sizes)
    doomed = cat.enforce(sum(sizes) - 1, set(), remember=True)
    assert [f.size for f in doomed] == sizes[:1] and cat.total == sum(sizes[1:])
    assert all(f.path not in cat.closed for f in doomed)
