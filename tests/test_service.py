"""The systemd units: valid for systemd, runnable as written, and restarting only what a
restart can fix."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from speeddata import cli, service
from speeddata.config import RelayConfig


def fields(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_units_run_unprivileged_in_the_data_directory_and_stop_on_config_errors() -> None:
    files = service.units("sd", Path("/var/lib/speeddata"), Path("/etc/speeddata.toml"))
    assert set(files) == {"speeddata-relay.service", "speeddata-serve.service",
                          "speeddata-archive.service", "60-speeddata.conf"}
    relay = fields(files["speeddata-relay.service"])
    assert relay["User"] == "sd" and relay["StateDirectory"] == "speeddata"
    assert relay["Environment"] == "SPEEDDATA_HOME=/var/lib/speeddata"
    assert relay["Restart"] == "on-failure" and relay["RestartPreventExitStatus"] == "2"
    assert shlex.split(relay["ExecStart"])[-4:] == [
        "speeddata", "relay", "--config", "/etc/speeddata.toml"]
    assert "speeddata-relay.service" in fields(files["speeddata-serve.service"])["After"]
    archive = fields(files["speeddata-archive.service"])  # exits 2 without an endpoint:
    assert archive["RestartPreventExitStatus"] == "2"  # not restarted in a loop
    assert shlex.split(archive["ExecStart"])[-3] == "archive"
    rmem = int(files["60-speeddata.conf"].split("net.core.rmem_max = ")[1])
    assert rmem >= RelayConfig().rcvbuf  # what the relay asks for is granted
    elsewhere = fields(service.units("sd", Path("/srv/rig"))["speeddata-relay.service"])
    assert elsewhere["ReadWritePaths"] == "/srv/rig" and "StateDirectory" not in elsewhere


@pytest.mark.e2e
def test_the_command_writes_units_that_systemd_accepts_and_that_run(tmp_path: Path,
                                                                    capsys) -> None:
    units, sysctl = tmp_path / "units", tmp_path / "sysctl"
    assert cli.main(["service", "--home", str(tmp_path / "home"), "--unit-dir", str(units),
                     "--sysctl-dir", str(sysctl)]) == 0
    assert "systemctl daemon-reload" in capsys.readouterr().out
    assert (sysctl / "60-speeddata.conf").exists()
    paths = sorted(units.glob("*.service"))
    assert len(paths) == 3  # relay, serve, archive
    if shutil.which("systemd-analyze"):
        checked = subprocess.run(["systemd-analyze", "verify", *map(str, paths)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
    for path in paths:  # the command line as systemd will run it
        argv = shlex.split(fields(path.read_text())["ExecStart"])
        assert subprocess.run([*argv, "--help"], capture_output=True, timeout=60).returncode == 0
        bad = subprocess.run([*argv, "--cache-rotate-bytes", "1"], capture_output=True,
                             text=True, timeout=60)
        assert bad.returncode == 2 and "rotate_bytes" in bad.stderr  # not restarted


def test_a_wrong_config_is_refused_before_units_are_written(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[relay]\nport = 'x'\n")
    assert cli.main(["service", "--config", str(bad), "--print"]) == 2


def test_an_unwritable_unit_dir_says_what_to_do(capsys) -> None:
    folder = "/proc/no-such-dir"  # not even root makes a directory there
    assert cli.main(["service", "--unit-dir", folder, "--sysctl-dir", folder]) == 2
    assert "run it as root, or --print" in capsys.readouterr().err
