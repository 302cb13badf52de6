"""Tags and pivot end to end: a real relay, the real CLI, HDF5 read back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import xarray

from speeddata import Sender
from tests.helpers import TIMEOUT, RelayProcess, wait_until
from tests.relay.test_relay_process import cached_counters

HOURS = 3600 * 10**9


def cli(relay: RelayProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "speeddata", *args, "--config", str(relay.config_path)],
        capture_output=True, text=True, timeout=TIMEOUT)


def send(relay: RelayProcess, counters: range, clock_offset: int = 0) -> list[int]:
    times = []
    with Sender("example", port=relay.port) as sender:
        for i in counters:
            t = time.time_ns() + clock_offset
            times.append(t)
            sender.send({"time": t, "message": f"m{i}", "counter": i, "sine_wave": 0.5,
                         "ramp": float(i), "square_wave": 1.0, "noise": 0.0})
    wait_until(lambda: max(cached_counters(relay.cache_dir), default=-1) == counters[-1],
               what=f"records up to {counters[-1]} cached")
    return times


def test_a_tag_exports_exactly_its_range_even_from_a_source_with_a_wrong_clock(
    relay: RelayProcess, tmp_path: Path
) -> None:
    send(relay, range(0, 100))
    started = cli(relay, "tag", "start", "run42", "--note", "cold start")
    assert started.returncode == 0, started.stderr
    inside = send(relay, range(100, 200), clock_offset=-5 * HOURS)  # a source hours off
    assert cli(relay, "tag", "stop", "run42").returncode == 0
    send(relay, range(200, 300))

    listed = json.loads(cli(relay, "tags", "--json").stdout)
    assert [(t["name"], t["note"], t["exported"]) for t in listed] == [
        ("run42", "cold start", None)]
    assert listed[0]["bytes"] > 0

    out = tmp_path / "exports"
    done = cli(relay, "pivot", "--tag", "run42", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "100 records" in done.stdout
    path = out / "run42.h5"
    with h5py.File(path) as h5:
        assert h5.attrs["tag"] == "run42" and h5.attrs["note"] == "cold start"
        example = h5["example"]
        assert example["counter"][()].tolist() == list(range(100, 200))
        assert example["time"][()].tolist() == inside
        assert example["message"].asstr()[0] == "m100"
    ds = xarray.open_dataset(path, group="example", engine="h5netcdf")
    assert ds.sizes["time"] == 100
    ds.close()
    assert json.loads(cli(relay, "tags", "--json").stdout)[0]["exported"]


def test_cli_errors_say_what_is_wrong(relay: RelayProcess, tmp_path: Path) -> None:
    unknown = cli(relay, "pivot", "--tag", "nope", "--out", str(tmp_path))
    assert unknown.returncode == 2 and "no tag named 'nope'" in unknown.stderr
    empty = cli(relay, "pivot", "--start", "-2h", "--end", "-1h", "--out", str(tmp_path))
    assert empty.returncode == 2 and "no data received between" in empty.stderr
    bad_time = cli(relay, "tag", "x", "--start", "yesterday-ish")
    assert bad_time.returncode == 2 and "cannot read time 'yesterday-ish'" in bad_time.stderr
    assert cli(relay, "tag", "start", "twice").returncode == 0
    again = cli(relay, "tag", "start", "twice")
    assert again.returncode == 2 and "exists already" in again.stderr
    missing = cli(relay, "untag", "ghost")
    assert missing.returncode == 2 and "no tag named 'ghost'" in missing.stderr
