"""Derived channels registered like channels: POST/DELETE /api/channels in process (a bad
expression is a 400 naming the position), a file dropped in the channels directory
taken by the server's watcher, ``speeddata channels add``."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from speeddata import config
from speeddata.config import write_file
from tests.helpers import PROJECT, SCHEMAS

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PORT = 40_103  # never bound: the client calls the app in process
GOOD = 'name = "drive"\n[signals.p]\nexpression = "motor.torque * motor.speed / 9.55"\n' \
       'unit = "W"\n'


def settings(tmp_path: Path) -> Path:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    return write_file(tmp_path / "serve.toml", {
        "channels": {"dir": str(schemas), "legacy": []}, "cache": {"dir": str(tmp_path / "c")},
        "relay": {"host": "127.0.0.1", "port": 0},
        "multicast": {"full": "239.255.103.11:40121", "decimated": "239.255.103.12:40122",
                      "control": "239.255.103.13:40123", "interface": "127.0.0.1"},
        "web": {"host": "127.0.0.1", "port": PORT}, "exports": {"dir": str(tmp_path / "e")}})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    from speeddata.stripchart.app import create_app

    app = create_app(config.build(settings(tmp_path)))
    yield TestClient(app, base_url=f"http://127.0.0.1:{PORT}"), tmp_path / "schemas"


def test_the_demo_power_is_listed_and_a_derived_channel_registers_and_retires(
        client: tuple[TestClient, Path]) -> None:
    http, schemas = client
    listed = {c["name"]: c for c in http.get("/api/channels").json()["channels"]}
    assert listed["power"]["signals"][0]["expression"] == "motor.current * motor.voltage"
    assert listed["power"]["signals"][0]["unit"] == "W"
    answer = http.post("/api/channels", json={"derived": GOOD})
    assert answer.status_code == 201, answer.text
    assert answer.json()["signals"][0]["id"] == "drive.p"
    assert (schemas / "drive.derived.toml").read_text() == GOOD
    assert http.post("/api/channels", json={"derived": GOOD.replace("9.55", "9.5")}
                     ).status_code == 409
    assert http.post("/api/channels", json={"derived": GOOD.replace("9.55", "9.5"),
                                            "replace": True}).status_code == 201
    assert http.delete("/api/channels/drive").status_code == 204
    assert not (schemas / "drive.derived.toml").exists()
    assert list((schemas / "retired").glob("drive.*.derived.toml"))
    names = [c["name"] for c in http.get("/api/channels").json()["channels"]]
    assert "drive" not in names and "motor" in names


@pytest.mark.parametrize(("expression", "position", "says"), [
    ("motor.torque * motor.nosuch", 16, "no numeric signal 'nosuch'"),
    ("motor.speed.__class__", 1, "no attribute access"),
    ("__import__('os')", 1, "unknown function '__import__'"),
    ("mean(motor.speed, 10**9)", 19, "a window of samples"),
    ("(" * 100 + "motor.speed" + ")" * 100, 65, "nested over 64"),
])
def test_a_bad_expression_is_a_400_naming_the_position(client: tuple[TestClient, Path],
                                                       expression: str, position: int,
                                                       says: str) -> None:
    http, schemas = client
    text = GOOD.replace("motor.torque * motor.speed / 9.55", expression)
    answer = http.post("/api/channels", json={"derived": text})
    assert answer.status_code == 400, answer.text
    assert answer.json()["position"] == position
    assert f"at position {position}" in answer.json()["detail"]
    assert says in answer.json()["detail"] and "signal 'p'" in answer.json()["detail"]
    assert not (schemas / "drive.derived.toml").exists()


def test_a_file_dropped_in_the_channels_directory_is_drawn_at_the_next_look(
        tmp_path: Path) -> None:
    from speeddata.stripchart.server import WATCH_SECONDS, StripchartServer

    server = StripchartServer(config.build(settings(tmp_path)))
    assert "power.power" in server.hub.numeric
    (tmp_path / "schemas" / "drive.derived.toml").write_text(GOOD)
    assert server.watch.changed() and WATCH_SECONDS <= 0.5  # looked at twice a second
    asyncio.run(server.change_channels())
    assert "drive.p" in server.hub.numeric and "drive" not in server.registry
    (tmp_path / "schemas" / "drive.derived.toml").write_text(GOOD.replace('"p"', '"q"')
                                                             .replace("signals.p", "signals.q"))
    os.utime(tmp_path / "schemas" / "drive.derived.toml", ns=(time.time_ns(),) * 2)
    asyncio.run(server.change_channels())
    assert "drive.q" in server.hub.numeric and "drive.p" not in server.hub.numeric


def test_channels_add_takes_a_derived_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    path = settings(tmp_path)
    good = tmp_path / "drive.derived.toml"
    good.write_text(GOOD)
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    run = [sys.executable, "-m", "speeddata", "channels"]
    flags = ["--config", str(path)]
    done = subprocess.run([*run, "add", str(good), *flags], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "schemas" / "drive.derived.toml").read_text() == GOOD
    listed = subprocess.run([*run, "list", *flags], capture_output=True, text=True, env=env,
                            timeout=60)
    assert "drive                derived (on motor)" in listed.stdout
    bad = tmp_path / "bad.derived.toml"
    bad.write_text(GOOD.replace('"drive"', '"bad"').replace("motor.speed", "motor.sped"))
    done = subprocess.run([*run, "add", str(bad), *flags], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 2 and "at position 16" in done.stderr, done.stderr


def test_a_derived_channel_names_another_and_a_cycle_is_a_400(
        client: tuple[TestClient, Path]) -> None:
    http, schemas = client
    double = 'name = "double"\n[signals.p]\nexpression = "power.power * 2"\n'
    answer = http.post("/api/channels", json={"derived": double})
    assert answer.status_code == 201, answer.text
    assert answer.json()["signals"][0]["id"] == "double.p"
    loop = (schemas / "power.derived.toml").read_text().replace(
        "motor.current * motor.voltage", "double.p / 2 + motor.current")
    answer = http.post("/api/channels", json={"derived": loop, "replace": True})
    assert answer.status_code == 400, answer.text
    assert "cycle: power -> double -> power" in answer.json()["detail"]
    assert "motor.current * motor.voltage" in (schemas / "power.derived.toml").read_text()
    listed = {c["name"] for c in http.get("/api/channels").json()["channels"]}
    assert {"power", "double"} <= listed
