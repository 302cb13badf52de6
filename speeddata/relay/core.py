"""The relay's decisions, free of sockets and clocks.

``Router.route`` takes one received batch (the datagrams, the port they came in on and
the receive time) and says which bodies go to which channel's cache file, which
datagrams go to the full-rate group and which to the decimated one. Nothing is decoded
except legacy bare bodies, which are checked because nothing else identifies them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import fastavro

from speeddata import wire
from speeddata.schemas import Channel, Registry

REASONS = ("too_short", "bad_marker", "unknown_schema", "too_long", "bad_legacy_body")


class Decimator:
    """A token bucket per channel: at most ``rate_hz`` datagrams a second, small bursts.

    Tokens accrue with time, so a batch that holds many samples of a channel still
    forwards the share the rate allows. No decoding is needed.
    """

    def __init__(self, rate_hz: float, burst_seconds: float = 0.1) -> None:
        self.rate = rate_hz
        self.capacity = max(1.0, rate_hz * burst_seconds)
        self._tokens: dict[str, float] = {}
        self._last: dict[str, int] = {}

    def allow(self, key: str, now_ns: int) -> bool:
        last = self._last.get(key)
        if last is None:
            tokens = self.capacity
        else:
            tokens = min(self.capacity, self._tokens[key] + (now_ns - last) * 1e-9 * self.rate)
        self._last[key] = now_ns
        if tokens >= 1.0:
            self._tokens[key] = tokens - 1.0
            return True
        self._tokens[key] = tokens
        return False


@dataclass
class ChannelCounters:
    datagrams: int = 0
    bytes: int = 0
    decimated: int = 0
    cache_dropped: int = 0  # accepted but not cached (a full disk)


@dataclass
class Routed:
    """What to do with one batch."""

    bodies: dict[Channel, list[memoryview]] = field(default_factory=dict)
    full: list[memoryview | bytes] = field(default_factory=list)  # every accepted datagram
    decimated: list[memoryview | bytes] = field(default_factory=list)
    rejected: int = 0


class Router:
    """Routes datagrams to channels by fingerprint, and bare bodies by port."""

    def __init__(
        self,
        registry: Registry,
        legacy_ports: dict[int, Channel] | None = None,
        max_datagram: int = 16384,
        decimated_rate_hz: float = 50.0,
    ) -> None:
        self.registry = registry
        self.legacy_ports = legacy_ports or {}
        self.max_datagram = max_datagram
        self.decimator = Decimator(decimated_rate_hz)
        self.counters: dict[str, ChannelCounters] = {c.name: ChannelCounters() for c in registry}
        self.rejected: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.last_rejection: dict[str, str] = {}
        self._legacy_headers = {
            port: wire.header(channel.fingerprint) for port, channel in self.legacy_ports.items()
        }

    def _reject(self, reason: str, message: str) -> None:
        self.rejected[reason] += 1
        self.last_rejection[reason] = message

    def _legacy_body_fits(self, channel: Channel, body: memoryview) -> bool:
        stream = io.BytesIO(body)
        try:
            fastavro.schemaless_reader(stream, channel.parsed, None)
        except Exception:  # any decoding failure means it is not this schema's body
            return False
        return stream.tell() == len(body)

    def route(self, datagrams: Sequence[memoryview], port: int, now_ns: int) -> Routed:
        routed = Routed()
        table = self.registry.fingerprints
        legacy = self.legacy_ports.get(port)
        for datagram in datagrams:
            size = len(datagram)
            if size > self.max_datagram:
                self._reject("too_long", f"datagram of {size} bytes > max_datagram")
                routed.rejected += 1
                continue
            channel = None
            if size >= wire.HEADER_SIZE and datagram[0] == 0xC3 and datagram[1] == 0x01:
                channel = table.get(bytes(datagram[2:10]))
            if channel is not None:
                body = datagram[wire.HEADER_SIZE :]
                forward: memoryview | bytes = datagram
            elif legacy is not None:
                if not self._legacy_body_fits(legacy, datagram):
                    self._reject(
                        "bad_legacy_body",
                        f"{size}-byte datagram on port {port} is neither a known single-object"
                        f" datagram nor a body of channel {legacy.name!r}",
                    )
                    routed.rejected += 1
                    continue
                channel, body = legacy, datagram
                forward = self._legacy_headers[port] + datagram
            else:
                if size < wire.HEADER_SIZE:
                    self._reject("too_short", f"datagram of {size} bytes is shorter than a header")
                elif datagram[0] != 0xC3 or datagram[1] != 0x01:
                    self._reject(
                        "bad_marker", f"datagram starts with {bytes(datagram[:2]).hex()}, not c301"
                    )
                else:
                    self._reject(
                        "unknown_schema",
                        f"no channel has fingerprint {bytes(datagram[2:10]).hex()}",
                    )
                routed.rejected += 1
                continue
            bodies = routed.bodies.get(channel)
            if bodies is None:
                bodies = routed.bodies[channel] = []
            bodies.append(body)
            counters = self.counters.get(channel.name)
            if counters is None:
                counters = self.counters[channel.name] = ChannelCounters()
            counters.datagrams += 1
            counters.bytes += size
            routed.full.append(forward)
            if self.decimator.allow(channel.name, now_ns):
                counters.decimated += 1
                routed.decimated.append(forward)
        return routed

    def statistics(self) -> dict[str, object]:
        return {
            "channels": {name: vars(c).copy() for name, c in self.counters.items()},
            "rejected": dict(self.rejected),
            "last_rejection": dict(self.last_rejection),
        }
