"""Scroll-back's view of the cache forgets the files retention deletes (issue 21)."""

from __future__ import annotations

from pathlib import Path

from speeddata.cache.catalogue import Catalogue
from speeddata.cache.layout import summary_path
from speeddata.stripchart.scrollback import CacheView
from tests.cache.test_summary import T0, registry, write_cache


def test_files_retention_deletes_are_forgotten(tmp_path: Path) -> None:
    write_cache(tmp_path, 240.0)  # four files of a minute
    first = sorted((tmp_path / "motor").glob("*.idx"))[0]
    bad = tmp_path / "motor" / "20261118T110000.000000Z.avro"  # the oldest, unreadable
    bad.write_bytes(b"not avro")
    bad.with_suffix(".idx").write_bytes(first.read_bytes())
    view = CacheView(tmp_path, registry())
    view.catch_up(budget_s=60)
    view.columns("motor", "speed", T0, T0 + 240 * 10**9, 100)
    assert view.statistics()["files_known"] == 5
    catalogue = Catalogue(tmp_path, protected=lambda: [])
    oldest = [f.path for f in catalogue.files(["motor"])[:2]]
    assert oldest[0] == bad
    for _ in oldest:  # retention: the two oldest go
        catalogue.enforce(catalogue.size() - 1, set())
    assert not any(p.exists() for p in oldest)
    view.catch_up(budget_s=60)
    assert view.statistics() == {"files_known": 3, "summaries_made": 3, "files_forgotten": 2}
    assert view.skipped.statistics()  # the damage it met stays counted
    got = view.columns("motor", "speed", T0, T0 + 240 * 10**9, 100)
    assert got.skipped == [] and got.start_ns[0] >= T0 + 60 * 10**9


def test_a_file_deleted_between_listing_and_reading_is_no_damage(tmp_path: Path) -> None:
    """Retention deletes a file's data before its index: a query that listed it just
    before finds the index and no data. Before, the file was counted as damaged (its
    header unreadable) and kept as such."""
    write_cache(tmp_path, 180.0)
    view = CacheView(tmp_path, registry())
    listed = view.catalogue.files(["motor"])
    listed[0].path.unlink()  # retention, halfway through
    assert view._summary(listed[0], False, ()) is None
    # and a file whose header it read already, deleted before its summary is made
    view.columns("motor", "speed", T0 + 60 * 10**9, T0 + 180 * 10**9, 10)
    summary_path(listed[1].path).unlink()
    listed[1].path.unlink()
    assert view._summary(listed[1], False, ()) is None
    assert not summary_path(listed[1].path).exists()  # no summary of a deleted file
    assert not view.skipped
