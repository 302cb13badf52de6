"""The C sender's time probes with real processes: the generated example, built for
x86-64 and for 32-bit ARM (run under qemu-user), with a clock 3.2 s ahead (its
``SPEEDDATA_CLOCK_OFFSET_NS``), probes a real relay, whose status, ``speeddata status``
and offset series say +3.2 s within 1 ms; a pivot with ``--clock corrected`` puts its
records on the relay's clock."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import pytest

from speeddata.cache.clocks import read_series
from tests.helpers import SCHEMAS, TIMEOUT, relay_settings, start_relay, wait_until
from tests.test_codegen import CFLAGS, QEMU_ENV
from tests.test_codegen_e2e import TARGETS

pytestmark = pytest.mark.e2e
AHEAD_NS = 3_200_000_000
MS = 1_000_000
COUNT, RATE = 300, 200  # 1.5 s of records: several reports


def build_example(target: str, tmp_path: Path) -> tuple[Path, list[str]]:
    cc, runner, _ = TARGETS[target]
    for tool in [cc, *runner]:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (./install --dev installs it)")
    made = subprocess.run([sys.executable, "-m", "speeddata", "codegen", "c",
                           str(SCHEMAS / "motor.avsc"), "--example", str(tmp_path / "ex"),
                           "--channels-dir", str(SCHEMAS)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert made.returncode == 0, made.stderr
    exe = tmp_path / "ex" / "example"
    built = subprocess.run([cc, *CFLAGS, "-o", str(exe), str(exe.with_suffix(".c"))],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert built.returncode == 0, built.stderr
    return exe, runner


def run_example(exe: Path, runner: list[str], port: int, offset_ns: int,
                count: int = COUNT) -> tuple[int, int]:
    """Run it; the offset and uncertainty it says it measured."""
    env = {**os.environ, **QEMU_ENV, "SPEEDDATA_CLOCK_OFFSET_NS": str(offset_ns)}
    done = subprocess.run([*runner, str(exe), "127.0.0.1", str(port), str(count), str(RATE)],
                          capture_output=True, text=True, env=env, timeout=10 * TIMEOUT)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == f"sent {count}, failed 0"
    found = re.fullmatch(r"clock (-?\d+) ns, uncertainty (\d+) ns, (\d+) probes answered "
                         r"of (\d+)", second)
    assert found, second
    assert int(found[3]) >= 4  # the burst before the first record, at least
    return int(found[1]), int(found[2])


@pytest.mark.parametrize("target", list(TARGETS))
def test_the_c_example_measures_its_clock_3_2_s_ahead_within_a_millisecond(
        target: str, tmp_path: Path) -> None:
    exe, runner = build_example(target, tmp_path)
    relay = start_relay(tmp_path, relay_settings(tmp_path))
    try:
        start = time.time_ns()
        offset, uncertainty = run_example(exe, runner, relay.port, AHEAD_NS)
        end = time.time_ns()
        assert abs(offset - AHEAD_NS) < MS and uncertainty < MS, (offset, uncertainty)

        def row() -> dict[str, Any] | None:
            rows = [r for r in relay.snapshot().get("senders", [])
                    if r["channel"] == "motor" and r["sent"] == COUNT
                    and r["clock_offset_ns"] is not None]
            return rows[0] if rows else None

        found = wait_until(row, what="the C sender's clock in the relay's status")
        assert abs(found["clock_offset_ns"] - AHEAD_NS) < MS, found
        assert 0 <= found["clock_uncertainty_ns"] < MS
        assert (found["arrived"], found["lost"]) == (COUNT, 0)
        shown = subprocess.run([sys.executable, "-m", "speeddata", "status", "--config",
                                str(relay.config_path)], capture_output=True, text=True,
                               timeout=TIMEOUT).stdout
        assert re.search(rf"sender {found['source']} motor: sent {COUNT}, lost 0 \(0\.0 %\)"
                         r".*, clock \+3\.2 s \(± 0\.\d+ ms\)", shown), shown
        assert relay.snapshot()["time_probes"]["answered"] >= 4

        def series() -> Any:
            points = read_series(relay.cache_dir, "motor", 0, time.time_ns())
            return points if len(points.offset_ns) else None

        points = wait_until(series, what="the C sender's offset series beside the cache")
        assert set(points.source) == {found["source"]}
        assert all(abs(int(o) - AHEAD_NS) < MS for o in points.offset_ns)
        wait_until(lambda: relay.snapshot()["channels"].get("motor", {}).get(
            "datagrams") == COUNT, what="every record counted")
    finally:
        assert relay.stop() == 0
    out = tmp_path / "corrected"
    done = subprocess.run([sys.executable, "-m", "speeddata", "pivot", "--config",
                           str(relay.config_path), "--start", "-5m", "--clock", "corrected",
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=10 * TIMEOUT)
    assert done.returncode == 0, done.stderr
    with h5py.File(next(out.glob("*.h5"))) as h5:
        times = h5["motor"]["time"][()]
        assert len(times) == COUNT
        # on the relay's clock: sent between start and end of the run, not 3.2 s later
        assert start <= times.min() and times.max() <= end, (times.min() - start)


BEHIND_NS = -1_700_000_000


def test_a_c_board_and_a_python_sender_on_one_channel_each_come_out_corrected(
        tmp_path: Path) -> None:
    """Two live senders of ``motor`` at once, the C example 3.2 s ahead and a Python
    Sender 1.7 s behind: two series beside the cache, and ``pivot --clock corrected``
    puts every record of both on the relay's clock (within the run), each by its own
    sender's offset, the counts per sender in the group's attributes."""
    from speeddata import Sender

    exe, runner = build_example("x86-64", tmp_path)
    relay = start_relay(tmp_path, relay_settings(tmp_path))
    try:
        python = Sender("motor", channels_dir=SCHEMAS, port=relay.port,
                        clock=lambda: time.time_ns() + BEHIND_NS)
        assert python.sync() is not None
        start = time.time_ns()
        env = {**os.environ, "SPEEDDATA_CLOCK_OFFSET_NS": str(AHEAD_NS)}
        board = subprocess.Popen([*runner, str(exe), "127.0.0.1", str(relay.port), str(COUNT),
                                  str(RATE)], stdout=subprocess.PIPE, text=True, env=env)
        for k in range(COUNT):  # at the same time as the board
            python.send(time=python.clock(), speed=float(k), torque=0.0, current=0.0,
                        voltage=0.0, position=-1.0, temperature=0.0)
            time.sleep(1 / RATE)
        assert board.wait(10 * TIMEOUT) == 0
        python.close()
        end = time.time_ns()
        wait_until(lambda: len(set(read_series(relay.cache_dir, "motor", 0, time.time_ns())
                                   .source)) == 2, what="both senders' series")
        wait_until(lambda: relay.snapshot()["channels"].get("motor", {}).get(
            "datagrams") == 2 * COUNT, what="every record of both counted")
    finally:
        assert relay.stop() == 0
    out = tmp_path / "both"
    done = subprocess.run([sys.executable, "-m", "speeddata", "pivot", "--config",
                           str(relay.config_path), "--start", "-5m", "--clock", "corrected",
                           "--out", str(out)], capture_output=True, text=True,
                          timeout=10 * TIMEOUT)
    assert done.returncode == 0, done.stderr
    with h5py.File(next(out.glob("*.h5"))) as h5:
        motor = h5["motor"]
        times, position = motor["time"][()], motor["position"][()]
        assert len(times) == 2 * COUNT
        for which in (position < 0, position >= 0):  # Python's records, the board's
            assert start <= times[which].min() and times[which].max() <= end
        assert motor.attrs["clock_senders"] == 2
        assert motor.attrs["clock_ambiguous_records"] == 0
        assert "nearest its receive time" in motor.attrs["clock_note"]
