"""The serial source: framing and parsing on their own, then real pseudo-terminal pairs
(pyserial on the slave side, the test writing as the device on the master side)."""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import pytest

from speeddata.config import write_file
from speeddata.errors import SourceError, SpeeddataError
from speeddata.pivot import pivot
from speeddata.schemas import Registry, channel_from_schema, store_schema
from speeddata.sources.serial import (
    Counters,
    Dropped,
    FrameFramer,
    LineFramer,
    parser_for,
    run,
    to_bool,
    to_float,
    to_int,
    to_text,
)
from tests.helpers import SCHEMAS, TIMEOUT, relay_settings, start_relay, wait_until

RIG = channel_from_schema({"type": "record", "name": "rig", "fields": [
    {"name": "time", "type": "long"}, {"name": "pressure", "type": "double"},
    {"name": "count", "type": "long"}, {"name": "ok", "type": "boolean"},
    {"name": "state", "type": "string"}]})


def lines(framer: LineFramer, data: bytes, step: int = 1) -> list[bytes | Dropped]:
    return [x for i in range(0, len(data), step) for x in framer.feed(data[i : i + step])]


def test_lines_survive_any_chunking_and_garbage_is_bounded() -> None:
    framer = LineFramer()
    assert lines(framer, b"a,1\r\nb,2\nc,") == [b"a,1", b"b,2"]
    assert lines(framer, b"3\n\n") == [b"c,3", Dropped("empty", b"")]  # the cut line, whole
    assert lines(framer, b"x" * 5000, 1000) == [Dropped("overlong", b"x" * 80)]
    assert lines(framer, b"yyy\nd,4\n") == [b"d,4"]  # dropped whole, up to its end
    # a bare CR ends a line too; CR LF is one end even when cut between CR and LF
    assert lines(LineFramer(), b"e,5\rf,6\r\ng,7\r\r\n") == [
        b"e,5", b"f,6", b"g,7", Dropped("empty", b"")]


def test_the_first_line_after_open_is_dropped_unless_the_port_was_silent() -> None:
    framer = LineFramer(mid_line=True)
    assert lines(framer, b"5,7,1,RUN\n1.5,7,1,RUN\n", 4) == [
        Dropped("partial", b"5,7,1,RUN"), b"1.5,7,1,RUN"]
    framer = LineFramer(mid_line=True)
    framer.idle()  # a read timed out with nothing: the next byte starts a line
    assert lines(framer, b"1.5,7,1,RUN\n") == [b"1.5,7,1,RUN"]


def test_frames_resynchronise_after_garbage() -> None:
    framer = FrameFramer(4, sync=b"\xaa\x55")
    data = b"\xaa\x55ABCD" + b"junk" + b"\xaa\x55EFGH"
    got = [f for i in range(0, len(data), 3) for f in framer.feed(data[i : i + 3])]
    assert [f for f in got if isinstance(f, bytes)] == [b"ABCD", b"EFGH"]
    assert framer.skipped == 4 and all(f.reason == "sync" for f in got if isinstance(f, Dropped))


@pytest.mark.parametrize(("fmt", "fields", "lines"), [
    ("csv", [], [b"pressure, count, ok, state", b"1.5,7,1,RUN"]),
    ("csv", ["count", "pressure", "state", "ok"], [b"7,1.5,RUN,true"]),
    ("kv", [], [b"pressure=1.5 count=7 ok=yes state=RUN"]),
    ("json", [], [b'{"pressure": 1.5, "count": 7, "ok": true, "state": "RUN"}']),
    ("json", [], [b'{"pressure": 15e-1, "count": 7.0, "ok": 1, "state": "RUN", "x": []}']),
])
def test_each_format_gives_the_same_record(fmt: str, fields: list[str],
                                          lines: list[bytes]) -> None:
    parser = parser_for(RIG, fmt, fields)
    records = [r for r in map(parser.parse, lines) if r is not None]
    assert records == [{"pressure": 1.5, "count": 7, "ok": True, "state": "RUN"}]


