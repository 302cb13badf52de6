"""Derived channels end to end: a real relay and server on fresh multicast groups, the
demo's power drawn from every sample over a real WebSocket, a file dropped in the
channels directory taken while running, and a pivot of the range holding power next to
its inputs, equal to the formula."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from websockets.sync.client import connect

from speeddata import Sender
from speeddata.times import format_time
from tests.helpers import SCHEMAS, relay_settings, start_relay, start_serve, wait_until
from tests.stripchart.test_server import receive_until, subscribe

pytestmark = pytest.mark.e2e
DRIVE = 'name = "drive"\n[signals.p]\nexpression = "motor.torque * motor.speed"\n'


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple]:
    channels = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, channels)
    relay = start_relay(tmp_path, relay_settings(tmp_path, channels={"dir": str(channels)}))
    serve = start_serve(tmp_path, relay.config_path)
    yield relay, serve, channels
    serve.stop()
    relay.stop()


def motor(i: int, t0: int, current: float) -> dict:
    return {"time": t0 + i * 1_000_000, "speed": float(i), "torque": 0.5,
            "current": current, "voltage": 48.0 + math.sin(i) / 10, "position": 0.0,
            "temperature": 20.0}


def listed(url: str) -> set[str]:
    with urllib.request.urlopen(url + "api/channels", timeout=5) as answer:
        return {c["name"] for c in json.load(answer)["channels"]}


def test_power_is_drawn_exactly_and_exported_next_to_its_inputs(stack: tuple,
                                                                 tmp_path: Path) -> None:
    relay, serve, _ = stack
    assert "power" in listed(serve.url)
    t0 = time.time_ns()
    records = [motor(i, t0, math.sin(i / 7) * 3) for i in range(1, 400)]
    records[122]["current"] = 1000.0  # a one-sample spike: power's envelope must keep it
    products = {r["current"] * r["voltage"] for r in records}
    ws_url = serve.url.replace("http://", "ws://") + "ws"
    with connect(ws_url) as ws, Sender("motor", port=relay.port) as sender:
        subscribe(ws, signals=["power.power"], window=60)

        def first(c) -> bool:
            sender.send(motor(-1000, t0, 0.0))  # a second before the data
            return ("power.power", 0) in c["series"]
        receive_until(ws, first, "a first power value")
        for record in records:
            sender.send(record)
        final = records[-1]["current"] * records[-1]["voltage"]

        def done(c) -> bool:
            lasts = [a["last"] for a in c["series"].get(("power.power", 0), [])]
            return bool(lasts) and final in np.concatenate(lasts)
        collected = receive_until(ws, done, "the last power value")
    fine = collected["series"][("power.power", 0)]
    highs = np.concatenate([a["high"] for a in fine])
    lasts = np.concatenate([a["last"] for a in fine])
    assert highs.max() == records[122]["current"] * records[122]["voltage"]
    assert set(lasts[lasts != 0.0].tolist()) <= products  # each one a product, to the bit

    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "speeddata", "pivot", "--config",
                           str(relay.config_path), "--start", format_time(t0 - 5 * 10**9),
                           "--end", format_time(time.time_ns() + 10**9), "--out", str(out),
                           "--channels", "motor"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("*.h5")
    with h5py.File(path) as h5:
        power, inputs = h5["power"], h5["motor"]
        assert power["power"].attrs["expression"] == "motor.current * motor.voltage"
        assert power["power"].attrs["unit"] == "W"
        assert power["time"][()].tolist() == inputs["time"][()].tolist()
        expected = inputs["current"][()] * inputs["voltage"][()]
        assert power["power"][()].tobytes() == expected.tobytes()
        assert len(expected) > len(records) and power.attrs["count"] == len(expected)  # probes


def test_a_derived_file_dropped_while_running_is_drawn(stack: tuple) -> None:
    relay, serve, channels = stack
    (channels / "drive.derived.toml").write_text(DRIVE)
    wait_until(lambda: "drive" in listed(serve.url), what="the dropped derived channel")
    t0 = time.time_ns()
    ws_url = serve.url.replace("http://", "ws://") + "ws"
    with connect(ws_url) as ws, Sender("motor", port=relay.port) as sender:
        subscribe(ws, signals=["drive.p"], window=60)

        def seen(c) -> bool:
            sender.send(motor(7, t0, 0.0))
            lasts = [a["last"] for a in c["series"].get(("drive.p", 0), [])]
            return bool(lasts) and 3.5 in np.concatenate(lasts)
        receive_until(ws, seen, "drive.p = torque * speed = 3.5")
