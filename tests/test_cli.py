"""The command registry (speeddata/cli/): every command declared once, with its help and
its arguments beside it, listed in ``speeddata --help``'s order."""

from __future__ import annotations

import pytest

from speeddata import cli


def test_every_registered_command_is_listed_in_the_order() -> None:
    assert sorted(cli.COMMANDS) == sorted(cli.ORDER)
    assert list(cli.SECTIONS_OF) == list(cli.COMMANDS)


@pytest.mark.parametrize("name", cli.ORDER)
def test_each_command_has_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([name, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: speeddata {name} ")
    assert " ".join(cli.COMMANDS[name].help.split()) in " ".join(out.split())


def test_a_wrong_flag_is_one_line_after_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["tags", "--bogus"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[1:] == [
        "speeddata: error: unrecognized arguments: --bogus"]
