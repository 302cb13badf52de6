"""Blocks end to end: a real relay, real multicast on the test's own groups, each block
in its own ``speeddata block run`` process, and ``speeddata pivot`` of what was cached."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from speeddata import status
from speeddata.schemas import copy_demo_channels
from speeddata.sender import Sender
from tests.helpers import TIMEOUT, RelayProcess, relay_settings, start_relay, wait_until

pytestmark = pytest.mark.e2e
BLOCKS = """
    import numpy as np
    from speeddata.blocks import block

    @block(inputs=["motor"], output="motor_x2", signals={"current2": "A"})
    def double(batch):
        return {"current2": batch["motor"]["current"] * 2}

    @block(inputs=["motor_x2", "motor"], output="motor_x4",
           signals={"current4": {"unit": "A", "doc": "four times the current"}})
    def quadruple(batch):  # a block of a block, with the source joined on
        return {"current4": batch["motor_x2"]["current2"] + 2 * batch["motor"]["current"]}

    @block(inputs=["motor"], output="flaky", signals=["x"])
    def flaky(batch):
        if np.any(batch["motor"]["current"] < 0):
            raise ValueError("a negative current in this batch")
        return {"x": batch["motor"]["current"]}

    @block(inputs=["motor"], output="short", signals=["x"])
    def short(batch):
        return {"x": batch["motor"]["current"][:-1]}
