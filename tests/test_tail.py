"""``speeddata tail``: formatting on its own, then a real relay's group in a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from speeddata import tail
from speeddata.errors import SpeeddataError
from speeddata.schemas import load_file
from speeddata.sender import Encoder
from tests.helpers import SCHEMAS, TIMEOUT, relay_settings, start_relay, wait_until

ENV = load_file(SCHEMAS / "env.avsc")
RECORD = {"time": 1_795_000_000_123_456_000, "humidity": 40.5, "pressure": 1013.25,
          "state": "RUNNING", "message": "a rather long message"}


def test_lines_as_text_and_json() -> None:
    datagrams = [b"junk", Encoder(load_file(SCHEMAS / "motor.avsc")).encode({
        "speed": 1.0, "torque": 0.0, "current": 0.0, "voltage": 0.0, "position": 0.0,
        "temperature": 0.0}), Encoder(ENV).encode(RECORD)]
    (record,) = tail.records(iter(datagrams), ENV)  # other channels and junk are skipped
    assert record == RECORD
    signals = tail.pick_signals(ENV, ["humidity", "state", "message"])
    assert tail.header_line(signals).split() == ["time", "(UTC)", "humidity", "state",
                                                 "message"]
    line = tail.text_line(record, "time", signals)
    assert line.startswith("2026-11-18T11:06:40.123456") and line.endswith(" a rather lo")
    assert line.split()[1:3] == ["40.5", "RUNNING"]
    assert json.loads(tail.json_line(record, "env", "time", signals)) == {
        "channel": "env", "time": RECORD["time"], "humidity": 40.5, "state": "RUNNING",
        "message": "a rather long message"}
    with pytest.raises(SpeeddataError, match="no signal"):
        tail.pick_signals(ENV, ["nope"])


def listeners(config_path) -> int:
    """Sockets bound to the full-rate group's port (from /proc/net/udp: no guessing how
    long two processes take to start on a loaded machine)."""
    from speeddata.config import build

    port = build(config_path).multicast.full.port
    with open("/proc/net/udp") as table:
        next(table)
        return sum(int(line.split()[1].split(":")[1], 16) == port for line in table)


@pytest.mark.e2e
def test_tail_prints_what_the_relay_forwards_and_stops_cleanly(tmp_path) -> None:
    relay = start_relay(tmp_path, relay_settings(tmp_path))
    command = [sys.executable, "-m", "speeddata", "tail", "env", "--json", "--config",
               str(relay.config_path)]
    try:
        counted = subprocess.Popen([*command, "--count", "3"], stdout=subprocess.PIPE,
                                   text=True)
        forever = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        wait_until(lambda: listeners(relay.config_path) >= 2, what="both tails on the group")
        time.sleep(0.2)  # bound, then joined: a moment between the two
        import socket

        encoder = Encoder(ENV)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            for i in range(3):
                out.sendto(encoder.encode({**RECORD, "humidity": float(i)}),
                           ("127.0.0.1", relay.port))
        lines = counted.communicate(timeout=TIMEOUT)[0].splitlines()
        assert counted.returncode == 0
        assert [json.loads(line)["humidity"] for line in lines] == [0.0, 1.0, 2.0]
        assert forever.stdout.readline()  # it runs until Ctrl-C
        forever.send_signal(signal.SIGINT)
        _, err = forever.communicate(timeout=TIMEOUT)
        assert forever.returncode == 130 and "Traceback" not in err
    finally:
        relay.stop()
