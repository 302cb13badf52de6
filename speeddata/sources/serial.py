"""A serial-port source: each line (or fixed-size binary frame) a device writes becomes
one record of a channel, sent to the relay.

    speeddata source serial --port /dev/ttyUSB0 --baud 115200 --channel rig --format csv

Framing and parsing are pure (bytes in, records out) and tested on their own; the loop
around them opens the port with pyserial, reopens it with backoff when the device is
unplugged, and counts bad input by reason instead of stopping: nothing a device sends
ends the source. As a library, pass your own ``Parser`` (subclass, ``parse(raw) ->
dict``) to ``run``.

The rules for what is a line:
- a line ends at LF, CR LF or a bare CR; an empty line is counted (``empty``);
- a line longer than ``MAX_LINE`` is dropped whole, up to its end (``overlong``): the
  buffer never holds more;
- after the port is opened, the bytes before the first line end are dropped
  (``partial``) unless the port was silent for one read timeout first: a device
  already sending may be in the middle of a line, and its tail parses as a wrong
  record (``5,7,1,RUN`` for ``1.5,7,1,RUN``);
- a CSV without ``--fields`` takes as its header the first line whose cells are all
  field names of the channel, naming every signal (a device that prints it again at
  reboot, maybe reordered, is followed); lines before are counted (``header``).
"""

from __future__ import annotations

import json
import logging
import math
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from speeddata.errors import SourceError, SpeeddataError
from speeddata.logs import Throttle
from speeddata.schemas import Channel, Signal

log = logging.getLogger("speeddata.serial")

MAX_LINE = 4096  # bytes: a "line" longer than this is garbage, dropped and counted
FORMATS = ("csv", "kv", "json", "struct:FMT")
LOG_EVERY_S = 5.0  # bad input is logged at most this often (with the counts so far)


@dataclass(frozen=True)
class Dropped:
    """Bytes a framer dropped, and why (a counter key)."""

    reason: str
    raw: bytes


class LineFramer:
    """Complete lines out of the chunks a port gives, whatever the chunks' boundaries
    (a line cut in half arrives whole); see the module's rules."""

    def __init__(self, mid_line: bool = False) -> None:
        self._buffer = bytearray()
        self._after_cr = False  # the last line ended at a CR: an LF next ends nothing
        self._overlong = False  # dropping the rest of an overlong line
        self._mid_line = mid_line  # dropping up to the first line end (opened mid-stream)

    def idle(self) -> None:
        """The port was silent for a read timeout: the next byte starts a line."""
        if not self._buffer:
            self._mid_line = False

    def feed(self, chunk: bytes) -> Iterator[bytes | Dropped]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        if chunk:
            self._after_cr = False
        self._buffer += chunk
        while True:
            ends = [i for i in (self._buffer.find(b"\n"), self._buffer.find(b"\r")) if i >= 0]
            end = min(ends) if ends else -1
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    if not self._overlong:
                        yield Dropped("overlong", bytes(self._buffer[:80]))
                    self._overlong = True
                    self._buffer.clear()
                return
            line = bytes(self._buffer[:end])
            terminator = self._buffer[end : end + 2]
            width = 2 if terminator == b"\r\n" else 1
            if terminator == b"\r" and end + 1 == len(self._buffer):
                self._after_cr = True  # its LF may come in the next chunk
            del self._buffer[: end + width]
            if self._overlong:
                self._overlong = False
            elif self._mid_line:
                self._mid_line = False
                if line:
                    yield Dropped("partial", line)
            elif len(line) > MAX_LINE:
                yield Dropped("overlong", line[:80])
            elif not line.strip():
                yield Dropped("empty", line)
            else:
                yield line


