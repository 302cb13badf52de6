"""``speeddata up``'s children: the command line each is started with (a pure function of
``up``'s parsed flags), with no process started."""

from __future__ import annotations

from pathlib import Path

from speeddata import cli
from speeddata.supervisor import child_argv

PY = "/opt/sd/bin/python"


def test_a_child_gets_the_config_file_and_the_flags_of_its_sections_only() -> None:
    flags = {"command": "up", "verbose": 1, "quiet": False, "demo": True,
             "config": Path("/etc/sd.toml"), "cfg__web__port": "9000",
             "cfg__cache__rotate_bytes": "64MiB", "cfg__relay__workers": "2"}
    assert child_argv("relay", ("cache", "relay"), flags, Path("/etc/sd.toml"), PY) == [
        PY, "-m", "speeddata", "relay", "--config", "/etc/sd.toml",
        "--cache-rotate-bytes", "64MiB", "--relay-workers", "2"]
    assert child_argv("serve", ("cache", "web"), flags, None, PY) == [
        PY, "-m", "speeddata", "serve", "--web-port", "9000", "--cache-rotate-bytes", "64MiB"]
    assert child_argv("demo", ("channels",), flags, None, PY) == [
        PY, "-m", "speeddata", "demo"]  # neither -v nor --demo: those are up's own


def test_the_children_of_a_parsed_up_take_what_their_commands_declare() -> None:
    args = cli.parser().parse_args(["up", "--demo", "--web-port", "9000", "--relay-port",
                                    "27000", "--relay-workers", "2", "--config", "sd.toml"])
    argv = {name: child_argv(name, cli.SECTIONS_OF[name], vars(args), args.config, PY)[3:]
            for name in ("relay", "serve", "demo", "archive")}
    assert argv == {
        "relay": ["relay", "--config", "sd.toml", "--relay-port", "27000",
                  "--relay-workers", "2"],
        "serve": ["serve", "--config", "sd.toml", "--web-port", "9000"],
        "demo": ["demo", "--config", "sd.toml", "--relay-port", "27000",
                 "--relay-workers", "2"],
        "archive": ["archive", "--config", "sd.toml"],
    }
