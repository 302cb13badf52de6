"""Loss counted end to end: each hop's far end says what it sent, the near end compares.

A datagram lost between a sender and the relay (Wi-Fi, a switch, a full buffer), or
between the relay and a consumer of the multicast groups, is otherwise counted nowhere.
Two reports travel as ordinary single-object datagrams of reserved schemas:

- ``SenderReport``: a sender, once a second while it sends (and when it closes), to the
  relay, per channel: datagrams sent and sends failed since it started;
- ``ForwardReport``: each relay, once a second, on each multicast group: datagrams of
  each channel forwarded there since it started.

The report goes out on the socket the data goes out on, so it arrives after the data it
counts. The near end counts arrivals per (source address, channel); at a report, the loss
since the far end's first report is ``sent - arrived`` counted from that first report
(when the near end may have joined late). Totals make a lost report harmless: the next
one carries the count. A new ``epoch`` (a restarted sender or relay) starts the count
anew. No sockets and no clocks here: times are passed in.
"""

from __future__ import annotations

import io
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastavro

from speeddata import wire

REPORT_SECONDS = 1.0
WINDOW_NS = 10 * 10**9  # the recent figure: loss over about the last ten seconds
MAX_LINKS = 1000  # (source, channel) pairs followed; the quietest go first beyond this
PER_REPORT = 50  # channels per ForwardReport datagram (about 1 kB)

_FINGERPRINT = {"type": "fixed", "name": "Fingerprint", "size": 8}
_TIME = {"name": "time", "type": {"type": "long", "logicalType": "timestamp-nanos"}}
SENDER_REPORT: dict[str, Any] = {
    "type": "record", "name": "SenderReport", "namespace": "speeddata",
    "doc": "What one sender has sent of one channel since it started (reserved channel).",
    "fields": [
        _TIME,
        {"name": "sender", "type": "long", "doc": "random per sender start"},
        {"name": "channel", "type": _FINGERPRINT},
        {"name": "sent", "type": "long"},
        {"name": "failed", "type": "long", "doc": "sends the sender's OS refused"},
    ],
}
FORWARD_REPORT: dict[str, Any] = {
    "type": "record", "name": "ForwardReport", "namespace": "speeddata",
    "doc": "What one relay has forwarded on one group since it started (reserved channel).",
    "fields": [
        _TIME,
        {"name": "relay", "type": "long", "doc": "random per relay start"},
        {"name": "name", "type": "string", "doc": "host and relay worker, for people"},
        {"name": "channels", "type": {"type": "array", "items": {
            "type": "record", "name": "Forwarded", "fields": [
                {"name": "channel", "type": _FINGERPRINT},
                {"name": "forwarded", "type": "long"}]}}},
    ],
}
_SENDER_PARSED = fastavro.parse_schema(SENDER_REPORT)
_FORWARD_PARSED = fastavro.parse_schema(FORWARD_REPORT)
SENDER_REPORT_HEADER = wire.header(wire.fingerprint(SENDER_REPORT))
FORWARD_REPORT_HEADER = wire.header(wire.fingerprint(FORWARD_REPORT))
RESERVED = {SENDER_REPORT_HEADER[2:], FORWARD_REPORT_HEADER[2:]}


