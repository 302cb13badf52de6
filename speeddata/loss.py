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
one carries the count. A new ``epoch`` (a restarted sender or relay) counts on from its
first report, the earlier loss kept.

Reports are not authenticated, so each is parsed into a checked frozen value
(``parse_sender_report``, ``parse_forward_report``: WireError with a ``reason``
otherwise), counts only for the link it came from, and ``Hop`` bounds what it may
claim (``plausible_growth``, ``EPOCH_QUIET_NS``, backwards counts refused). No sockets
and no clocks here: times are passed in.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fastavro

from speeddata import wire
from speeddata.errors import WireError
from speeddata.logs import Throttle

log = logging.getLogger("speeddata.loss")

REPORT_SECONDS = 1.0
WINDOW_NS = 10 * 10**9  # the recent figure: loss over about the last ten seconds
MAX_LINKS = 1000  # (source, channel) pairs that carried data; the quietest go first beyond
REPORT_ONLY_LINKS = 100  # pairs that only reported, in their own table
OUTAGE_RATE_HZ = 10_000  # loss a report may claim per second with nothing arriving ...
BURST = 1000  # ... and at once (``plausible_growth``)
EPOCH_QUIET_NS = 3 * 10**9  # a new epoch is taken once the link's current one is this quiet
LOG_SECONDS = 10.0
REFUSALS = ("epoch_conflict", "backwards", "implausible")
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
SENDER_REPORT_V2: dict[str, Any] = {
    **SENDER_REPORT, "name": "SenderReport2",
    "doc": "SenderReport with the sender's clock offset as its time probes measured it "
           "(speeddata.clocks); the relay takes both versions (reserved channel).",
    "fields": [*SENDER_REPORT["fields"],
               {"name": "offset", "type": "long",
                "doc": "the sender's clock minus the relay's (ns)"},
               {"name": "uncertainty", "type": "long",
                "doc": "half the round trip of the probe measured (ns); -1: not measured"}],
}
_SENDER_PARSED = fastavro.parse_schema(SENDER_REPORT)
_SENDER_V2_PARSED = fastavro.parse_schema(SENDER_REPORT_V2)
_FORWARD_PARSED = fastavro.parse_schema(FORWARD_REPORT)
SENDER_REPORT_HEADER = wire.header(wire.fingerprint(SENDER_REPORT))
SENDER_REPORT_V2_HEADER = wire.header(wire.fingerprint(SENDER_REPORT_V2))
FORWARD_REPORT_HEADER = wire.header(wire.fingerprint(FORWARD_REPORT))
RESERVED = {SENDER_REPORT_HEADER[2:], SENDER_REPORT_V2_HEADER[2:], FORWARD_REPORT_HEADER[2:]}
MAX_OFFSET_NS = 10**18  # about 31 years: a clock further off than that is no clock
MAX_UNCERTAINTY_NS = 10**10  # half the slowest round trip a probe is taken with, and more


INT64_MAX = 2**63 - 1
MAX_REPORT_BYTES = 4096  # a ForwardReport of PER_REPORT channels is under 2 kB
MAX_NAME = 200  # characters of a ForwardReport's name


@dataclass(frozen=True)
class SenderReport:
    """One sender's counts of one channel, checked: every count in 0..INT64_MAX."""

    time_ns: int
    sender: int  # the sender's epoch: random per start
    channel: bytes  # the channel's fingerprint
    sent: int
    failed: int
    offset_ns: int | None = None  # the sender's clock minus the relay's (a v2 report) ...
    uncertainty_ns: int | None = None  # ... within this; None: not measured


@dataclass(frozen=True)
class ForwardReport:
    """What one relay forwarded on one group, checked: at most ``PER_REPORT`` distinct
    channels, counts in 0..INT64_MAX, a name of printable characters."""

    time_ns: int
    relay: int  # the relay's epoch
    name: str  # host and worker, as the relay says: for people, never for matching
    channels: tuple[tuple[bytes, int], ...]  # (fingerprint, forwarded so far)