class FrameFramer:
    """Fixed-size binary frames, each starting with ``sync`` (bytes, may be empty): after
    garbage the framer finds the next sync and goes on. Without a sync, frames are
    taken back to back (garbage shifts them for good: give a sync)."""

    def __init__(self, size: int, sync: bytes = b"") -> None:
        self.size = size + len(sync)
        self.sync = sync
        self._buffer = bytearray()
        self.skipped = 0  # bytes dropped to find a sync
        self._searching = False  # in a run of garbage: counted once, however it arrives

    def idle(self) -> None:
        """Frames have no partial rule: the sync finds the next frame."""

    def feed(self, chunk: bytes) -> Iterator[bytes | Dropped]:
        self._buffer += chunk
        while len(self._buffer) >= self.size:
            if self.sync and not self._buffer.startswith(self.sync):
                at = self._buffer.find(self.sync, 1)
                drop = at if at > 0 else len(self._buffer) - len(self.sync) + 1
                if not self._searching:
                    yield Dropped("sync", bytes(self._buffer[: min(drop, 80)]))
                self._searching = True
                del self._buffer[:drop]
                self.skipped += drop
                continue
            frame = bytes(self._buffer[len(self.sync) : self.size])
            del self._buffer[: self.size]
            self._searching = False
            yield frame


class _Number(str):
    """A JSON number, kept as its text: converted (and range-checked) by the field's
    type, never taken for a string, and ``1e999`` is not silently infinity."""


