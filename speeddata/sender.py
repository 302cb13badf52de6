"""The sender library: one Avro single-object datagram per sample, over UDP.

    from speeddata import Sender
    with Sender("motor") as motor:
        motor.send(speed=1500.0, torque=3.2, ...)   # time defaults to now

Network trouble never raises into the instrumented program: failed sends are counted
(``statistics()``). A record that does not match the schema raises RecordError naming
the field, because that is a programming error.

The sender also measures its clock against the relay's (``speeddata.clocks``): a burst
of time probes every ``probe`` seconds, sent and answered on the data socket while it
sends, and the best recent estimate in its loss reports.
"""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
from fastavro.validation import validate

from speeddata import clocks, loss, wire
from speeddata.encoding import compile_encoder
from speeddata.errors import RecordError, SchemaError, SpeeddataError
from speeddata.schemas import DEMO_DIR, Channel, channel_from_schema, load_file

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 26000
SO_TIMESTAMPNS = 35  # Linux (asm-generic/socket.h); Python does not name it
# An answer read within this of its arrival is stamped when read: that can only lengthen
# the round trip, while the kernel's stamp was seen up to 16 µs off the process's clock
# (a VM), which could put a probe outside the bound it states.
LATE_READ_NS = 1_000_000


def resolve_channel(channel_or_schema: str | Path | dict[str, Any] | Channel,
                    channels_dir: Path | None = None) -> Channel:
    """A Channel from a Channel, a schema dict, a ``.avsc`` path or a channel name.

    A bare name is looked up in ``channels_dir``, else in ``schemas/`` of the data
    directory (``$SPEEDDATA_HOME`` or the current one), else among the demo channels. The
    application's config file is never read: the sender runs inside other programs.
    """
    if isinstance(channel_or_schema, Channel):
        return channel_or_schema
    if isinstance(channel_or_schema, dict):
        return channel_from_schema(channel_or_schema)
    path = Path(channel_or_schema)
    if path.suffix == ".avsc" or path.exists():
        return load_file(path)
    from speeddata.config import home

    folders = [Path(channels_dir)] if channels_dir else [home() / "schemas", DEMO_DIR]
    for folder in folders:
        if (folder / f"{channel_or_schema}.avsc").exists():
            return load_file(folder / f"{channel_or_schema}.avsc")
    raise SchemaError(f"no schema for channel {str(channel_or_schema)!r} in "
                      f"{' or '.join(map(str, folders))}; pass the schema or its .avsc path")


class Encoder:
    """Encodes records of one channel to datagrams (header + body), reusing one buffer."""

    def __init__(self, channel: Channel, clock: Callable[[], int] = time.time_ns) -> None:
        self.channel = channel
        self.clock = clock
        self.header = wire.header(channel.fingerprint)
        self._buffer = io.BytesIO()
        self._time_field = channel.time_field
        self._fast = compile_encoder(channel.schema)

    def encode(self, record: dict[str, Any]) -> bytes:
        if self._time_field not in record:
            record = {**record, self._time_field: self.clock()}
        if self._fast is not None:
            try:
                return self.header + self._fast(record)
            except Exception:  # the generated encoder is terse: say which field is wrong
                raise self._explain(record) from None
        buffer = self._buffer
        buffer.seek(0)
        buffer.truncate()
        buffer.write(self.header)
        try:
            fastavro.schemaless_writer(buffer, self.channel.parsed, record)
        except Exception:  # fastavro's own errors are vague: say which field is wrong
            raise self._explain(record) from None
        return buffer.getvalue()

    def _explain(self, record: dict[str, Any]) -> RecordError:
        fields = {f.name for f in self.channel.signals} | {self._time_field}
        extra = sorted(set(record) - fields)
        if extra:
            return RecordError(
                f"channel {self.channel.name!r}: record has field(s) {extra} that the schema "
                f"does not define (fields: {sorted(fields)})"
            )
        missing = sorted(fields - set(record))
        if missing:
            return RecordError(f"channel {self.channel.name!r}: record lacks field(s) {missing}")
        try:
            validate(record, self.channel.parsed, raise_errors=True)
        except Exception as exc:
            details = getattr(exc, "errors", None)
            if details:
                first = details[0]
                field = str(getattr(first, "field", "")).removeprefix(f"{self.channel.name}.")
                return RecordError(
                    f"channel {self.channel.name!r}: field {field!r} = "
                    f"{getattr(first, 'datum', None)!r} does not fit type "
                    f"{json.dumps(getattr(first, 'schema', None))}"
                )
            return RecordError(f"channel {self.channel.name!r}: {exc}")
        return RecordError(f"channel {self.channel.name!r}: record cannot be encoded: {record!r}")


