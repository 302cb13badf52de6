"""The generated example program, built for x86-64 and for 32-bit ARM (run under
qemu-user), sends 10,000 records to a real relay, which caches them exactly: read back
with fastavro and with Apache Avro, every field as the example sets it, and the C
sender's loss reports counted by the relay. Also: the header compiles as C++, and the
README's C example compiles and sends."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import avro.datafile
import avro.io
import fastavro
import pytest

from speeddata import clocks, wire
from speeddata.codegen import c
from speeddata.schemas import load_file
from tests.helpers import (
    PROJECT,
    SCHEMAS,
    TIMEOUT,
    relay_settings,
    start_relay,
    wait_until,
)
from tests.test_codegen import CFLAGS, QEMU_ENV

COUNT = 10_000
RATE = 10_000  # a second: the whole run in about a second natively
SYMBOLS = ["IDLE", "RUNNING", "FAULT"]
RIG = {"type": "record", "name": "rig", "doc": "every kind the C generator takes", "fields": [
    {"name": "time", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
    {"name": "count", "type": "long"}, {"name": "level", "type": "int"},
    {"name": "speed", "type": "double", "unit": "rpm"}, {"name": "load", "type": "float"},
    {"name": "on", "type": "boolean"},
    {"name": "state", "type": {"type": "enum", "name": "State", "symbols": SYMBOLS}},
    {"name": "note", "type": "string", "maxLength": 16},
    {"name": "spare", "type": ["null", "double"]},
    {"name": "pos", "type": {"type": "record", "name": "Pos", "fields": [
        {"name": "x", "type": "float"}, {"name": "tag", "type": ["null", "string"],
                                         "maxLength": 8}]}},
]}
TARGETS = {  # the compiler, what runs its program, the ELF e_machine of it
    "x86-64": ("gcc", [], 0x3E),
    "armhf": ("arm-linux-gnueabihf-gcc", ["qemu-arm-static"], 0x28),
}


def expected(i: int) -> dict[str, Any]:
    return {"count": i, "level": i, "speed": float(i), "load": float(i), "on": i % 2 == 1,
            "state": SYMBOLS[i % 3], "note": str(i), "spare": float(i),
            "pos": {"x": float(i), "tag": str(i)}}


def cached(folder: Path) -> list[dict[str, Any]]:
    """Every record of the channel's cache files (a block being appended: not yet)."""
    records: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.avro")):
        with path.open("rb") as f, contextlib.suppress(EOFError, ValueError, StopIteration,
                                                       OSError):
            for record in fastavro.reader(f):
                records.append(record)
    return records