@pytest.mark.parametrize(("convert", "value", "expected"), [
    (lambda v: to_int(v, 32), "2147483647", 2147483647),
    (lambda v: to_int(v, 32), "2147483648", "range"),
    (lambda v: to_int(v, 32), -(2**31) - 1, "range"),
    (to_int, "9223372036854775807", 2**63 - 1),
    (to_int, "9223372036854775808", "range"),
    (to_int, "1e3", 1000),
    (to_int, "1e999999999", "range"),  # refused at once, never made into a huge int
    (to_int, "1.5", "type"),
    (to_int, 2.0, 2),
    (to_int, "nan", "type"),
    (to_int, "inf", "range"),
    (to_int, None, "type"),
    (to_int, [], "type"),
    (to_int, True, "type"),
    (to_float, "1e308", 1e308),
    (to_float, "1e999", "range"),
    (to_float, 10**400, "range"),
    (to_float, "-inf", -math.inf),
    (to_float, {}, "type"),
    (lambda v: to_float(v, single=True), "1e39", "range"),
    (lambda v: to_float(v, single=True), "3.4e38", 3.4e38),
    (to_bool, "ON", True),
    (to_bool, "0", False),
    (to_bool, "maybe", "type"),
    (to_bool, 2, "type"),
    (to_text, b"IDLE\x00\x00", "IDLE"),
    (to_text, b"\xff", "utf8"),
    (to_text, 5, "type"),
])
def test_values_are_validated_into_their_type(convert: Callable[[object], object],
                                              value: object, expected: object) -> None:
    if isinstance(expected, str) and expected in ("range", "type", "utf8"):
        with pytest.raises(SourceError) as refused:
            convert(value)
        assert refused.value.reason == expected
    else:
        assert convert(value) == expected


def test_struct_frames_and_bad_lines() -> None:
    import struct

    parser = parser_for(RIG, "struct:<dq?4s", ["pressure", "count", "ok", "state"])
    assert parser.frame_size == struct.calcsize("<dq?4s")
    assert parser.parse(struct.pack("<dq?4s", 2.5, -3, True, b"IDLE")) == {
        "pressure": 2.5, "count": -3, "ok": True, "state": "IDLE"}
    csv_parser = parser_for(RIG, "csv", ["pressure", "count", "ok", "state"])
    for bad, reason in ((b"1.5,7", "columns"), (b"x,7,1,RUN", "type"),
                        (b"\xff\xfe,1,1,a", "utf8"), (b"1,2,maybe,a", "type")):
        with pytest.raises(SourceError) as refused:
            csv_parser.parse(bad)
        assert refused.value.reason == reason
    with pytest.raises(SpeeddataError, match="use csv, kv, json or struct"):
        parser_for(RIG, "xml", [])
    with pytest.raises(SpeeddataError, match="not fields of channel"):
        parser_for(RIG, "csv", ["pressure", "nope"])
    with pytest.raises(SpeeddataError, match="has 2 values"):
        parser_for(RIG, "struct:<dq", ["pressure"])


def test_a_csv_header_is_a_line_naming_the_fields() -> None:
    parser = parser_for(RIG, "csv", [])
    for line in (b"ssure,count,ok,state", b"1.5,7,1,RUN", b"pressure,count"):
        with pytest.raises(SourceError) as refused:  # a partial header, data, too few
            parser.parse(line)
        assert refused.value.reason == "header"
    assert parser.parse(b"state,ok,count,pressure") is None
    assert parser.parse(b"RUN,1,7,1.5") == {"pressure": 1.5, "count": 7, "ok": True,
                                            "state": "RUN"}
    assert parser.parse(b"pressure,count,ok,state") is None  # printed again, reordered
    assert parser.parse(b"1.5,7,1,RUN")["pressure"] == 1.5


def open_pty(link: Path) -> int:
    """A new pseudo-terminal; ``link`` points at its device side. Returns the master."""
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    os.close(slave)
    tmp = link.with_suffix(".new")
    os.symlink(name, tmp)
    os.replace(tmp, link)
    return master


