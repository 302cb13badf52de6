"""/api/range over a damaged cache, in process: every answer 200, with what was skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from speeddata import cli, status
from speeddata.config import build
from speeddata.stripchart.app import create_app
from tests.damage import PER_BLOCK, SECONDS, T0, Damaged, make
from tests.helpers import SCHEMAS

MS = 10**6


def app_for(cache: Path, tmp: Path) -> TestClient:
    """The server's app without its lifespan: it joins no group and writes no status."""
    config = build(None, {("cache", "dir"): cache, ("channels", "dir"): SCHEMAS,
                          ("exports", "dir"): tmp / "exports", ("web", "host"): "127.0.0.1",
                          ("web", "port"): 0})
    return TestClient(create_app(config), base_url="http://127.0.0.1")


def test_every_range_over_damaged_files_answers_200_and_says_what_it_skipped(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    damaged: Damaged = make(tmp_path)
    client = app_for(damaged.cache, tmp_path)
    first, last = T0 // MS, (T0 + SECONDS * 10**9) // MS
    names = {str(p.relative_to(damaged.cache)) for p in damaged.kinds.values()}
    answers = 0
    for start in range(first - 5000, last, 3700):
        for span in (150, 2_000, 30_000, 120_000):
            for columns in (1, 300, 1000):
                got = client.get("/api/range", params={
                    "signal": "motor.speed", "start_ms": start, "end_ms": start + span,
                    "columns": columns})
                assert got.status_code == 200, got.text
                answers += 1
                body = got.json()
                assert all(s["file"] in names for s in body["skipped"])
    assert answers == 180
    whole = client.get("/api/range", params={"signal": "motor.speed", "start_ms": first,
                                             "end_ms": last, "columns": 5000}).json()
    assert {s["file"] for s in whole["skipped"]} == names
    assert sum(whole["count"]) == len(damaged.expected_speeds())
    # samples from intact blocks only: each speed is the one the source sent
    assert set(whole["max"]) <= {float(v) for v in range(SECONDS * PER_BLOCK)}
    server = client.app.state.server
    damage = server.statistics().cache_damage
    assert damage.files == 3 and damage.records == damaged.lost()
    status.write(damaged.cache, "serve", server.statistics())  # as its status task does
    cli.main(["status", "--cache-dir", str(damaged.cache)])
    assert (f"cache damage skipped by scroll-back: {damage.blocks} blocks "
            f"({damaged.lost()} records) in 3 files") in capsys.readouterr().out


def test_a_range_of_whole_files_skips_nothing(tmp_path: Path) -> None:
    damaged = make(tmp_path)
    client = app_for(damaged.cache, tmp_path)
    body = client.get("/api/range", params={"signal": "motor.speed", "start_ms": T0 // MS,
                                            "end_ms": T0 // MS + 9_000}).json()
    assert body["skipped"] == [] and sum(body["count"]) == 9 * PER_BLOCK
