"""A serial-port source: each line (or fixed-size binary frame) a device writes becomes
one record of a channel, sent to the relay.

    speeddata source serial --port /dev/ttyUSB0 --baud 115200 --channel rig --format csv

Framing and parsing are pure (bytes in, records out) and tested on their own; the loop
around them opens the port with pyserial, reopens it with backoff when the device is
unplugged, and counts bad lines instead of stopping. As a library, pass your own
``parse(line) -> dict`` to ``run``.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from speeddata.errors import SpeeddataError
from speeddata.schemas import Channel

log = logging.getLogger("speeddata.serial")

MAX_LINE = 4096  # bytes: a "line" longer than this is garbage, dropped and counted
FORMATS = ("csv", "kv", "json", "struct:FMT")


class LineFramer:
    """Complete lines out of the chunks a port gives, whatever the chunks' boundaries
    (a line cut in half arrives whole); CR LF or LF; overlong runs are dropped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.overlong = 0

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self._buffer += chunk
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    self._buffer.clear()
                    self.overlong += 1
                return
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if len(line) > MAX_LINE:
                self.overlong += 1
            elif line.strip():
                yield line


class FrameFramer:
    """Fixed-size binary frames, each starting with ``sync`` (bytes, may be empty): after
    garbage the framer finds the next sync and goes on."""

    def __init__(self, size: int, sync: bytes = b"") -> None:
        self.size = size + len(sync)
        self.sync = sync
        self._buffer = bytearray()
        self.skipped = 0  # bytes dropped to find a sync

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self._buffer += chunk
        while len(self._buffer) >= self.size:
            if self.sync and not self._buffer.startswith(self.sync):
                at = self._buffer.find(self.sync, 1)
                drop = at if at > 0 else len(self._buffer) - len(self.sync) + 1
                del self._buffer[:drop]
                self.skipped += drop
                continue
            frame = bytes(self._buffer[len(self.sync) : self.size])
            del self._buffer[: self.size]
            yield frame


def _converter(channel: Channel, name: str) -> Callable[[Any], Any]:
    signal = channel.signal(name)
    if signal.avro_type in ("double", "float"):
        return float
    if signal.avro_type in ("int", "long"):
        return lambda v: int(float(v)) if isinstance(v, str) and "." in v else int(v)
    if signal.avro_type == "boolean":
        return lambda v: v if isinstance(v, bool) else str(v).strip().lower() in (
            "1", "true", "yes", "on")
    return str


@dataclass
class Parser:
    """Lines (or frames) to records of ``channel``. ``fields`` names the values in order
    (CSV without a header, struct); a CSV's first line is its header when ``fields`` is
    empty. Values are converted to the channel's types; a record missing a field, or a
    value that does not convert, raises ValueError (the loop counts it)."""

    channel: Channel
    kind: str  # csv, kv, json or struct
    fields: list[str] = field(default_factory=list)
    struct_format: str = ""

    def __post_init__(self) -> None:
        names = {s.name for s in self.channel.signals} | {self.channel.time_field}
        unknown = [f for f in self.fields if f not in names]
        if unknown:
            raise SpeeddataError(f"--fields {unknown} are not fields of channel "
                                 f"{self.channel.name!r} ({', '.join(sorted(names))})")
        if self.kind == "struct":
            try:
                self.unpack = struct.Struct(self.struct_format)
            except struct.error as exc:
                raise SpeeddataError(f"struct format {self.struct_format!r}: {exc}") from None
            count = len(self.unpack.unpack(bytes(self.unpack.size)))
            if count != len(self.fields):
                raise SpeeddataError(f"struct format {self.struct_format!r} has {count} "
                                     f"values: give as many --fields, not {len(self.fields)}")
        self.convert = {s.name: _converter(self.channel, s.name) for s in self.channel.signals}
        self.convert[self.channel.time_field] = int

    @property
    def frame_size(self) -> int:
        return self.unpack.size if self.kind == "struct" else 0

    def parse(self, raw: bytes) -> dict[str, Any] | None:
        """A record, or None for a CSV header line taken as the field names."""
        if self.kind == "struct":
            pairs = dict(zip(self.fields, self.unpack.unpack(raw), strict=True))
        else:
            text = raw.decode("utf-8")
            if self.kind == "json":
                pairs = json.loads(text)
                if not isinstance(pairs, dict):
                    raise ValueError("a JSON line must be an object")
            elif self.kind == "kv":
                items = [p for p in text.replace(",", " ").replace(";", " ").split() if p]
                pairs = dict(p.split("=", 1) for p in items)
            else:
                cells = [c.strip() for c in text.split(",")]
                if not self.fields:
                    self.fields = cells
                    self.__post_init__()  # the header names fields: check them once
                    return None
                if len(cells) != len(self.fields):
                    raise ValueError(f"{len(cells)} values for {len(self.fields)} fields")
                pairs = dict(zip(self.fields, cells, strict=True))
        record = {}
        for name, convert in self.convert.items():
            if name in pairs:
                record[name] = convert(pairs[name])
            elif name != self.channel.time_field:
                raise ValueError(f"no value for {name!r}")
        return record


def parser_for(channel: Channel, fmt: str, fields: list[str]) -> Parser:
    kind, _, spec = fmt.partition(":")
    if kind not in ("csv", "kv", "json", "struct") or (kind == "struct") != bool(spec):
        raise SpeeddataError(f"--format {fmt!r}: use csv, kv, json or struct:FMT (a Python "
                             "struct format like '<Iff')")
    return Parser(channel, kind, list(fields), spec)


@dataclass
class Counters:
    records: int = 0
    bad: int = 0
    reopened: int = 0
    last_error: str = ""


def run(open_port: Callable[[], Any], parser: Parser, send: Callable[[dict], object],
        stopping: Callable[[], bool], counters: Counters | None = None,
        clock: Callable[[], int] = time.time_ns, max_backoff: float = 5.0) -> Counters:
    """Read the port until ``stopping()``: frame, parse, stamp with ``clock()`` when the
    record has no time, ``send``. A bad line is counted and logged at most every 5 s; a
    port that fails (unplugged) is reopened with backoff."""
    counters = counters or Counters()
    backoff = 0.25
    last_log = 0.0
    while not stopping():
        try:
            port = open_port()
        except OSError as exc:
            counters.last_error = str(exc)
            log.warning("serial port cannot be opened (%s); trying again in %.1f s", exc,
                        backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
            continue
        backoff = 0.25
        framer: LineFramer | FrameFramer = (
            FrameFramer(parser.frame_size) if parser.kind == "struct" else LineFramer())
        try:
            while not stopping():
                chunk = port.read(max(1, port.in_waiting or 1))
                stamp = clock()
                for raw in framer.feed(chunk):
                    try:
                        record = parser.parse(raw)
                    except (ValueError, KeyError, UnicodeDecodeError, struct.error) as exc:
                        counters.bad += 1
                        counters.last_error = f"{exc}: {raw[:80]!r}"
                        if time.monotonic() - last_log > 5:
                            last_log = time.monotonic()
                            log.warning("bad line (%d so far): %s", counters.bad,
                                        counters.last_error)
                        continue
                    if record is None:
                        continue
                    record.setdefault(parser.channel.time_field, stamp)
                    send(record)
                    counters.records += 1
        except OSError as exc:  # pyserial's SerialException is an OSError: unplugged
            counters.reopened += 1
            counters.last_error = str(exc)
            log.warning("serial port failed (%s); reopening", exc)
        finally:
            port.close()
    return counters
