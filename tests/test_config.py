from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from speeddata import config, configvalues
from speeddata.errors import ConfigError
from tests.helpers import PROJECT


def test_defaults_need_no_file() -> None:
    cfg = config.build()
    assert cfg.relay.port == 26000
    assert cfg.relay.host == "0.0.0.0"
    assert str(cfg.multicast.full).startswith("239.")
    assert cfg.multicast.ttl == 1
    assert cfg.cache.rotate_bytes == 64 * 2**20
    assert cfg.cache.rotate_seconds == 600
    assert cfg.multicast.decimated_rate_hz == 50
    assert cfg.legacy_ports() == {"example": 26000}


def test_toml_then_flags_override_in_that_order(tmp_path: Path) -> None:
    path = tmp_path / "sd.toml"
    path.write_text('[relay]\nport = 27000\n[cache]\ndir = "here"\nrotate_bytes = "1MiB"\n'
                    '[multicast]\nfull = "239.1.1.1:6000"\ndecimated = ""\n')
    cfg = config.build(path, {("relay", "port"): "28000"})
    assert cfg.relay.port == 28000
    assert cfg.cache.dir == tmp_path / "here"  # relative to the config file
    assert cfg.cache.rotate_bytes == 2**20
    assert cfg.multicast.full == config.Group("239.1.1.1", 6000)
    assert cfg.multicast.decimated is None


def test_environment_variable_names_the_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "sd.toml"
    path.write_text("[web]\nport = 9999\n")
    monkeypatch.setenv("SPEEDDATA_CONFIG", str(path))
    assert config.build().web.port == 9999


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[relay]\nprot = 1\n", "unknown key [relay] prot"),
        ("[relais]\nport = 1\n", "unknown section [relais]"),
        ("[relay]\nport = 'x'\n", "[relay] port = 'x'"),
        ("[multicast]\nfull = '10.0.0.1:5'\n", "[multicast] full"),
        ("[cache]\nrotate_bytes = '12 parsecs'\n", "[cache] rotate_bytes"),
        ("[channels]\nlegacy = ['example:notaport']\n", "[channels] legacy"),
        ("[relay\n", "not valid TOML"),
        # values that were accepted and then broke something, or ended in a traceback
        ("[cache]\nfsync_seconds = nan\n", "[cache] fsync_seconds = nan: must be a finite"),
        ("[cache]\nfsync_seconds = inf\n", "[cache] fsync_seconds"),
        ("[cache]\nrotate_seconds = nan\n", "[cache] rotate_seconds"),
        ("[cache]\nrotate_bytes = 0\n", "[cache] rotate_bytes = 0: must be from 1024"),
        ("[relay]\nmax_datagram = 0\n", "[relay] max_datagram"),
        ("[relay]\nmax_datagram = -5\n", "[relay] max_datagram"),
        ("[relay]\nbatch = 1e9\n", "[relay] batch = 1000000000.0: must be from 1 to 4096"),
        ("[relay]\nhost = '999.1.1.1'\n", "[relay] host = '999.1.1.1': '999.1.1.1' is not an"),
        ("[multicast]\nttl = 300\n", "[multicast] ttl"),
        ("[multicast]\ninterface = 'eth0'\n", "ip -4 addr show NAME"),
        ("[multicast]\ninterface = '::1'\n", "[multicast] interface: must be an IPv4"),
        ("[web]\nframe_hz = inf\n", "[web] frame_hz"),
        ("[web]\nframe_hz = nan\n", "[web] frame_hz"),
        ("[web]\nhistory_seconds = 1e12\n", "[web] history_seconds"),
        ("[relay]\nallow = ['192.168.1.300/24']\n", "[relay] allow"),
        ("[web]\ndetail_seconds = 900\nhistory_seconds = 600\n", "[web] detail_seconds"),
        ("[relay]\nport = '26O00'\n", "[relay] port = '26O00': expected a whole number"),
        ("[web]\nframe_hz = 'fast'\n", "[web] frame_hz = 'fast': expected a number"),
        # the prototype's legacy port is the default full-rate group's port
        ("[channels]\nlegacy = ['example:26001']\n",
         "[multicast] full = \"239.255.26.1:26001\" uses port 26001, which is also "
         "[channels] legacy 'example:26001'"),
        ("[relay]\nport = 26002\n", "[multicast] decimated = \"239.255.26.2:26002\" uses port "
         "26002, which is also [relay] port"),
    ],
)
def test_wrong_keys_and_values_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.build(path)