RELAY_TAKES_S = 1.0  # a relay takes a newly registered schema within this


def register_channel(url: str, channel: Channel, timeout: float = 10.0,
                     replace: bool = False) -> bool:
    """Register ``channel`` with the server at ``url`` (``http://host:port/?token=...``);
    True if it was new, or edited with ``replace`` (then wait until the relay has taken
    it), False if the server had this schema already. SpeeddataError says why it could
    not: another schema under this name without ``replace`` is refused (HTTP 409), so a
    program never takes over a channel by mistake."""
    import urllib.error
    import urllib.request
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    base = f"{parts.scheme or 'http'}://{parts.netloc}"
    token = parse_qs(parts.query).get("token", [""])[0]
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def call(method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise SpeeddataError(f"registering channel {channel.name!r} at {base}: HTTP "
                                 f"{exc.code}: {detail}") from None
        except (OSError, ValueError) as exc:
            raise SpeeddataError(f"registering channel {channel.name!r}: {base} cannot be "
                                 f"reached ({exc})") from None

    known = {c["name"]: c.get("fingerprint") for c in call("GET", "/api/channels")["channels"]}
    if known.get(channel.name) == channel.fingerprint.hex():
        return False
    call("POST", "/api/channels", {"schema": channel.schema, "replace": replace})
    time.sleep(RELAY_TAKES_S)
    return True


class Sender:
    """Sends records of one channel as UDP datagrams to a relay."""

    def __init__(
        self,
        channel_or_schema: str | Path | dict[str, Any] | Channel,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        channels_dir: Path | None = None,
        register: str | None = None,
        report: bool = True,
        replace: bool = False,
        probe: float | None = clocks.PROBE_SECONDS,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        """``register``: the stripchart server's URL as ``speeddata status --url`` prints
        it (with its ``?token=``): the channel's schema is registered there first, unless
        the server has it already, so a new source needs no file copied and no restart;
        ``replace`` lets an edited schema replace the one the server has under its name.

        ``report``: once a second while sending, and when closed, tell the relay how many
        datagrams were sent (``speeddata.loss``), so that it counts what the network lost.

        ``probe``: seconds between bursts of time probes (0 or None: none); the offset
        measured travels in the reports. ``clock``: the time source of the records'
        default time and of the probes (ns since the epoch; tests inject a wrong one)."""
        self.channel = resolve_channel(channel_or_schema, channels_dir)
        if register:
            register_channel(register, self.channel, replace=replace)
        self.clock = clock
        self.encoder = Encoder(self.channel, clock)
        try:  # once, like pystatsd: a name is never looked up again on the send path
            family, _, _, _, self.address = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM)[0]
        except (OSError, UnicodeError) as exc:
            raise SpeeddataError(f"relay address {host!r}:{port} cannot be resolved: {exc}"
                                 ) from None
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self.sent = 0
        self.failed = 0
        self.last_error: str = ""
        self.reporter = loss.Reporter() if report else None
        self.prober = clocks.Prober(probe) if probe else None
        self._kernel_stamps = False  # answers stamped by the kernel on arrival (Linux)
        if self.prober is not None and sys.platform.startswith("linux"):
            with contextlib.suppress(OSError):
                self._socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self._kernel_stamps = True

    def send(self, record: dict[str, Any] | None = None, /, **fields: Any) -> bool:
        """Encode and send one record (a dict, or keywords); False if the send failed.

        A missing ``time`` field is set to now (ns since the epoch).
        """
        datagram = self.encoder.encode(record if record is not None else fields)
        return self.send_datagram(datagram)

    def send_datagram(self, datagram: bytes) -> bool:
        """Send already encoded bytes; counts a failure instead of raising."""
        now = time.monotonic()
        if self.reporter is not None and self.reporter.due(now):
            self.report()
        if self.prober is not None:
            if self.prober.waiting(now):
                self.take_answers()
            if self.prober.due(now):
                self._probe(now)
        try:
            self._socket.sendto(datagram, self.address)
        except OSError as exc:
            self.failed += 1
            self.last_error = str(exc)
            return False
        self.sent += 1
        return True

    def statistics(self) -> dict[str, object]:
        return {"channel": self.channel.name, "sent": self.sent, "failed": self.failed,
                "last_error": self.last_error,
                **(self.prober.statistics() if self.prober is not None else {})}

    def _probe(self, now: float) -> None:
        assert self.prober is not None
        with contextlib.suppress(OSError):  # a lost probe is just not answered
            self._socket.sendto(self.prober.request(self.clock(), now), self.address)

    def take_answers(self) -> None:
        """Read the relay's answers to the time probes waiting on the socket (done by
        ``send``); one read more than ``LATE_READ_NS`` after it arrived is stamped t3 by
        the kernel's receive time (Linux), so a program that sends seldom still measures
        a short trip."""
        if self.prober is None or self._socket.fileno() < 0:
            return
        while True:
            try:
                data, ancillary, _, source = self._socket.recvmsg(
                    clocks.PROBE_SIZE + 1, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error of an earlier send, say: nothing to read
                continue
            t3 = self.clock()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    seconds, nanoseconds = struct.unpack_from("qq", value)
                    age = time.time_ns() - (seconds * 10**9 + nanoseconds)
                    if age > LATE_READ_NS:  # read late: the kernel's stamp is nearer
                        t3 -= age
            if source[:2] == self.address[:2]:  # anything else is not the relay's answer
                self.prober.take(data, t3)

    def sync(self, timeout: float = 1.0) -> clocks.Estimate | None:
        """Probe a burst now and wait up to ``timeout`` s for the answers: the estimate
        (None without probing or answers). ``send`` probes on its own; this is for a
        program that wants the offset before its first sample, and for tests."""
        if self.prober is None:
            return None
        deadline = time.monotonic() + timeout
        for _ in range(self.prober.burst):  # spaced: each finds the relay waiting, not
            self._probe(time.monotonic())   # lingering after the one before (linger_ms)
            gap = min(time.monotonic() + clocks.BURST_GAP_S, deadline)
            while time.monotonic() < gap:
                if select.select([self._socket], [], [], gap - time.monotonic())[0]:
                    self.take_answers()
        while self.prober.outstanding and time.monotonic() < deadline:
            if select.select([self._socket], [], [], deadline - time.monotonic())[0]:
                self.take_answers()
        return self.prober.estimate()

    def clock_estimate(self) -> clocks.Estimate | None:
        """The best recent measure of this sender's clock minus the relay's."""
        return None if self.prober is None else self.prober.estimate()

    def report(self) -> None:
        """Send the loss report now (due once a second; sent by ``send`` and ``close``)."""
        if self.reporter is None or self._socket.fileno() < 0:
            return
        counts = {self.channel.fingerprint: (self.sent, self.failed)}
        best = self.clock_estimate()
        clock = None if best is None else (best.offset_ns, best.uncertainty_ns)
        for datagram in self.reporter.reports(self.clock(), counts, clock):
            with contextlib.suppress(OSError):  # the next report carries the same totals
                self._socket.sendto(datagram, self.address)

    def close(self) -> None:
        """Report the final counts and close the socket."""
        self.report()
        self._socket.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