"""


class BlockProcess:
    def __init__(self, relay: RelayProcess, file: Path, name: str, output: str) -> None:
        self.relay, self.output = relay, output
        self.log_path = file.with_name(f"{name}.log")
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "speeddata", "block", "run", str(file), "--block",
                 name, "--config", str(relay.config_path)], stdout=log,
                stderr=subprocess.STDOUT)

    def snapshot(self) -> dict:
        if self.process.poll() is not None:
            raise AssertionError(f"block exited with {self.process.returncode}:\n"
                                 f"{self.log_path.read_text()}")
        snap = status.read_all(self.relay.cache_dir).get(f"block-{self.output}", {})
        return snap if snap.get("running") and snap["pid"] == self.process.pid else {}

    def wait(self, condition, what: str) -> dict:
        return wait_until(lambda: (snap := self.snapshot()) and condition(snap) and snap,
                          what=what)

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(TIMEOUT) == 0
        return self.log_path.read_text()


@pytest.fixture
def rig(tmp_path):
    folder = copy_demo_channels(tmp_path / "schemas")
    relay = start_relay(tmp_path, relay_settings(tmp_path, channels={"dir": str(folder)}))
    file = tmp_path / "myblocks.py"
    file.write_text(textwrap.dedent(BLOCKS))
    started: list[BlockProcess] = []

    def run(name: str, output: str) -> BlockProcess:
        started.append(BlockProcess(relay, file, name, output))
        return started[-1]

    yield relay, run, folder
    for block in started:
        if block.process.poll() is None:
            block.process.kill()
            block.process.wait(TIMEOUT)
    relay.stop()


def send_motor(relay: RelayProcess, folder: Path, currents: np.ndarray, t0: int) -> None:
    with Sender(folder / "motor.avsc", host="127.0.0.1", port=relay.port) as sender:
        for i, current in enumerate(currents.tolist()):
            sender.send(time=t0 + i * 1_000_000, speed=0.0, torque=0.0, current=current,
                        voltage=48.0, position=0.0, temperature=20.0)
            if i % 50 == 49:
                time.sleep(0.005)  # a paced source, not a burst the loopback drops


def cached(relay: RelayProcess, channel: str) -> int:
    return relay.snapshot().get("channels", {}).get(channel, {}).get("datagrams", 0)


def pivot(relay: RelayProcess, tmp: Path) -> dict[str, dict[str, np.ndarray]]:
    import h5py

    done = subprocess.run([sys.executable, "-m", "speeddata", "pivot", "--start", "-5m",
                           "--out", str(tmp / "exports"), "--config", str(relay.config_path)],
                          capture_output=True, text=True, timeout=TIMEOUT * 3)
    assert done.returncode == 0, done.stderr
    (path,) = (tmp / "exports").glob("*.h5")
    with h5py.File(path) as h5:
        return {group: {name: ds[()] for name, ds in h5[group].items()
                        if isinstance(ds, h5py.Dataset)}  # a "clock" subgroup: the series
                for group in h5}


def test_a_doubling_block_round_trips_through_the_relay_into_the_pivot(rig, tmp_path) -> None:
    relay, run, folder = rig
    block = run("double", "motor_x2")
    block.wait(lambda s: True, "the block's status file")
    assert (folder / "motor_x2.avsc").exists()  # registered like any channel
    currents = np.random.default_rng(7).normal(size=500)
    send_motor(relay, folder, currents, time.time_ns())
    snap = block.wait(lambda s: s["records_out"] == 500, "500 records out of the block")
    assert snap["records_in"] == 500 and snap["errors"] == {} and snap["refused"] == {}
    assert snap["sender"]["sent"] == 500, snap["sender"]
    assert snap["latency_ms"]["max"] < 1000
    wait_until(lambda: cached(relay, "motor_x2") == 500, what="the relay caching them")
    shown = subprocess.run([sys.executable, "-m", "speeddata", "status", "--config",
                            str(relay.config_path)], capture_output=True, text=True)
    assert "block-motor_x2: running" in shown.stdout
    assert "double (motor -> motor_x2): 500 records in, 500 out" in shown.stdout
    log = block.stop()
    assert "Traceback" not in log and "block double stopped" in log
    assert "block-motor_x2" not in status.read_all(relay.cache_dir)
    data = pivot(relay, tmp_path)
    np.testing.assert_array_equal(data["motor_x2"]["time"], data["motor"]["time"])
    np.testing.assert_array_equal(data["motor_x2"]["current2"], 2 * data["motor"]["current"])
    np.testing.assert_array_equal(data["motor"]["current"], currents)


def test_two_blocks_chain_each_in_its_own_process(rig, tmp_path) -> None:
    relay, run, folder = rig
    second = run("quadruple", "motor_x4")  # before its input exists: it waits for it
    second.wait(lambda s: s["missing_inputs"] == ["motor_x2"], "the second block waiting")
    first = run("double", "motor_x2")
    first.wait(lambda s: True, "the first block")
    second.wait(lambda s: s["missing_inputs"] == [], "the second block finding its input")
    currents = np.arange(300.0)
    send_motor(relay, folder, currents, time.time_ns())
    second.wait(lambda s: s["records_out"] == 300, "300 records out of the chain")
    wait_until(lambda: cached(relay, "motor_x4") == 300, what="the relay caching them")
    data = pivot(relay, tmp_path)
    np.testing.assert_array_equal(data["motor_x4"]["time"], data["motor"]["time"])
    np.testing.assert_array_equal(data["motor_x4"]["current4"], 4 * currents)


def test_a_raising_block_and_a_wrong_length_block_go_on_and_count(rig) -> None:
    relay, run, folder = rig
    flaky, short = run("flaky", "flaky"), run("short", "short")
    flaky.wait(lambda s: True, "the flaky block")
    short.wait(lambda s: True, "the short block")
    send_motor(relay, folder, -np.ones(100), time.time_ns())  # every batch raises
    flaky.wait(lambda s: s["records_in"] == 100, "the raising batches")
    send_motor(relay, folder, np.ones(100), time.time_ns())  # then it computes again
    snap = flaky.wait(lambda s: s["records_out"] == 100, "the good batches")
    assert snap["errors"]["exception ValueError"] >= 1
    assert snap["records_in"] == 200
    bad = short.wait(lambda s: s["records_in"] == 200, "the short block's batches")
    assert bad["records_out"] == 0 and bad["errors"] == {"return wrong_length": bad["batches"]}
    flaky_log, short_log = flaky.stop(), short.stop()
    assert "Traceback" in flaky_log and "a negative current in this batch" in flaky_log
    assert "signal x: " in short_log and "values for" in short_log
    assert "one per sample" in short_log
