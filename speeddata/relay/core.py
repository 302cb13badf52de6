"""The relay's decisions, free of sockets and clocks.

``Router.route`` takes one received batch (the datagrams, the port they came in on and
the receive time) and says which bodies go to which channel's cache file, which
datagrams go to the full-rate group and which to the decimated one. Nothing is
decoded, but every body is checked (``bodycheck``) to be exactly one record of its
channel's schema: one malformed body would make the rest of its cache block unreadable.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from speeddata import clocks, loss, wire
from speeddata.errors import WireError
from speeddata.relay.pacing import Decimator
from speeddata.schemas import Channel, Registry

REPORT_FPS = {loss.SENDER_REPORT_HEADER[2:], loss.SENDER_REPORT_V2_HEADER[2:]}
MAX_CLOCK_POINTS = 10_000  # report offsets waiting for the series file (oldest dropped)
NONE = np.empty(0, dtype=np.int64)  # no datagrams: shared, so read-only
NONE.flags.writeable = False
MAX_UNKNOWN = 100  # unknown fingerprints listed in status (a flood of random ones is counted)
REASONS = ("too_short", "bad_marker", "unknown_schema", "too_long", "bad_body",
           "bad_legacy_body", "not_allowed", "bad_report")


def allowed_sources(sources: np.ndarray, networks: Sequence[ipaddress.IPv4Network]
                    ) -> np.ndarray:
    """Which source addresses (IPv4 as uint32 in host order) lie in one of ``networks``."""
    ok = np.zeros(len(sources), dtype=bool)
    for net in networks:
        ok |= (sources & np.uint32(int(net.netmask))) == np.uint32(int(net.network_address))
    return ok


@dataclass
class ChannelCounters:
    datagrams: int = 0
    bytes: int = 0
    decimated: int = 0
    bad_body: int = 0  # rejected: the body is not exactly one record of the schema
    cache_dropped: int = 0  # accepted but not cached (a full disk)


@dataclass
class Routed:
    """What to do with one batch."""

    bodies: dict[Channel, list[memoryview]] = field(default_factory=dict)
    full: list[memoryview | bytes] = field(default_factory=list)  # every accepted datagram
    decimated: list[memoryview | bytes] = field(default_factory=list)
    rejected: int = 0
    reports: list[tuple[int, loss.SenderReport]] = field(default_factory=list)  # (index, it)
    arrivals: list[tuple[int, str]] = field(default_factory=list)  # (index, channel) accepted
    probes: list[tuple[int, clocks.Probe]] = field(default_factory=list)  # (sender, to answer)
    probed: int = 0  # time probes seen, answered or refused (``clocks.ProbeBudget``)


class Router:
    """Routes datagrams to channels by fingerprint, and bare bodies by port."""

    def __init__(
        self,
        registry: Registry,
        legacy_ports: dict[int, Channel] | None = None,
        max_datagram: int = 16384,
        decimated_rate_hz: float = 50.0,
        allow: Sequence[ipaddress.IPv4Network] = (),
    ) -> None:
        self.registry = registry
        self.allow = list(allow)  # empty: datagrams from any host
        self.legacy_ports = legacy_ports or {}
        self.max_datagram = max_datagram
        self.decimator = Decimator(decimated_rate_hz)
        self.counters: dict[str, ChannelCounters] = {c.name: ChannelCounters() for c in registry}
        self.rejected: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.last_rejection: dict[str, str] = {}
        # fingerprints no schema has: what is sending, so the user sees what to register
        self.unknown: dict[str, dict[str, object]] = {}
        self.hop = loss.Hop()  # arrivals per (sender, channel), matched with SenderReports
        self.probes = clocks.ProbeBudget()  # which time probes are answered
        # (receive ns, source, channel, offset, uncertainty) for ``cache.clocks.OffsetLog``
        self.clock_points: deque[tuple[int, str, str, int, int]] = deque(maxlen=MAX_CLOCK_POINTS)
        self._legacy_headers = {
            port: wire.header(channel.fingerprint) for port, channel in self.legacy_ports.items()
        }

    def set_registry(self, registry: Registry) -> None:
        """Route by ``registry`` from the next datagram on (channels added, edited or
        retired while running). A retired legacy channel's port takes no more bodies."""
        self.registry = registry
        self.legacy_ports = {port: registry.get(channel.name)
                             for port, channel in self.legacy_ports.items()
                             if registry.get(channel.name) is not None}
        self._legacy_headers = {port: wire.header(channel.fingerprint)
                                for port, channel in self.legacy_ports.items()}
        for key in [k for k in self.unknown if bytes.fromhex(k) in registry.fingerprints]:
            del self.unknown[key]  # registered now: no longer a stranger

    def reject(self, reason: str, message: str, count: int = 1) -> None:
        """Count ``count`` rejected datagrams; ``message`` describes the latest."""
        self.rejected[reason] += count
        self.last_rejection[reason] = message

    def reject_unknown(self, fingerprint: bytes, now_ns: int, sender: int | None) -> None:
        """Count a datagram whose fingerprint no schema has, by fingerprint (at most
        ``MAX_UNKNOWN`` of them are listed; the counter counts all)."""
        key = fingerprint.hex()
        self.reject("unknown_schema", f"no channel has fingerprint {key}")
        seen = self.unknown.get(key)
        if seen is None:
            if len(self.unknown) >= MAX_UNKNOWN:
                return
            seen = self.unknown[key] = {"count": 0, "first_seen_ns": now_ns}
        seen["count"] = int(seen["count"]) + 1
        seen["last_seen_ns"] = now_ns
        if sender is not None:
            seen["source"] = loss.address_name(int(sender))

    def reject_bodies(self, channel: Channel, count: int, size: int, legacy: bool = False
                      ) -> None:
        """Count ``count`` datagrams of ``channel`` whose body is not one record."""
        if legacy:
            self.reject("bad_legacy_body", f"{size}-byte datagram is neither a known single-"
                        f"object datagram nor a body of legacy channel {channel.name!r}", count)
        else:
            self.reject("bad_body", f"{size}-byte datagram of channel {channel.name!r}: its "
                        "body is not exactly one record of the schema (truncated, extended or "
                        "garbled)", count)
        self.counter(channel).bad_body += count

    def counter(self, channel: Channel) -> ChannelCounters:
        counters = self.counters.get(channel.name)
        if counters is None:
            counters = self.counters[channel.name] = ChannelCounters()
        return counters

    def route(self, datagrams: Sequence[memoryview], port: int, now_ns: int,
              senders: Sequence[int] | None = None, take_reports: bool = True) -> Routed:
        """``senders``: each datagram's sender (IPv4 << 16 | port), where the socket layer
        read them. SenderReports found are taken at the end of the batch, or left in
        ``Routed.reports`` for the caller (``take_reports=False``)."""
        routed = Routed()
        table = self.registry.fingerprints
        legacy = self.legacy_ports.get(port)
        # (arrival index, body, datagram to forward, size, is a legacy body) per channel
        candidates: dict[Channel, list[tuple[int, memoryview, memoryview | bytes, int, bool]]]
        candidates = {}
        unknown: dict[int, bytes] = {}  # legacy candidates that carry a single-object header
        for i, datagram in enumerate(datagrams):
            size = len(datagram)
            if size > self.max_datagram:
                self.reject("too_long", f"datagram of {size} bytes > max_datagram")
                continue
            marked = size >= wire.HEADER_SIZE and datagram[0] == 0xC3 and datagram[1] == 0x01
            channel = table.get(bytes(datagram[2:10])) if marked else None
            if channel is None and marked and bytes(datagram[2:10]) == clocks.PROBE_FP:
                routed.probed += 1
                sender = None if senders is None else int(senders[i])
                if (probe := self.probes.take(datagram, now_ns, sender)) is not None:
                    routed.probes.append((sender, probe))  # type: ignore[arg-type]
                continue
            if channel is None and marked and bytes(datagram[2:10]) in REPORT_FPS:
                try:
                    routed.reports.append((i, loss.parse_sender_report(datagram)))
                except WireError as exc:
                    self.reject("bad_report", f"{size}-byte sender report refused "
                                f"({exc.reason}): {exc}")
                continue
            if channel is not None:
                candidates.setdefault(channel, []).append(
                    (i, datagram[wire.HEADER_SIZE :], datagram, size, False))
            elif legacy is not None:
                if marked:
                    unknown[i] = bytes(datagram[2:10])
                candidates.setdefault(legacy, []).append(
                    (i, datagram, self._legacy_headers[port] + datagram, size, True))
            elif size < wire.HEADER_SIZE:
                self.reject("too_short", f"datagram of {size} bytes is shorter than a header")
            elif not marked:
                self.reject(
                    "bad_marker", f"datagram starts with {bytes(datagram[:2]).hex()}, not c301")
            else:
                self.reject_unknown(bytes(datagram[2:10]), now_ns,
                                    None if senders is None else senders[i])
        accepted = []
        for channel, items in candidates.items():
            valid = channel.check.valid_bodies([body for _, body, _, _, _ in items]).tolist()
            for (i, body, forward, size, is_legacy), good in zip(items, valid, strict=True):
                if good:
                    accepted.append((i, channel, body, forward, size))
                elif i in unknown:
                    self.reject_unknown(unknown[i], now_ns, None if senders is None else senders[i])
                else:
                    self.reject_bodies(channel, 1, size, is_legacy)
        routed.rejected = len(datagrams) - len(accepted) - len(routed.reports) - routed.probed
        for i, channel, body, forward, size in sorted(accepted, key=lambda a: a[0]):
            routed.arrivals.append((i, channel.name))
            routed.bodies.setdefault(channel, []).append(body)
            if senders is not None:
                self.hop.arrived((int(senders[i]), channel.name), 1, now_ns)
            counters = self.counter(channel)
            counters.datagrams += 1
            counters.bytes += size
            routed.full.append(forward)
            if self.decimator.grant(channel.name, now_ns, 1):
                counters.decimated += 1
                routed.decimated.append(forward)
        if senders is not None and take_reports:
            self.take_reports(routed.reports, routed.arrivals, senders, now_ns)
        return routed

    def take_reports(self, reports: list[tuple[int, loss.SenderReport]],
                     arrivals: list[tuple[int, str]], senders: Sequence[int], now_ns: int
                     ) -> None:
        """A batch's SenderReports, each matched with what had arrived before it: of the
        batch's ``arrivals`` (index, channel), those of the same sender and channel after
        a report are counted already, but not by the report. A report counts for the
        link it came from only (its sender's address and port, and its channel)."""
        for i, report in reports:
            channel = self.registry.by_fingerprint(report.channel)  # aliases too
            if channel is None:  # its datagrams are listed as unknown fingerprints instead
                continue
            sender = int(senders[i])
            later = sum(1 for j, name in arrivals
                        if j > i and name == channel.name and senders[j] == sender)
            key = (sender, channel.name)
            link = self.hop.get(key)
            arrived = (0 if link is None else link.arrived) - later
            clock = None if report.uncertainty_ns is None else (
                report.offset_ns, report.uncertainty_ns)
            self.hop.report(key, report.sender, report.sent, now_ns, arrived, report.failed,
                            clock=clock)
            if clock is not None and key in self.hop.links:  # only a link that carries data
                self.clock_points.append((now_ns, loss.address_name(sender), channel.name,
                                          *clock))

    def statistics(self) -> dict[str, object]:
        return {
            "channels": {name: vars(c).copy() for name, c in self.counters.items()},
            "rejected": dict(self.rejected),
            "last_rejection": dict(self.last_rejection),
            "unknown_fingerprints": {k: dict(v) for k, v in self.unknown.items()},
            "sender_reports": self.hop.statistics(),
            "time_probes": self.probes.statistics(),
        }

    def loss(self, now_ns: int) -> list[dict[str, object]]:
        """Per sender and channel: what it says it sent, what arrived, what was lost, and
        whether its network is one ``allow`` lists."""
        return self.hop.figures(now_ns, loss.address_name,
                                lambda key: loss.trust_of(int(key) >> 16, self.allow))


