"""A replay onto the groups while the live source runs, with a real relay, server and
``speeddata replay`` (issue 21): the live channel stays drawn."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from speeddata import Sender
from speeddata.config import build, write_file
from tests.helpers import TIMEOUT, relay_settings, wait_until
from tests.stripchart.conftest import Stack
from tests.stripchart.test_server import _http
from tests.test_replay import fill

S = 10**9


def motor_row(base: str) -> dict:
    return next(c for c in _http(base + "api/channels")[1]["channels"] if c["name"] == "motor")


@pytest.mark.e2e
def test_a_replay_of_yesterday_leaves_the_live_source_drawn(stack: Stack,
                                                            tmp_path: Path) -> None:
    """Before, while the notices came, every motor datagram was placed as a replayed
    one: the live ones a day ahead, every one of them dropped."""
    yesterday = tmp_path / "yesterday"
    fill(yesterday / "cache", time.time_ns() - 86400 * S, 3)  # 300 motor datagrams
    live = build(stack.relay.config_path).multicast
    settings = relay_settings(yesterday)
    settings["multicast"] = {"full": str(live.full), "decimated": str(live.decimated),
                             "control": str(live.control), "interface": "127.0.0.1"}
    config = write_file(tmp_path / "replay.toml", settings)
    base = stack.serve.url
    stop = threading.Event()

    def send_live() -> None:
        with Sender("motor", port=stack.relay.port) as sender:
            while not stop.is_set():
                sender.send({"time": time.time_ns(), "speed": 1.0, "torque": 0.0,
                             "current": 0.0, "voltage": 48.0, "position": 0.0,
                             "temperature": 20.0})
                time.sleep(0.01)

    sender = threading.Thread(target=send_live, daemon=True)
    sender.start()
    try:
        wait_until(lambda: motor_row(base)["datagrams"] > 20, what="the live motor drawn")
        before = motor_row(base)
        replay = subprocess.Popen(
            [sys.executable, "-m", "speeddata", "replay", "--start", "-25h", "--end", "-23h",
             "--speed", "1", "--channels", "motor", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = wait_until(lambda: (row := motor_row(base))["replay"] and row,
                          what="the server following the replay")
        out, err = replay.communicate(timeout=TIMEOUT + 10)
        assert replay.returncode == 0, err
        assert "replayed 300 datagrams" in out
        after = motor_row(base)
    finally:
        stop.set()
        sender.join(TIMEOUT)
    assert seen["replay"]["speed"] == 1.0
    # the live ones (about 100 a second for the replay's 3 s) and the 300 replayed ones
    assert after["datagrams"] - before["datagrams"] >= 300 + 150
    assert after["dropped_times"] == before["dropped_times"] == 0
    assert not after["clock_shifted"] and abs(after["clock_offset_ms"]) < 1000