def _encode(header: bytes, parsed: Any, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(header)
    fastavro.schemaless_writer(buffer, parsed, record)
    return buffer.getvalue()


def _decode(header: bytes, parsed: Any, datagram: bytes | memoryview) -> dict[str, Any] | None:
    """The report in ``datagram``, or None for anything that is not a whole one."""
    if bytes(datagram[: len(header)]) != header:
        return None
    body = io.BytesIO(bytes(datagram[len(header):]))
    try:
        record = fastavro.schemaless_reader(body, parsed, None)
    except Exception:  # a garbled report is a rejected datagram, never an exception
        return None
    return record if body.tell() == len(body.getbuffer()) else None


def sender_report(now_ns: int, sender: int, channel: bytes, sent: int, failed: int) -> bytes:
    return _encode(SENDER_REPORT_HEADER, _SENDER_PARSED, {
        "time": now_ns, "sender": sender, "channel": channel, "sent": sent, "failed": failed})


def read_sender_report(datagram: bytes | memoryview) -> dict[str, Any] | None:
    return _decode(SENDER_REPORT_HEADER, _SENDER_PARSED, datagram)


def forward_reports(now_ns: int, relay: int, name: str, forwarded: dict[bytes, int]
                    ) -> list[bytes]:
    """The ForwardReport datagrams for ``forwarded`` (fingerprint: total), split so that
    each stays about a kilobyte (one Ethernet frame, no IP fragments on a LAN)."""
    items = [{"channel": fp, "forwarded": n} for fp, n in forwarded.items()]
    return [_encode(FORWARD_REPORT_HEADER, _FORWARD_PARSED, {
                "time": now_ns, "relay": relay, "name": name,
                "channels": items[i : i + PER_REPORT]})
            for i in range(0, max(len(items), 1), PER_REPORT)]


def read_forward_report(datagram: bytes | memoryview) -> dict[str, Any] | None:
    return _decode(FORWARD_REPORT_HEADER, _FORWARD_PARSED, datagram)


def new_epoch() -> int:
    """An id that tells a restarted sender or relay from the one before it."""
    return random.getrandbits(63)


class Reporter:
    """The sender's half: says when to report and makes the reports of a socket's counts.
    Reporting is due at once, so the first send of all is preceded by a report of zero
    and the relay counts from the very first datagram."""

    def __init__(self, seconds: float = REPORT_SECONDS) -> None:
        self.epoch = new_epoch()
        self.seconds = seconds
        self._next = float("-inf")

    def due(self, now: float) -> bool:
        """True once per ``seconds`` (of a monotonic ``now``): time to send ``reports()``."""
        if now < self._next:
            return False
        self._next = now + self.seconds
        return True

    def reports(self, now_ns: int, counts: dict[bytes, tuple[int, int]]) -> list[bytes]:
        """The reports of ``counts``: per channel fingerprint, (sent, failed) so far."""
        return [sender_report(now_ns, self.epoch, fp, sent, failed)
                for fp, (sent, failed) in counts.items()]


@dataclass
class Link:
    """One far end's datagrams of one channel arriving on one hop."""

    arrived: int = 0  # since this end first saw the source
    epoch: int | None = None
    base_sent: int = 0  # the far end's count at its first report seen (or restart) ...
    base_arrived: int = 0  # ... and what had arrived by then
    sent: int = 0  # the far end's latest count
    at_report: int = 0  # what had arrived when that report came
    failed: int = 0
    name: str = ""  # the far end, for people (a relay's host and worker)
    last_ns: int = 0  # the latest arrival or report
    history: deque[tuple[int, int, int]] = field(default_factory=deque)  # (ns, sent, arrived)

    def lost(self) -> int:
        return (self.sent - self.base_sent) - (self.at_report - self.base_arrived)

    def window(self, now_ns: int) -> tuple[int, int]:
        """(sent, lost) over the reports of about the last ``WINDOW_NS``."""
        if not self.history:
            return 0, 0
        _, sent0, arrived0 = self.history[0]
        last_ns, sent1, arrived1 = self.history[-1]
        if now_ns - last_ns > WINDOW_NS:  # silent since: nothing recent
            return 0, 0
        return sent1 - sent0, (sent1 - sent0) - (arrived1 - arrived0)


class Hop:
    """Loss on one hop: arrivals counted per (source, channel), matched with reports."""

    def __init__(self, max_links: int = MAX_LINKS) -> None:
        self.max_links = max_links
        self.links: dict[tuple[Any, str], Link] = {}

    def arrived(self, key: tuple[Any, str], count: int, now_ns: int) -> None:
        link = self.links.get(key)
        if link is None:
            if len(self.links) >= self.max_links:
                self._forget_quietest()
            link = self.links[key] = Link()
        link.arrived += count
        link.last_ns = now_ns

    def report(self, key: tuple[Any, str], epoch: int, sent: int, now_ns: int,
               arrived: int | None = None, failed: int = 0, name: str = "") -> None:
        """The far end of ``key`` says it has sent ``sent`` since it started (``epoch``);
        ``arrived``: what had arrived from it when the report did (default: all so far)."""
        link = self.links.get(key)
        if link is None:
            self.arrived(key, 0, now_ns)
            link = self.links[key]
        at = link.arrived if arrived is None else arrived
        if link.epoch != epoch or sent < link.sent:  # first report, or the far end restarted
            link.epoch, link.base_sent, link.base_arrived = epoch, sent, at
            link.history.clear()
        link.sent, link.at_report, link.failed, link.last_ns = sent, at, failed, now_ns
        link.name = name or link.name
        link.history.append((now_ns, sent, at))
        while link.history and now_ns - link.history[0][0] > WINDOW_NS:
            link.history.popleft()

    def _forget_quietest(self) -> None:
        quietest = min(self.links, key=lambda k: self.links[k].last_ns)
        del self.links[quietest]

    def figures(self, now_ns: int, source_name: Callable[[Any], str] = str
                ) -> list[dict[str, Any]]:
        """Per reporting (source, channel): totals since its first report, and the last
        ten seconds. Sources that never reported are left out (a sender without reports:
        another library, an older speeddata)."""
        out = []
        for (source, channel), link in sorted(self.links.items(), key=lambda kv: str(kv[0])):
            if link.epoch is None:
                continue
            sent = link.sent - link.base_sent
            recent_sent, recent_lost = link.window(now_ns)
            out.append({
                "source": source_name(source), "channel": channel, "name": link.name,
                "sent": sent, "arrived": link.at_report - link.base_arrived,
                "lost": link.lost(), "failed": link.failed,
                "lost_percent": round(100 * link.lost() / sent, 3) if sent else 0.0,
                "recent_sent": recent_sent, "recent_lost": recent_lost,
                "last_report_ns": link.history[-1][0] if link.history else None,
            })
        return out


def address_name(key: int) -> str:
    """A sender key as the relay packs it (IPv4 << 16 | port) as ``a.b.c.d:port``."""
    ip = key >> 16
    return f"{ip >> 24}.{ip >> 16 & 255}.{ip >> 8 & 255}.{ip & 255}:{key & 0xFFFF}"