_INT_BITS = {"int": 32, "long": 64}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def to_int(value: Any, bits: int = 64) -> int:
    """An Avro int (32 bits) or long (64) from a device's value: an integer, or text or
    a float with an integral value (``7``, ``7.0``, ``1e3``); SourceError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SourceError("type", f"{value!r} is not an integer")
    if isinstance(value, int):
        number = value
    else:
        try:
            exact = Decimal(value.strip() if isinstance(value, str) else value)
        except InvalidOperation:
            raise SourceError("type", f"{value!r} is not an integer") from None
        if exact.is_nan():
            raise SourceError("type", f"{value!r} is not an integer")
        if exact.is_infinite() or exact.adjusted() > bits // 3:  # 10**(bits/3) > 2**bits
            raise SourceError("range", f"{value!r} is out of range for {bits} bits")
        if exact != exact.to_integral_value():
            raise SourceError("type", f"{value!r} is not an integer")
        number = int(exact)
    if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        raise SourceError("range", f"{number} is out of range for {bits} bits")
    return number


def to_float(value: Any, single: bool = False) -> float:
    """An Avro double (or float, 32 bits, when ``single``): a number or its text; NaN and
    infinities when spelled so, but a finite number too large is refused (``1e999``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SourceError("type", f"{value!r} is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any double
        raise SourceError("range", f"{value!r} is out of range for a double") from None
    except ValueError:
        raise SourceError("type", f"{value!r} is not a number") from None
    if math.isinf(number) and not (isinstance(value, float) or str(value).strip().lower()
                                   .lstrip("+-") in ("inf", "infinity")):
        raise SourceError("range", f"{value!r} is out of range for a double")
    if single:
        try:
            struct.pack("<f", number)
        except OverflowError:
            raise SourceError("range", f"{value!r} is out of range for a float") from None
    return number


def to_bool(value: Any) -> bool:
    """A boolean: true/false, 1/0, yes/no, on/off (any case); nothing else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str):
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
    raise SourceError("type", f"{value!r} is not a boolean")


def to_text(value: Any) -> str:
    """A string: text (a struct's bytes as UTF-8, its NUL padding removed)."""
    if isinstance(value, bytes):
        try:
            return value.rstrip(b"\x00").decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError("utf8", f"{value[:80]!r} is not UTF-8") from None
    if isinstance(value, str) and not isinstance(value, _Number):
        return str(value)
    raise SourceError("type", f"{value!r} is not text")


def _converter(signal: Signal) -> Callable[[Any], Any]:
    kind = signal.avro_type
    if kind in ("double", "float"):
        convert: Callable[[Any], Any] = lambda v: to_float(v, kind == "float")  # noqa: E731
    elif kind in _INT_BITS:
        convert = lambda v: to_int(v, _INT_BITS[kind])  # noqa: E731
    elif kind == "boolean":
        convert = to_bool
    elif kind == "enum":
        def convert(v: Any) -> str:
            text = to_text(v)
            if text not in signal.symbols:
                raise SourceError("symbol", f"{text[:40]!r} is none of {list(signal.symbols)}")
            return text
    else:  # string, and any other type: the encoder decides
        convert = to_text
    if not signal.nullable:
        return convert
    return lambda v: None if v is None or v == "" else convert(v)


@dataclass
class Parser:
    """Lines (or frames) to records of ``channel``. ``fields`` names the values in order
    (CSV without a header, struct); a CSV's header line names them when ``fields`` is
    empty. Each value is validated into the channel's type; anything else raises
    SourceError with a reason (the loop counts it)."""

    channel: Channel
    kind: str  # csv, kv, json or struct
    fields: list[str] = field(default_factory=list)
    struct_format: str = ""
    sync: bytes = b""  # struct: the bytes that start every frame

    def __post_init__(self) -> None:
        names = self._names()
        unknown = [f for f in self.fields if f not in names]
        if unknown:
            raise SpeeddataError(f"--fields {unknown} are not fields of channel "
                                 f"{self.channel.name!r} ({', '.join(sorted(names))})")
        self.header_given = bool(self.fields)
        if self.kind == "struct":
            try:
                self.unpack = struct.Struct(self.struct_format)
            except struct.error as exc:
                raise SpeeddataError(f"struct format {self.struct_format!r}: {exc}") from None
            count = len(self.unpack.unpack(bytes(self.unpack.size)))
            if count != len(self.fields):
                raise SpeeddataError(f"struct format {self.struct_format!r} has {count} "
                                     f"values: give as many --fields, not {len(self.fields)}")
        self.convert = {s.name: _converter(s) for s in self.channel.signals}
        self.convert[self.channel.time_field] = to_int
        self.optional = {s.name for s in self.channel.signals if s.nullable}
        self.optional.add(self.channel.time_field)  # stamped on arrival when absent

    def _names(self) -> set[str]:
        return {s.name for s in self.channel.signals} | {self.channel.time_field}

    @property
    def frame_size(self) -> int:
        return self.unpack.size if self.kind == "struct" else 0

    def parse(self, raw: bytes) -> dict[str, Any] | None:
        """A record, or None for a CSV header line taken as the field names."""
        if self.kind == "struct":
            pairs = dict(zip(self.fields, self.unpack.unpack(raw), strict=True))
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SourceError("utf8", f"not UTF-8 (byte {exc.start})") from None
            if self.kind == "json":
                pairs = _json_object(text)
            elif self.kind == "kv":
                items = text.replace(",", " ").replace(";", " ").split()
                if not all("=" in p for p in items):
                    raise SourceError("kv", "an item is not key=value")
                pairs = dict(p.split("=", 1) for p in items)
            else:
                cells = [c.strip() for c in text.split(",")]
                if cells == self.fields:  # the header again (the device restarted)
                    return None
                if not self.header_given and self._is_header(cells):
                    self.fields = cells
                    return None
                if not self.fields:
                    raise SourceError("header", "a line before the CSV header (a line "
                                      "naming the fields; or give --fields)")
                if len(cells) != len(self.fields):
                    raise SourceError("columns",
                                      f"{len(cells)} values for {len(self.fields)} fields")
                pairs = dict(zip(self.fields, cells, strict=True))
        record = {}
        for name, convert in self.convert.items():
            if name in pairs:
                try:
                    record[name] = convert(pairs[name])
                except SourceError as exc:
                    raise SourceError(exc.reason, f"field {name!r}: {exc}") from None
            elif name not in self.optional:
                raise SourceError("missing", f"no value for {name!r}")
            elif name != self.channel.time_field:
                record[name] = None
        return record

    def _is_header(self, cells: list[str]) -> bool:
        required = {s.name for s in self.channel.signals if not s.nullable}
        return (len(set(cells)) == len(cells) and set(cells) <= self._names()
                and required <= set(cells))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_float=_Number, parse_int=_Number,
                           parse_constant=_Number)
    except RecursionError:
        raise SourceError("json", "JSON nested too deep") from None
    except ValueError as exc:
        raise SourceError("json", f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SourceError("json", f"a JSON line must be an object, not {type(value).__name__}")
    return value


def parser_for(channel: Channel, fmt: str, fields: list[str], sync: bytes = b"") -> Parser:
    kind, _, spec = fmt.partition(":")
    if kind not in ("csv", "kv", "json", "struct") or (kind == "struct") != bool(spec):
        raise SpeeddataError(f"--format {fmt!r}: use csv, kv, json or struct:FMT (a Python "
                             "struct format like '<Iff')")
    if sync and kind != "struct":
        raise SpeeddataError("--sync is for struct frames only")
    return Parser(channel, kind, list(fields), spec, sync)


@dataclass
class Counters:
    """What a source did: records sent, and every refused line or frame by reason."""

    records: int = 0
    bad: int = 0
    reopened: int = 0
    last_error: str = ""
    reasons: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str, message: str, raw: bytes) -> None:
        self.bad += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self.last_error = f"{reason}: {message}: {raw[:80]!r}"

    def statistics(self) -> dict[str, Any]:
        return {"records": self.records, "bad": self.bad, "reasons": dict(self.reasons),
                "reopened": self.reopened, "last_error": self.last_error}


def _framer(parser: Parser) -> LineFramer | FrameFramer:
    if parser.kind == "struct":
        return FrameFramer(parser.frame_size, parser.sync)
    return LineFramer(mid_line=True)


def run(open_port: Callable[[], Any], parser: Parser, send: Callable[[dict], object],
        stopping: Callable[[], bool], counters: Counters | None = None,
        clock: Callable[[], int] = time.time_ns, max_backoff: float = 5.0) -> Counters:
    """Read the port until ``stopping()``: frame, parse, stamp with ``clock()`` when the
    record has no time, ``send``. Bad input is counted by reason and logged at most
    every ``LOG_EVERY_S``; a port that fails (unplugged) is reopened with backoff."""
    counters = counters or Counters()
    backoff = 0.25
    throttle = Throttle(LOG_EVERY_S)

    def refuse(reason: str, message: str, raw: bytes) -> None:
        counters.refuse(reason, message, raw)
        if throttle.ready(time.monotonic()):
            log.warning("bad input (%d so far: %s); last: %s", counters.bad,
                        ", ".join(f"{k} {v}" for k, v in sorted(counters.reasons.items())),
                        counters.last_error)

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
        framer = _framer(parser)
        try:
            while not stopping():
                chunk = port.read(max(1, port.in_waiting or 1))
                if not chunk:
                    framer.idle()
                    continue
                stamp = clock()
                for item in framer.feed(chunk):
                    if isinstance(item, Dropped):
                        refuse(item.reason, "dropped", item.raw)
                        continue
                    try:
                        record = parser.parse(item)
                        if record is None:
                            continue
                        record.setdefault(parser.channel.time_field, stamp)
                        send(record)
                    except SourceError as exc:
                        refuse(exc.reason, str(exc), item)
                        continue
                    except Exception as exc:  # a device's bytes never end the source: a
                        # parser of one's own that raises, or a record the encoder
                        # refuses, is counted like any bad line
                        refuse(type(exc).__name__, str(exc), item)
                        continue
                    counters.records += 1
        except OSError as exc:  # pyserial's SerialException is an OSError: unplugged
            counters.reopened += 1
            counters.last_error = str(exc)
            log.warning("serial port failed (%s); reopening", exc)
        finally:
            port.close()
    return counters
