"""``speeddata query --sql``: DuckDB over a range, each channel a table; the result as a
table, CSV or Parquet; a bad statement is a one-line error and exit code 2."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import speeddata
from speeddata import cli
from speeddata.pivot import pivot
from speeddata.tags import TagStore
from speeddata.times import format_time
from tests.helpers import SCHEMAS
from tests.test_pivot import REGISTRY, T0, S, fill


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    fill(tmp_path / "cache")
    TagStore(tmp_path / "cache").add("run42", T0 + 10 * S, T0 + 19 * S)
    return tmp_path / "cache"


def run(cache: Path, *args: str) -> list[str]:
    return ["query", "--cache-dir", str(cache), "--channels-dir", str(SCHEMAS), *args]


def test_sql_over_a_tag_prints_a_table(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(run(cache, "--tag", "run42", "--sql",
                        "select count(*) as n, min(speed) as lo, max(speed) as hi, "
                        "min(time) as first from motor")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["n", "lo", "hi", "first"]
    assert lines[2].split()[:3] == ["100", "100.0", "199.0"]
    assert lines[2].split(maxsplit=3)[3] == "2026-11-18 11:06:50.000000000Z"


def test_channels_join_and_a_self_join_reads_into_memory(
        cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    join = ("select e.state, count(*) as n from motor m join env e on m.receive_time = "
            "e.receive_time group by e.state order by e.state")
    assert cli.main(run(cache, "--tag", "run42", "--sql", join)) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()[2:]] == [
        ["FAULT", "30"], ["IDLE", "30"], ["RUNNING", "40"]]
    twice = "select count(*) as n from env a join env b on a.time < b.time"
    assert cli.main(run(cache, "--tag", "run42", "--sql", twice)) == 0
    assert capsys.readouterr().out.splitlines()[2].strip() == "45"


def test_csv_and_parquet_hold_the_pivots_values(cache: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    pivot(cache, tmp_path / "run.h5", T0 + 10 * S, T0 + 19 * S, registry=REGISTRY)
    written = speeddata.load(tmp_path / "run.h5")["motor"]
    statement = "select * from motor order by time"
    out_csv, out_parquet = tmp_path / "m.csv", tmp_path / "m.parquet"
    assert cli.main(run(cache, "--tag", "run42", "--sql", statement, "--csv",
                        str(out_csv))) == 0
    assert cli.main(run(cache, "--start", format_time(T0 + 10 * S), "--end",
                        format_time(T0 + 19 * S), "--sql", statement, "--parquet",
                        str(out_parquet))) == 0
    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["speed"]) for r in rows] == written["speed"].tolist()
    table = pq.read_table(out_parquet)
    assert table.column("time").cast("int64").to_pylist() == written.time.tolist()
    for name, values in written.columns.items():
        assert np.array_equal(table.column(name).to_numpy(), values), name


def test_a_bad_statement_is_one_line_and_exit_2(
        cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(run(cache, "--tag", "run42", "--sql", "selec 1")) == 2
    err = capsys.readouterr().err
    assert err.startswith("speeddata query: error: Parser Error") and "Traceback" not in err
    assert cli.main(run(cache, "--tag", "run42", "--sql", "select nope from motor")) == 2
    assert "nope" in capsys.readouterr().err
    out = tmp_path / "x.csv"
    assert cli.main(run(cache, "--tag", "run42", "--sql", "select 1/0 from nowhere",
                        "--csv", str(out))) == 2
    assert not out.exists()
    assert cli.main(run(cache, "--tag", "nope", "--sql", "select 1")) == 2
    assert "no tag named 'nope'" in capsys.readouterr().err


def test_without_sql_it_lists_the_tables(cache: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(run(cache, "--tag", "run42")) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["motor"].startswith("time timestamp[ns, tz=UTC], receive_time")
    assert "state string" in lines["env"]