@pytest.mark.e2e
@pytest.mark.parametrize("target", list(TARGETS))
def test_the_example_sends_a_channel_the_relay_caches_exactly(target: str,
                                                              tmp_path: Path) -> None:
    cc, runner, machine = TARGETS[target]
    for tool in [cc, *runner]:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (./install --dev installs it)")
    channels = tmp_path / "channels"
    channels.mkdir()
    (channels / "rig.avsc").write_text(json.dumps(RIG))
    made = subprocess.run([sys.executable, "-m", "speeddata", "codegen", "c",
                           str(channels / "rig.avsc"), "--example", str(tmp_path / "ex"),
                           "--channels-dir", str(channels)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert made.returncode == 0, made.stderr
    assert f"the relay's channels ({channels}) have it" in made.stdout
    exe = tmp_path / "ex" / "example"
    built = subprocess.run([cc, *CFLAGS, "-o", str(exe), str(exe.with_suffix(".c"))],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert built.returncode == 0, built.stderr
    assert int.from_bytes(exe.read_bytes()[18:20], "little") == machine  # truly for ARM
    env = {**os.environ, **QEMU_ENV}
    relay = start_relay(tmp_path, relay_settings(
        tmp_path, channels={"dir": str(channels), "legacy": []}))
    try:
        start = time.time_ns()
        sent = subprocess.run([*runner, str(exe), "127.0.0.1", str(relay.port), str(COUNT),
                               str(RATE)], capture_output=True, text=True, env=env,
                              timeout=10 * TIMEOUT)
        end = time.time_ns()
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.splitlines()[0] == f"sent {COUNT}, failed 0"  # then its clock
        folder = relay.cache_dir / "rig"
        wait_until(lambda: len(cached(folder)) >= COUNT, what=f"{COUNT} cached records")

        def reported() -> list[dict[str, Any]]:
            return [r for r in relay.snapshot().get("senders", []) if r["sent"] == COUNT]

        (row,) = wait_until(reported, what="the C sender's final report in the status")
        assert (row["arrived"], row["lost"]) == (COUNT, 0), row
    finally:
        assert relay.stop() == 0
    records = cached(folder)
    assert [r["count"] for r in records] == list(range(COUNT))  # in order, each once
    assert [{k: v for k, v in r.items() if k != "time"} for r in records] == [
        expected(i) for i in range(COUNT)]
    times = [r["time"] for r in records]
    assert times == sorted(times) and start <= times[0] and times[-1] <= end
    apache = []
    for path in sorted(folder.glob("*.avro")):
        with avro.datafile.DataFileReader(path.open("rb"), avro.io.DatumReader()) as reader:
            apache += list(reader)
    assert apache == records


ENCODE_CXX = """#include "rig.h"
int send_one(struct sd_link *l, const struct rig *r, int64_t now) {
    return rig_send(l, r, now);
}
"""


@pytest.mark.e2e
@pytest.mark.parametrize("cxx", ["g++", "arm-none-eabi-g++"])
def test_the_header_compiles_as_cxx_too(cxx: str, tmp_path: Path) -> None:
    """Arduino sketches and many firmware trees are C++: the header of every kind
    compiles there as it is, warning-free (the bare-metal one without sockets)."""
    if shutil.which(cxx) is None:
        pytest.skip(f"{cxx} is not installed (./install --dev installs it)")

    (tmp_path / "rig.h").write_text(c.header(RIG))
    flags = ["-mcpu=cortex-m4", "-mthumb"] if "none" in cxx else ["-DSPEEDDATA_POSIX"]
    (tmp_path / "unit.cpp").write_text(ENCODE_CXX)
    built = subprocess.run([cxx, "-std=c++11", *CFLAGS[1:], *flags, "-c", "-o",
                            str(tmp_path / "unit.o"), str(tmp_path / "unit.cpp")],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert built.returncode == 0, built.stderr


@pytest.mark.e2e
def test_the_readme_example_compiles_and_sends(tmp_path: Path) -> None:
    """The C sources section's POSIX example, as written, inside a main() (to a local
    socket instead of 192.168.1.10): it compiles and its record arrives."""

    readme = (PROJECT / "README.md").read_text()
    start = readme.index("```c\n#define _POSIX_C_SOURCE")
    block = readme[start + len("```c\n"): readme.index("```", start + 4)]
    head, body = block.split('#include "motor.h"\n')
    motor = load_file(SCHEMAS / "motor.avsc")
    (tmp_path / "motor.h").write_text(c.header(motor.schema))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        body = body.replace('"192.168.1.10", "26000"', f'"127.0.0.1", "{port}"')
        (tmp_path / "readme.c").write_text(f'{head}#include "motor.h"\nint main(void)\n{{\n'
                                           f"int64_t epoch = 7;\n{body}return 0;\n}}\n")
        built = subprocess.run(["gcc", *CFLAGS, "-o", str(tmp_path / "readme"),
                                str(tmp_path / "readme.c")], capture_output=True, text=True)
        assert built.returncode == 0, built.stderr
        assert subprocess.run([str(tmp_path / "readme")], timeout=TIMEOUT).returncode == 0
        datagrams = [listener.recv(2048) for _ in range(4)]  # report, probe, record, report
    assert datagrams[1][:10] == clocks.PROBE_HEADER  # it probes (no relay here to answer)
    fp, body_bytes = wire.split(datagrams[2])
    assert fp == motor.fingerprint
    record = fastavro.schemaless_reader(io.BytesIO(bytes(body_bytes)), motor.parsed)
    assert record["speed"] == 1500.0 and record["torque"] == 0.0
