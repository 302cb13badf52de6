"""Progress bars of long pivots and queries: on a terminal a tqdm bar on stderr that
reaches every record of the range; none when stderr is not a terminal or with --quiet."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from speeddata.cli import main
from speeddata.config import write_file
from speeddata.times import format_time
from tests.helpers import relay_settings
from tests.test_archive import fill

S = 10**9
T0 = 1_795_000_000 * S


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _cache(tmp_path: Path) -> list[str]:
    fill(tmp_path / "cache", 3, records=500, start_ns=T0, blocks=4)  # 4 files of 2000
    config = write_file(tmp_path / "c.toml", relay_settings(tmp_path))
    return ["--start", format_time(T0), "--end", format_time(T0 + 10 * S), "--config",
            str(config)]


@pytest.mark.parametrize("command", [["pivot", "--force"],
                                     ["query", "--sql", "select count(*) from motor"]])
def test_a_bar_on_a_terminal_counts_every_record(tmp_path: Path, command: list[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    flags = _cache(tmp_path)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert main([*command, *flags]) == 0
    shown = sys.stderr.getvalue()
    assert "100%" in shown and "8.00k/8.00k" in shown, shown  # 4 files of 2000 records
    assert ("rec" in shown) and (command[0] != "query" or "query" in shown)


@pytest.mark.parametrize("terminal,quiet", [(False, False), (True, True)])
def test_no_bar_off_a_terminal_or_with_quiet(tmp_path: Path, terminal: bool, quiet: bool,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    flags = _cache(tmp_path)
    err = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    for command in (["pivot", "--force"], ["query", "--sql", "select count(*) from motor"]):
        assert main([*command, *flags, *(["--quiet"] if quiet else [])]) == 0
    assert "%|" not in err.getvalue() and "rec/s" not in err.getvalue(), err.getvalue()