def _encode(header: bytes, parsed: Any, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(header)
    fastavro.schemaless_writer(buffer, parsed, record)
    return buffer.getvalue()


def _decode(header: bytes, parsed: Any, datagram: bytes | memoryview) -> dict[str, Any]:
    """The record in ``datagram``; WireError unless it is exactly one."""
    if len(datagram) > MAX_REPORT_BYTES:
        raise WireError("too_long", f"{len(datagram)}-byte report > {MAX_REPORT_BYTES}")
    if bytes(datagram[: len(header)]) != header:
        raise WireError("not_a_report", "datagram does not carry the report's header")
    body = io.BytesIO(bytes(datagram[len(header):]))
    try:
        record = fastavro.schemaless_reader(body, parsed, None)
    except Exception:  # whatever a garbled body makes fastavro raise: a refusal
        raise WireError("garbled", "report body is not one record of its schema") from None
    if body.tell() != len(body.getbuffer()):
        raise WireError("garbled", "report body has bytes after its record")
    return record


def _count(value: Any, what: str) -> int:
    """``value`` if it is an int in 0..INT64_MAX (fastavro reads longer varints too)."""
    if type(value) is not int or not 0 <= value <= INT64_MAX:
        raise WireError("out_of_range", f"{what} {value!r} is not in 0..2**63-1")
    return value


def sender_report(now_ns: int, sender: int, channel: bytes, sent: int, failed: int,
                  clock: tuple[int, int] | None = None) -> bytes:
    """A report datagram; with ``clock`` (offset, uncertainty in ns) the v2 schema."""
    record = {"time": now_ns, "sender": sender, "channel": channel, "sent": sent,
              "failed": failed}
    if clock is None:
        return _encode(SENDER_REPORT_HEADER, _SENDER_PARSED, record)
    return _encode(SENDER_REPORT_V2_HEADER, _SENDER_V2_PARSED,
                   {**record, "offset": clock[0], "uncertainty": clock[1]})


def parse_sender_report(datagram: bytes | memoryview) -> SenderReport:
    """The checked report in ``datagram`` (either version); WireError (with its
    ``reason``) otherwise: a v2 report's offset within ``MAX_OFFSET_NS`` and its
    uncertainty -1 (not measured) or 0..MAX_UNCERTAINTY_NS."""
    if bytes(datagram[: wire.HEADER_SIZE]) != SENDER_REPORT_V2_HEADER:
        r = _decode(SENDER_REPORT_HEADER, _SENDER_PARSED, datagram)
        return SenderReport(_count(r["time"], "time"), _epoch(r["sender"]), r["channel"],
                            _count(r["sent"], "sent"), _count(r["failed"], "failed"))
    r = _decode(SENDER_REPORT_V2_HEADER, _SENDER_V2_PARSED, datagram)
    offset, uncertainty = r["offset"], r["uncertainty"]
    if not (type(offset) is int and -MAX_OFFSET_NS <= offset <= MAX_OFFSET_NS
            and type(uncertainty) is int and -1 <= uncertainty <= MAX_UNCERTAINTY_NS):
        raise WireError("bad_clock", f"report clock offset {offset!r} ± {uncertainty!r} ns "
                        f"is not within ±{MAX_OFFSET_NS} ± 0..{MAX_UNCERTAINTY_NS}")
    measured = uncertainty >= 0
    return SenderReport(_count(r["time"], "time"), _epoch(r["sender"]), r["channel"],
                        _count(r["sent"], "sent"), _count(r["failed"], "failed"),
                        offset if measured else None, uncertainty if measured else None)


def read_sender_report(datagram: bytes | memoryview) -> SenderReport | None:
    """The report in ``datagram``, or None for anything that is not a valid one."""
    try:
        return parse_sender_report(datagram)
    except WireError:
        return None


def forward_reports(now_ns: int, relay: int, name: str, forwarded: dict[bytes, int]
                    ) -> list[bytes]:
    """The ForwardReport datagrams for ``forwarded`` (fingerprint: total), split so that
    each stays about a kilobyte (one Ethernet frame, no IP fragments on a LAN)."""
    items = [{"channel": fp, "forwarded": n} for fp, n in forwarded.items()]
    return [_encode(FORWARD_REPORT_HEADER, _FORWARD_PARSED, {
                "time": now_ns, "relay": relay, "name": name[:MAX_NAME],
                "channels": items[i : i + PER_REPORT]})
            for i in range(0, max(len(items), 1), PER_REPORT)]


def parse_forward_report(datagram: bytes | memoryview) -> ForwardReport:
    """The checked report in ``datagram``; WireError (with its ``reason``) otherwise."""
    r = _decode(FORWARD_REPORT_HEADER, _FORWARD_PARSED, datagram)
    name = r["name"]
    if len(name) > MAX_NAME or not name.isprintable():
        raise WireError("bad_name", f"report name of {len(name)} characters, printable: "
                        f"{name.isprintable()}")
    if len(r["channels"]) > PER_REPORT:
        raise WireError("too_many", f"{len(r['channels'])} channels in one report > "
                        f"{PER_REPORT}")
    channels = tuple((c["channel"], _count(c["forwarded"], "forwarded"))
                     for c in r["channels"])
    if len({fp for fp, _ in channels}) != len(channels):
        raise WireError("duplicate", "a channel is named twice in one report")
    return ForwardReport(_count(r["time"], "time"), _epoch(r["relay"]), name, channels)


def read_forward_report(datagram: bytes | memoryview) -> ForwardReport | None:
    """The report in ``datagram``, or None for anything that is not a valid one (for a
    consumer of the groups that counts the multicast hop itself, with ``Hop``)."""
    try:
        return parse_forward_report(datagram)
    except WireError:
        return None


def _epoch(value: int) -> int:
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise WireError("out_of_range", f"epoch {value} is not an int64")
    return value


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

    def reports(self, now_ns: int, counts: dict[bytes, tuple[int, int]],
                clock: tuple[int, int] | None = None) -> list[bytes]:
        """The reports of ``counts``: per channel fingerprint, (sent, failed) so far;
        ``clock``: the sender's offset and uncertainty (ns), when its probes measured it."""
        return [sender_report(now_ns, self.epoch, fp, sent, failed, clock)
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
    name: str = ""  # the far end, as it names itself (a relay's host and worker)
    report_ns: int | None = None  # when its latest report was taken (this end's clock)
    past_sent: int = 0  # of the far end's earlier epochs: a restart hides no loss
    past_lost: int = 0
    unverified: int = 0  # sent claimed beyond PLAUSIBLE, not counted as lost
    clock: tuple[int, int] | None = None  # (offset, uncertainty) ns, of a link with data
    history: deque[tuple[int, int, int]] = field(default_factory=deque)  # (ns, sent, arrived)

    def lost(self) -> int:
        return self.past_lost + (self.sent - self.base_sent) - (self.at_report - self.base_arrived)

    def window(self, now_ns: int) -> tuple[int, int]:
        """(sent, lost) over the reports of about the last ``WINDOW_NS``."""
        if not self.history:
            return 0, 0
        _, sent0, arrived0 = self.history[0]
        last_ns, sent1, arrived1 = self.history[-1]
        if now_ns - last_ns > WINDOW_NS:  # silent since: nothing recent
            return 0, 0
        return sent1 - sent0, (sent1 - sent0) - (arrived1 - arrived0)


def plausible_growth(arrived: int, elapsed_ns: int) -> int:
    """The most a far end's ``sent`` may grow between two of its reports, given what
    arrived from it meanwhile and this end's time between the two.

    Any loss up to half of what was sent (twice what arrived), plus an outage of
    ``OUTAGE_RATE_HZ`` for the time between the reports, plus ``BURST``: a forger gets
    at most that much loss per report onto a row, and only onto its own row (the key is
    its address and port). A claim beyond it is not counted as lost but as unverified.
    """
    return 2 * arrived + OUTAGE_RATE_HZ * max(elapsed_ns, 0) // 10**9 + BURST


def _trust_anyone(_source: Any) -> str:
    return "any host"


class Hop:
    """Loss on one hop: arrivals counted per (source, channel), matched with reports.

    Two bounded tables, each an LRU (an ``OrderedDict``, O(1) a datagram): the links
    that carried data (``max_links``), and the links that only reported
    (``max_report_only``), so that reports from thousands of ports, each a new link,
    never push out a link that carries data. A report-only link moves to the data table
    at its first datagram. Reports that do not fit the link are refused, counted by
    reason (``statistics()``) and logged at most every ``LOG_SECONDS``.
    """

    def __init__(self, max_links: int = MAX_LINKS, max_report_only: int = REPORT_ONLY_LINKS
                 ) -> None:
        self.max_links = max_links
        self.max_report_only = max_report_only
        self.links: OrderedDict[tuple[Any, str], Link] = OrderedDict()  # carried data
        self.report_only: OrderedDict[tuple[Any, str], Link] = OrderedDict()
        self.refused: dict[str, int] = dict.fromkeys(REFUSALS, 0)
        self.evicted = {"data": 0, "report_only": 0}
        self._log = Throttle(LOG_SECONDS)

    def get(self, key: tuple[Any, str]) -> Link | None:
        return self.links.get(key) or self.report_only.get(key)

    def arrived(self, key: tuple[Any, str], count: int, now_ns: int) -> None:
        link = self.links.get(key)
        if link is not None:
            self.links.move_to_end(key)
        else:
            link = self.report_only.pop(key, None) or Link()
            self.links[key] = link
            if len(self.links) > self.max_links:
                self.links.popitem(last=False)  # the least recently heard
                self.evicted["data"] += 1
        link.arrived += count

    def report(self, key: tuple[Any, str], epoch: int, sent: int, now_ns: int,
               arrived: int | None = None, failed: int = 0, name: str = "",
               clock: tuple[int, int] | None = None) -> str | None:
        """The far end of ``key`` says it has sent ``sent`` since it started (``epoch``);
        ``arrived``: what had arrived from it when the report did (default: all so far);
        ``clock``: its clock's offset and uncertainty, kept only on a link that carried
        data (a report from an address that sends none moves no channel's time).
        Returns None when taken; else the reason it was refused, or "implausible" when
        only its plausible part was taken."""
        link = self.links.get(key)
        if link is not None:
            self.links.move_to_end(key)
        else:
            link = self.report_only.get(key)
            if link is None:
                link = self.report_only[key] = Link()
                if len(self.report_only) > self.max_report_only:
                    self.report_only.popitem(last=False)
                    self.evicted["report_only"] += 1
            else:
                self.report_only.move_to_end(key)
        at = link.arrived if arrived is None else arrived
        if link.epoch is not None and link.epoch != epoch:
            assert link.report_ns is not None
            if now_ns - link.report_ns < EPOCH_QUIET_NS:
                return self._refuse("epoch_conflict", key, now_ns, f"epoch {epoch} while "
                                    f"epoch {link.epoch} reports")
            link.past_sent += link.sent - link.base_sent  # restarted: earlier loss stays
            link.past_lost = link.lost()
            link.epoch = None
        if link.epoch is None:  # the first report seen of this epoch: the counts start
            link.epoch, link.base_sent, link.base_arrived = epoch, sent, at
            link.sent, link.at_report, link.failed = sent, at, failed
            link.history.clear()
        if sent < link.sent or failed < link.failed:
            return self._refuse("backwards", key, now_ns, f"sent {sent} after {link.sent}")
        since = now_ns if link.report_ns is None else link.report_ns
        bound = plausible_growth(at - link.at_report, now_ns - since)
        cut = None
        if sent - link.sent > bound:
            excess = sent - link.sent - bound
            link.unverified += excess
            link.base_sent += excess  # the row counts the plausible part only
            cut = self._refuse("implausible", key, now_ns, f"sent grew by "
                               f"{sent - link.sent}, at most {bound} counted")
        link.sent, link.at_report, link.failed, link.report_ns = sent, at, failed, now_ns
        if clock is not None and key in self.links:
            link.clock = clock
        link.name = name or link.name
        link.history.append((now_ns, sent - link.base_sent, at))
        while link.history and now_ns - link.history[0][0] > WINDOW_NS:
            link.history.popleft()
        return cut

    def _refuse(self, reason: str, key: tuple[Any, str], now_ns: int, message: str) -> str:
        self.refused[reason] += 1
        if self._log.ready(now_ns / 1e9):
            log.warning("loss report from %s for %s refused (%s): %s; %s refused so far",
                        key[0], key[1], reason, message, self.refused)
        return reason

    def statistics(self) -> dict[str, Any]:
        return {"links": len(self.links), "report_only_links": len(self.report_only),
                "evicted": dict(self.evicted), "refused": dict(self.refused)}

    def figures(self, now_ns: int, source_name: Callable[[Any], str] = str,
                trust: Callable[[Any], str] = _trust_anyone) -> list[dict[str, Any]]:
        """Per reporting (source, channel): totals since its first report, and the last
        ten seconds. ``source`` is the address the reports came from (and the data, but
        for ``report_only`` rows), ``name`` what the far end calls itself, ``trust``
        whether its network is one ``[relay] allow`` lists. Sources that never reported
        are left out (a sender without reports: another library, an older speeddata)."""
        out = []
        rows = [*((kv, False) for kv in self.links.items()),
                *((kv, True) for kv in self.report_only.items())]
        for ((source, channel), link), report_only in sorted(rows, key=lambda r: str(r[0][0])):
            if link.epoch is None:
                continue
            sent = link.past_sent + link.sent - link.base_sent
            recent_sent, recent_lost = link.window(now_ns)
            out.append({
                "source": source_name(source), "channel": channel, "name": link.name,
                "sent": sent, "arrived": sent - link.lost(),
                "lost": link.lost(), "failed": link.failed,
                "lost_percent": round(100 * link.lost() / sent, 3) if sent else 0.0,
                "recent_sent": recent_sent, "recent_lost": recent_lost,
                "last_report_ns": link.report_ns, "unverified": link.unverified,
                "report_only": report_only, "trust": trust(source),
                "clock_offset_ns": link.clock[0] if link.clock else None,
                "clock_uncertainty_ns": link.clock[1] if link.clock else None,
            })
        return out


def trust_of(address: str | int, allow: Sequence[ipaddress.IPv4Network]) -> str:
    """How far a figure reported from ``address`` (an IPv4 address) can be trusted:
    ``allowed`` (a network ``[relay] allow`` lists, or this host: the kernel takes no
    127.x datagram from a network), ``outside allow`` (allow is set and does not list
    it: anyone may have sent it) or ``any host`` (no allow list)."""
    if not allow:
        return "any host"
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return "outside allow"
    return "allowed" if ip.is_loopback or any(ip in n for n in allow) else "outside allow"


def address_name(key: int) -> str:
    """A sender key as the relay packs it (IPv4 << 16 | port) as ``a.b.c.d:port``."""
    ip = key >> 16
    return f"{ip >> 24}.{ip >> 16 & 255}.{ip >> 8 & 255}.{ip & 255}:{key & 0xFFFF}"


def address_of(key: int) -> tuple[str, int]:
    """A sender key (IPv4 << 16 | port) as a socket address, to answer it."""
    name, _, port = address_name(key).rpartition(":")
    return name, int(port)