def test_a_cache_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    path = tmp_path / "c.toml"
    path.write_text(f"[cache]\ndir = '{tmp_path / 'afile'}'\n")
    with pytest.raises(ConfigError, match=r"\[cache\] dir: .*afile exists and is not a dir"):
        config.build(path)


@pytest.mark.parametrize(
    ("text", "size"), [("4096", 4096), ("64MiB", 64 * 2**20), ("10 GB", 10 * 10**9),
                       ("512k", 512_000), ("1.5KiB", 1536)]
)
def test_sizes(text: str, size: int) -> None:
    assert configvalues.parse_size(text) == size


def test_cli_flags_are_generated_from_the_declarations() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, ["relay", "cache"])
    args = parser.parse_args(["--relay-port", "1234", "--cache-rotate-seconds", "5"])
    cfg = config.from_args(args)
    assert cfg.relay.port == 1234
    assert cfg.cache.rotate_seconds == 5.0


def test_dump_is_valid_toml_that_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "dump.toml"
    path.write_text(config.dump(config.build()))
    assert config.build(path) == config.build()


def test_readme_table_matches_the_declarations() -> None:
    readme = (PROJECT / "README.md").read_text()
    assert config.markdown_table() in readme, (
        "README's configuration table is stale: paste speeddata.config.markdown_table()"
    )


def test_default_paths_are_in_the_data_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPEEDDATA_HOME", str(tmp_path))
    cfg = config.build()
    assert (cfg.channels.dir, cfg.cache.dir, cfg.exports.dir) == (
        tmp_path / "schemas", tmp_path / "cache", tmp_path / "exports")
    monkeypatch.delenv("SPEEDDATA_HOME")
    monkeypatch.chdir(tmp_path / "..")
    assert config.build().cache.dir == (tmp_path / ".." / "cache").resolve()


def test_the_default_channels_dir_is_made_with_the_demo_channels(tmp_path: Path,
                                                               monkeypatch, capsys) -> None:
    from speeddata import cli

    monkeypatch.setenv("SPEEDDATA_HOME", str(tmp_path))
    assert cli.main(["config"]) == 0
    assert sorted(p.name for p in (tmp_path / "schemas").iterdir()) == [
        "env.avsc", "example.avsc", "motor.avsc", "power.derived.toml"]
    (tmp_path / "schemas" / "motor.avsc").unlink()  # the user's choice is kept
    assert cli.main(["config"]) == 0
    assert not (tmp_path / "schemas" / "motor.avsc").exists()
    assert cli.main(["config", "--channels-dir", str(tmp_path / "mine")]) == 2
    assert "[channels] dir: " in capsys.readouterr().err


def test_every_flag_of_up_reaches_a_child_that_uses_it() -> None:
    """'up --exports-dir X' was accepted and silently ignored by the server's pivots."""
    from speeddata import cli

    for section in cli.SECTIONS_OF["up"]:
        users = [name for name in ("relay", "serve", "demo") if section in cli.SECTIONS_OF[name]]
        assert users, f"[{section}] flags of 'up' reach no child"
    args = cli.parser().parse_args(["serve", "--exports-dir", "/data/exports"])
    assert config.from_args(args).exports.dir == Path("/data/exports")


def test_a_cache_dir_that_cannot_be_made_is_one_line(tmp_path: Path, capsys) -> None:
    from speeddata import cli

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["tag", "x", "--start", "-1m", "--cache-dir", str(blocker / "cache")]) == 2
    err = capsys.readouterr().err
    assert "[cache] dir: " in err and "cannot be made (Not a directory)" in err
    assert "Traceback" not in err


def test_a_relay_without_multicast_is_valid_and_a_server_without_it_says_why(
        tmp_path: Path) -> None:
    """The relay benchmark runs the relay with both groups off: that is a valid relay.
    Only the stripchart server needs a group, and it says so."""
    import subprocess
    import sys

    path = config.write_file(tmp_path / "c.toml", {"multicast": {"full": "", "decimated": ""},
                                              "cache": {"dir": str(tmp_path / "cache")},
                                              "web": {"host": "127.0.0.1", "port": 0}})
    assert config.build(path).multicast.full is None
    done = subprocess.run([sys.executable, "-m", "speeddata", "serve", "--config",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "both off" in done.stderr and "Traceback" not in done.stderr