@dataclass
class Received:
    """One batch as the socket layer leaves it: datagram ``i`` is at ``i * slot``."""

    buffer: np.ndarray  # uint8, at least len(lengths) * slot bytes
    slot: int
    lengths: np.ndarray  # int64, one per datagram
    sources: np.ndarray | None = None  # uint32 IPv4 source addresses, when asked for
    ports: np.ndarray | None = None  # uint16 source ports, with the addresses

    def senders(self) -> np.ndarray | None:
        """Each datagram's sender as one number, IPv4 << 16 | port (``loss.address_name``)."""
        if self.sources is None or self.ports is None:
            return None
        return (self.sources.astype(np.uint64) << np.uint64(16)) | self.ports

    def datagram(self, i: int) -> memoryview:
        start = i * self.slot
        return memoryview(self.buffer)[start : start + int(self.lengths[i])]


@dataclass
class BatchRouted:
    """What to do with one batch, by slot index where the bytes can stay where they are."""

    # per channel: the bodies concatenated and how many
    writes: list[tuple[Channel, bytes | memoryview, int]] = field(default_factory=list)
    full: np.ndarray = field(default_factory=lambda: NONE)
    decimated: np.ndarray = field(default_factory=lambda: NONE)
    other: Routed = field(default_factory=Routed)  # legacy bodies and rejects, one by one