@pytest.mark.e2e
def test_an_unplugged_device_is_reopened_and_nothing_after_is_lost(tmp_path: Path) -> None:
    import serial

    link = tmp_path / "ttyRIG"
    master = open_pty(link)
    got: list[dict] = []
    stop = threading.Event()
    counters = Counters()
    parser = parser_for(RIG, "csv", ["pressure", "count", "ok", "state"])
    reader = threading.Thread(target=run, args=(
        lambda: serial.Serial(str(link), 115200, timeout=0.05), parser, got.append,
        stop.is_set, counters), kwargs={"max_backoff": 0.2})
    reader.start()
    try:
        time.sleep(0.5)
        os.write(master, b"1.0,1,1,A\n2.0,2,0,B\n")
        wait_until(lambda: len(got) == 2, what="the first two lines")
        os.close(master)  # unplugged
        link.unlink()
        wait_until(lambda: counters.reopened >= 1, what="the unplug noticed")
        time.sleep(0.5)  # it tries again with backoff while the device is away
        master = open_pty(link)  # plugged in again
        time.sleep(0.5)
        os.write(master, b"3.0,3,1,C\n")
        wait_until(lambda: len(got) == 3, what="the line after the device came back")
    finally:
        stop.set()
        reader.join(TIMEOUT)
        os.close(master)
    assert [r["count"] for r in got] == [1, 2, 3]
    assert all(isinstance(r["time"], int) for r in got)  # stamped on arrival


@pytest.mark.e2e
def test_1_khz_of_csv_through_a_pty_reaches_the_cache_exactly(tmp_path: Path) -> None:
    """Lines at 1 kHz for 10 s (SPEEDDATA_SERIAL_SECONDS), cut at random places, with 100
    garbage lines among them: every good line is in the cache with its values, no
    garbage is."""
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    store_schema(schemas, RIG.schema, Registry())
    settings = relay_settings(tmp_path, channels={"dir": str(schemas), "legacy": []})
    relay = start_relay(tmp_path, settings)
    config = write_file(tmp_path / "source.toml", {**settings, "relay": {
        **settings["relay"], "port": relay.port}})
    link = tmp_path / "ttyRIG"
    master = open_pty(link)
    log_path = tmp_path / "source.log"
    with log_path.open("w") as log:
        source = subprocess.Popen(
            [sys.executable, "-m", "speeddata", "source", "serial", "--port", str(link),
             "--channel", "rig", "--format", "csv", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT)
    rng = random.Random(7)
    # 10 s here; SPEEDDATA_SERIAL_SECONDS=60 runs the full minute
    good = 1000 * int(os.environ.get("SPEEDDATA_SERIAL_SECONDS", "10"))
    garbage = set(rng.sample(range(good), 100))
    try:
        time.sleep(1.5)  # the source has opened the port
        os.write(master, b"pressure,count,ok,state\n")
        started = time.monotonic()
        pending = b""
        for i in range(good):
            pending += f"{i / 8},{i},{i % 2},S{i % 7}\n".encode()
            if i in garbage:
                pending += b"\x00\xffnot,a,line\n"
            if i % 10 == 9:  # 1 kHz in bursts of ten, each cut at a random place
                cut = rng.randrange(len(pending))
                os.write(master, pending[:cut])
                os.write(master, pending[cut:])
                pending = b""
                time.sleep(max(0.0, started + (i + 1) / 1000 - time.monotonic()))
        os.write(master, pending)
        wait_until(lambda: relay.snapshot().get("channels", {}).get("rig", {}).get(
            "datagrams", 0) >= good, what=f"{good} rig datagrams")
    finally:
        source.send_signal(signal.SIGTERM)
        assert source.wait(TIMEOUT) == 0
        os.close(master)
        relay.stop()
    text = log_path.read_text()
    assert f"{good} records sent, 100 bad lines" in text, text[-2000:]
    result = pivot(relay.cache_dir, tmp_path / "rig.h5", 0, time.time_ns(), channels=["rig"])
    assert result.channels == {"rig": good}
    with h5py.File(tmp_path / "rig.h5") as h5:
        rig = h5["rig"]
        assert rig["count"][()].tolist() == list(range(good))
        assert rig["pressure"][()].tolist() == [i / 8 for i in range(good)]
        assert rig["ok"][()].tolist() == [bool(i % 2) for i in range(good)]
        assert [s.decode() for s in rig["state"][:14]] == [f"S{i % 7}" for i in range(14)]
