"""The serial source: framing and parsing on their own, then real pseudo-terminal pairs
(pyserial on the slave side, the test writing as the device on the master side)."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import struct
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


GARB = channel_from_schema({"type": "record", "name": "garb", "fields": [
    {"name": "time", "type": "long"}, {"name": "i", "type": "int"},
    {"name": "l", "type": "long"}, {"name": "f", "type": "float"},
    {"name": "d", "type": "double"}, {"name": "ok", "type": "boolean"},
    {"name": "mode", "type": {"type": "enum", "name": "Mode", "symbols": ["A", "B"]}},
    {"name": "s", "type": "string"}]})
T0 = 1_795_000_000 * 10**9
STRUCT = "<qqqfd?1s8s"  # time, i (a q: it may hold more than an int), l, f, d, ok, mode, s
SYNC = b"\xaa\x55"


def valid(n: int) -> dict:
    """Record n: exact in every type (f a float32 value, s with a NUL in JSON)."""
    return {"time": T0 + n, "i": n - 500, "l": n * 2**40, "f": n / 4, "d": n / 3,
            "ok": n % 2 == 0, "mode": "AB"[n % 2], "s": f"s{n}é"}


def as_line(fmt: str, record: dict) -> bytes:
    if fmt == "json":
        return json.dumps(record).encode() + b"\n"
    if fmt == "csv":
        return (",".join(str(record[k]) for k in ("time", "i", "l", "f", "d")) +
                f",{int(record['ok'])},{record['mode']},{record['s']}\n").encode()
    s = record["s"] if isinstance(record["s"], bytes) else record["s"].encode()
    return SYNC + struct.pack(STRUCT, record["time"], record["i"], record["l"], record["f"],
                              record["d"], record["ok"], record["mode"].encode(), s)


def garbage(fmt: str) -> tuple[bytes, list[tuple[bytes, str]]]:
    """What the device is in the middle of when the port opens, and each garbage input
    with the reason it must be counted under."""
    row = valid(7)
    if fmt == "json":
        def edit(**changes: object) -> bytes:
            return json.dumps({**row, **changes}, ensure_ascii=False).encode() + b"\n"
        nested = b"[" * 1500 + b"]" * 1500 + b"\n"  # fits a line; deeper than Python goes
        kinds = [
            (b"null\n", "json"), (b"[]\n", "json"), (b"{}\n", "missing"),
            (b'"a string"\n', "json"), (b"true\n", "json"), (b"{not json\n", "json"),
            (edit(i=2**31), "range"), (edit(l=2**63), "range"), (edit(f=1e39), "range"),
            (edit(i=-(2**31) - 1), "range"),
            (edit(d=1).replace(b'"d": 1', b'"d": 1e999'), "range"),
            (edit(i=1).replace(b'"i": 1', b'"i": NaN'), "type"),
            (edit(l=1).replace(b'"l": 1', b'"l": ' + b"9" * 3500), "range"),
            (edit(i=None), "type"), (edit(ok="maybe"), "type"), (edit(mode="C"), "symbol"),
            (edit(s=5), "type"), (edit(i=1.5), "type"), (nested, "json"),
            (b"[" * 100_000 + b"\n", "overlong"), (b"x" * 10_000 + b"\n", "overlong"),
            (edit(s="\u00e9").replace("é".encode(), b"\xff\xfe"), "utf8"),
            (b"garbage\r", "json"),  # a bare CR ends a line
            (b"\n", "empty"), (b"   \r\n", "empty"), (b"\x00\x00\n", "json"),
        ]
        return b'"s": "cut"}\n', kinds
    if fmt == "csv":
        line = as_line("csv", row).rstrip(b"\n")
        cells = line.split(b",")

        def cell(k: int, value: bytes) -> bytes:
            return b",".join([*cells[:k], value, *cells[k + 1 :]]) + b"\n"
        header = b"time,i,l,f,d,ok,mode,s\n"
        kinds = [
            (line + b"\n", "header"),  # before the header: no names for its values
            (b"1,2\n", "header"),
            (header, ""),  # the header: taken, not counted
            (b"1,2\n", "columns"), (line + b",extra\n", "columns"),
            (cell(1, b"2147483648"), "range"), (cell(2, b"9223372036854775808"), "range"),
            (cell(3, b"1e39"), "range"), (cell(4, b"1e999"), "range"),
            (cell(1, b"1.5"), "type"), (cell(1, b"nan"), "type"), (cell(1, b""), "type"),
            (cell(0, b"null"), "type"), (cell(5, b"maybe"), "type"), (cell(6, b"C"), "symbol"),
            (cell(7, b"\xff\xfe"), "utf8"), (b"x" * 10_000 + b"\n", "overlong"),
            (b"[" * 100_000 + b"\n", "overlong"),
            (b"a\r", "columns"),  # a bare CR ends a line
            (b"\n", "empty"), (b"\t\r\n", "empty"), (b"\x00\n", "columns"),
            (header.replace(b"time,i", b"i,time"), ""),  # printed again, reordered
            (header, ""),
        ]
        return b"ssure,ok,mode,s\n", kinds  # the tail of a header: never taken for one

    def frame(**changes: object) -> bytes:
        return as_line("struct", {**row, **changes})

    kinds = [
        (b"\xab\x55" + frame()[2:], "sync"),  # a frame with a bad sync: skipped whole
        (b"noise without the sync's first byte", "sync"),
        (frame(i=2**31), "range"), (frame(f=float("nan"))[:-1] + b"\xff", "utf8"),
        (frame(mode="C"), "symbol"), (frame(s=b"\xc3"), "utf8"),
    ]
    return b"", kinds


def write_all(master: int, data: bytes) -> None:
    while data:
        data = data[os.write(master, data[:4096]):]


@pytest.mark.parametrize("fmt", ["json", "csv", "struct"])
def test_no_garbage_stops_the_source_and_every_valid_line_is_cached(
        tmp_path: Path, fmt: str) -> None:
    """Through a real pty: the port opens while the device is mid-line; every kind of
    garbage, each followed by a valid line, then random bytes, then 1,000 valid lines.
    Each garbage input is counted under its reason, the source never stops, and the
    cache (written as the relay writes it, read back with fastavro) holds exactly the
    valid records."""
    import fastavro
    import serial

    from speeddata.cache.store import CacheWriter
    from speeddata.sender import Encoder

    link = tmp_path / "ttyGARB"
    master = open_pty(link)
    partial, kinds = garbage(fmt)
    if fmt == "struct":
        parser = parser_for(GARB, f"struct:{STRUCT}", ["time", "i", "l", "f", "d", "ok",
                                                      "mode", "s"], SYNC)
    else:
        parser = parser_for(GARB, fmt, [])
    writer = CacheWriter(tmp_path / "cache", 2**30, 600)
    encoder = Encoder(GARB)
    accepted = GARB.check

    def send(record: dict) -> None:
        body = encoder.encode(record)[10:]
        assert accepted.valid_bodies([body]).all()  # the relay would cache it
        writer.append(GARB, [body], T0)

    opened = threading.Event()

    def open_mid_line() -> serial.Serial:
        port = serial.Serial(str(link), 115200, timeout=0.05)  # drops what came before
        write_all(master, partial)  # already on its way when the port opened
        wait_until(lambda: port.in_waiting >= len(partial), what="the partial line")
        opened.set()
        return port

    stop = threading.Event()
    counters = Counters()
    reader = threading.Thread(target=run, args=(open_mid_line, parser, send, stop.is_set,
                                                counters))
    reader.start()
    expected = []
    reasons: dict[str, int] = {"partial": 1} if partial else {}
    headed = fmt != "csv"
    try:
        assert opened.wait(TIMEOUT)
        for n, (junk, reason) in enumerate(kinds):
            write_all(master, junk)
            if reason:
                reasons[reason] = reasons.get(reason, 0) + 1
            headed = headed or junk.startswith(b"time,")
            if not headed or not reason:
                continue  # CSV: no valid line before the header, nor after a header
            write_all(master, as_line(fmt, valid(n)))
            expected.append(valid(n))
        wait_until(lambda: counters.bad >= sum(reasons.values()) and
                   counters.records >= len(expected), what="the garbage counted")
        assert counters.reasons == reasons
        rng = random.Random(20)
        noise = bytes(rng.choice([b for b in range(256) if b != SYNC[0]]) for _ in range(3000))
        write_all(master, noise + (b"\n" if fmt != "struct" else b""))
        for n in range(1000, 2000):
            write_all(master, as_line(fmt, valid(n)))
            expected.append(valid(n))
        wait_until(lambda: counters.records == len(expected), what="every valid line")
    finally:
        stop.set()
        reader.join(TIMEOUT)
        os.close(master)
        writer.close()
    assert not reader.is_alive()
    assert counters.bad > sum(reasons.values())  # the random bytes were counted too
    cached = [r for path in sorted((tmp_path / "cache" / "garb").glob("*.avro"))
              for r in fastavro.reader(path.open("rb"))]
    assert cached == expected


def test_a_run_of_garbage_between_frames_counts_once_however_it_arrives() -> None:
    data = b"\xaa\x55ABCD" + b"junk and more junk" + b"\xaa\x55EFGH" + b"x" + b"\xaa\x55IJKL"
    for step in (1, 3, 7, len(data)):
        framer = FrameFramer(4, sync=b"\xaa\x55")
        got = [f for i in range(0, len(data), step) for f in framer.feed(data[i : i + step])]
        assert [f for f in got if isinstance(f, bytes)] == [b"ABCD", b"EFGH", b"IJKL"]
        assert [f.reason for f in got if isinstance(f, Dropped)] == ["sync", "sync"], step