class BatchRouter:
    """``Router``'s decisions for a whole batch at once, with numpy.

    Single-object datagrams of known channels are recognised together: markers and
    fingerprints are read for every slot in a few array operations, and each channel's
    bodies are gathered with one copy. Everything else (legacy bare bodies, rejects)
    goes through ``Router.route`` one by one, so its rules and counters stay in one place.
    """

    def __init__(self, router: Router) -> None:
        self.router = router
        self._indices = np.arange(0)
        self._refresh()

    def _refresh(self) -> None:
        self._registry = self.router.registry
        table = self._registry.fingerprints
        # sorted as the numbers searchsorted compares, not as bytes
        fps = sorted(table, key=lambda fp: int.from_bytes(fp, "little"))
        self._fps = np.array([int.from_bytes(fp, "little") for fp in fps], dtype=np.uint64)
        self._channels = [table[fp] for fp in fps]

    def route(self, batch: Received, port: int, now_ns: int) -> BatchRouted:
        if self.router.registry is not self._registry:  # channels reloaded
            self._refresh()
        router = self.router
        n = len(batch.lengths)
        out = BatchRouted()
        if n == 0:
            return out
        senders = batch.senders()
        if len(self._indices) < n:
            self._indices = np.arange(n, dtype=np.int64)
        lengths = batch.lengths
        buf = batch.buffer
        heads = buf[: n * batch.slot].reshape(n, batch.slot)[:, : wire.HEADER_SIZE]
        excluded = None  # slots already rejected: from hosts not allowed, or garbled
        if router.allow and batch.sources is not None:
            allowed = allowed_sources(batch.sources, router.allow)
            if not allowed.all():
                excluded = ~allowed
                first = int(batch.sources[excluded.argmax()])
                router.reject("not_allowed", f"datagram from {ipaddress.IPv4Address(first)}, "
                              "which [relay] allow does not list", int(excluded.sum()))
        if excluded is None and (heads == heads[0]).all():
            channel = self._uniform_channel(bytes(heads[0]), lengths)
            if channel is not None:  # the common case: one sender's batch, a few array ops
                bodies = self._bodies(batch)
                valid = self._valid(channel, bodies, lengths - wire.HEADER_SIZE)
                if valid.all():
                    out.full = self._indices[:n]
                    out.writes.append((channel, memoryview(bodies), n))
                    out.decimated = self._account(channel, out.full, int(lengths.sum()),
                                                  now_ns, senders)
                    return out
                excluded = ~valid
                router.reject_bodies(channel, int(excluded.sum()),
                                     int(lengths[excluded.argmax()]))
        starts = np.arange(n, dtype=np.int64) * batch.slot
        ok = (lengths >= wire.HEADER_SIZE) & (lengths <= router.max_datagram)
        ok &= (buf[starts] == 0xC3) & (buf[starts + 1] == 0x01)
        fp = buf[starts[:, None] + np.arange(2, 10)].copy().view("<u8").ravel()
        if len(self._fps):
            where = np.minimum(np.searchsorted(self._fps, fp), len(self._fps) - 1)
            ok &= self._fps[where] == fp
        else:
            where = np.zeros(n, dtype=np.int64)
            ok[:] = False
        slow = ~ok if excluded is None else ~ok & ~excluded
        picked = NONE
        if slow.any():
            picked = np.flatnonzero(slow)
            out.other = router.route(
                [batch.datagram(int(i)) for i in picked], port, now_ns,
                None if senders is None else senders[picked].tolist(), take_reports=False)
        if excluded is not None:
            ok &= ~excluded
        accepted = np.flatnonzero(ok)
        if not len(accepted):
            self._take_reports(batch, picked, out, senders, now_ns)
            return out
        # Group by channel with one stable sort, gather every body with one copy, then
        # cut per channel: the cost hardly grows with the number of channels in a batch.
        kinds = where[accepted]
        order = accepted[np.argsort(kinds, kind="stable")]
        kinds = where[order]
        cuts = [0, *(np.flatnonzero(kinds[1:] != kinds[:-1]) + 1).tolist(), len(order)]
        sizes = lengths[order] - wire.HEADER_SIZE
        ends = np.cumsum(sizes).tolist()
        bodies = self._bodies(batch, order)
        decimated = []
        rejected = []
        for a, b in itertools.pairwise(cuts):
            channel = self._channels[int(kinds[a])]
            data = bodies[ends[a - 1] if a else 0 : ends[b - 1]]
            idx = order[a:b]
            valid = self._valid(channel, data, sizes[a:b])
            if not valid.all():
                router.reject_bodies(channel, int((~valid).sum()),
                                     int(sizes[a + int((~valid).argmax())]) + wire.HEADER_SIZE)
                rejected.append(idx[~valid])
                data = data[np.repeat(valid, sizes[a:b].astype(np.intp))]
                idx = idx[valid]
                if not len(idx):
                    continue
            out.writes.append((channel, memoryview(data), len(idx)))
            decimated.append(self._account(channel, idx, data.nbytes +
                                           len(idx) * wire.HEADER_SIZE, now_ns, senders))
        out.full = accepted[~np.isin(accepted, np.concatenate(rejected))] if rejected else (
            accepted)
        out.decimated = np.sort(np.concatenate(decimated)) if decimated else NONE
        self._take_reports(batch, picked, out, senders, now_ns)
        return out

    def _take_reports(self, batch: Received, picked: np.ndarray, out: BatchRouted,
                      senders: np.ndarray | None, now_ns: int) -> None:
        """The batch's SenderReports (found one by one) matched by ``Router.take_reports``
        with every arrival of the batch: the ones routed one by one (legacy bodies) and
        the ones routed together, after the first report."""
        if senders is None or not out.other.reports:
            return
        reports = [(int(picked[k]), report) for k, report in out.other.reports]
        arrivals = [(int(picked[j]), name) for j, name in out.other.arrivals]
        table = self.router.registry.fingerprints
        first = min(i for i, _ in reports)
        arrivals += [(i, table[bytes(batch.datagram(i)[2:10])].name)
                     for i in out.full[out.full > first].tolist()]
        self.router.take_reports(reports, arrivals, senders, now_ns)

    @staticmethod
    def _valid(channel: Channel, data: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Which of the concatenated bodies in ``data`` (of ``sizes``) are one record."""
        size = int(sizes[0])
        if (sizes == size).all():
            return channel.check.valid_rows(data.reshape(len(sizes), size))
        ends = np.cumsum(sizes)
        return channel.check.valid(data, ends - sizes, ends)

    def _uniform_channel(self, head: bytes, lengths: np.ndarray) -> Channel | None:
        """The channel of a batch whose datagrams all start with ``head``, if all fit."""
        if head[:2] != wire.MARKER or lengths.min() < wire.HEADER_SIZE or (
                lengths.max() > self.router.max_datagram):
            return None
        return self.router.registry.fingerprints.get(head[2:])

    @staticmethod
    def _bodies(batch: Received, idx: np.ndarray | None = None) -> np.ndarray:
        """The bodies of the datagrams at ``idx`` (default: all, in order), concatenated
        with one copy into a flat array. (Written before the next receive reuses the
        buffer.)"""
        n = len(batch.lengths)
        sizes = (batch.lengths if idx is None else batch.lengths[idx]) - wire.HEADER_SIZE
        size = int(sizes[0])
        if (sizes == size).all():  # one record size: a 2-D slice
            rows = batch.buffer[: n * batch.slot].reshape(n, batch.slot)
            body = slice(wire.HEADER_SIZE, wire.HEADER_SIZE + size)
            bodies = np.ascontiguousarray(rows[:, body] if idx is None else rows[idx, body])
        else:
            where = np.arange(n) if idx is None else idx
            ends = np.cumsum(sizes)
            # repeat counts in the platform's index type: int64 does not cast to it
            # safely on 32-bit ARM (TypeError there; found running the relay on armhf)
            gather = np.repeat(where * batch.slot + wire.HEADER_SIZE - (ends - sizes),
                               sizes.astype(np.intp)) + np.arange(int(ends[-1]))
            bodies = batch.buffer[gather]
        return bodies.reshape(-1)

    def _account(self, channel: Channel, idx: np.ndarray, size: int, now_ns: int,
                 senders: np.ndarray | None) -> np.ndarray:
        """Count ``idx`` (``size`` bytes) for ``channel``, per sender too; the ones the
        decimator lets by."""
        if senders is not None:
            mine = senders[idx]
            if (mine == mine[0]).all():  # the common case: one sender in the batch
                self.router.hop.arrived((int(mine[0]), channel.name), len(idx), now_ns)
            else:
                for sender, count in zip(*np.unique(mine, return_counts=True), strict=True):
                    self.router.hop.arrived((int(sender), channel.name), int(count), now_ns)
        counters = self.router.counter(channel)
        counters.datagrams += len(idx)
        counters.bytes += size
        granted = self.router.decimator.grant(channel.name, now_ns, len(idx))
        counters.decimated += granted
        if granted >= len(idx):
            return idx
        if not granted:
            return NONE
        # spread the allowed share over the batch rather than take its head
        if granted == 1:
            return idx[:1]
        last = len(idx) - 1
        return idx[[i * last // (granted - 1) for i in range(granted)]]
