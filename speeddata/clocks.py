"""Source clocks measured, not guessed: the time probe and the offset estimate.

A sender asks the relay the time as NTP does: it sends a ``TimeProbe`` (a reserved
single-object datagram) stamped ``t0`` by its own clock; the relay stamps ``t1`` (its
receive time, the clock the cache's receive times are on) and ``t2`` (just before it
answers) and sends the probe back to the address it came from; the sender stamps ``t3``
when the answer arrives. Then, the sender's clock minus the relay's::

    offset = ((t0 - t1) + (t3 - t2)) / 2      round trip = (t3 - t0) - (t2 - t1)

and the true offset is within half the round trip of it, whatever the asymmetry of the
two paths. Like Lab Streaming Layer, the sender keeps the last few probes and takes the
one of the lowest round trip (``Estimator``): a probe delayed by a queue anywhere has a
longer round trip, so it is never the one chosen while a quick one is recent.

The probe's layout is fixed, 42 bytes, so that a C sender writes it with ``memcpy``::

    C3 01 | fingerprint (8) | nonce (8) | t0 | t1 | t2    (int64 little-endian ns each)

A request has ``t1 = t2 = 0``; the relay answers nothing else (an answer is never
answered, so two relays cannot be set talking to each other), and its answer is the
request's size: no amplification. ``ProbeBudget`` bounds what it answers per source
address. No sockets and no clocks here: times are passed in.
"""

from __future__ import annotations

import random
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from speeddata import wire
from speeddata.errors import WireError
from speeddata.loss import MAX_OFFSET_NS  # what a v2 report may carry: beyond, refused

_STAMP = {"type": "fixed", "name": "Stamp", "size": 8,
          "doc": "int64 little-endian, ns since the Unix epoch (a sender's own clock for t0)"}
TIME_PROBE: dict[str, Any] = {
    "type": "record", "name": "TimeProbe", "namespace": "speeddata",
    "doc": "An NTP-style time probe: sent by a sender with t1 = t2 = 0, answered by the "
           "relay with its receive (t1) and send (t2) times (reserved channel).",
    "fields": [
        {"name": "nonce", "type": {"type": "fixed", "name": "Nonce", "size": 8},
         "doc": "random per probe: an answer counts only for the probe it names"},
        {"name": "t0", "type": _STAMP, "doc": "the sender's clock when it sent the probe"},
        {"name": "t1", "type": "Stamp", "doc": "the relay's clock when it received it"},
        {"name": "t2", "type": "Stamp", "doc": "the relay's clock when it answered"},
    ],
}
PROBE_HEADER = wire.header(wire.fingerprint(TIME_PROBE))
PROBE_FP = PROBE_HEADER[2:]
_BODY = struct.Struct("<8sqqq")
PROBE_SIZE = wire.HEADER_SIZE + _BODY.size  # 42

MAX_TURNAROUND_NS = 10**9  # t2 - t1 the sender accepts from a relay
MAX_ROUND_TRIP_NS = 5 * 10**9  # a probe slower than this tells nothing useful
KEEP = 8  # probes the estimate is the best of (LSL keeps a similar handful)
PROBE_SECONDS = 10.0  # between bursts of probes: six a minute
BURST = 4  # probes per burst ...
BURST_GAP_S = 0.02  # ... this far apart
ANSWER_WAIT_S = 1.0  # an unanswered probe is forgotten after this
MAX_OUTSTANDING = 8


@dataclass(frozen=True)
class Probe:
    """A checked probe datagram: what its four stamps say (t1 = t2 = 0 in a request)."""

    nonce: bytes
    t0: int
    t1: int
    t2: int

    @property
    def request(self) -> bool:
        return self.t1 == 0 and self.t2 == 0


@dataclass(frozen=True)
class Estimate:
    """The sender's clock minus the relay's, within ``uncertainty_ns`` (half the round
    trip of the probe it comes from); ``at_ns``: that probe's t3 (sender's clock)."""

    offset_ns: int
    uncertainty_ns: int
    round_trip_ns: int
    at_ns: int


def encode(nonce: bytes, t0: int, t1: int = 0, t2: int = 0) -> bytes:
    """A probe datagram (a request with t1 = t2 = 0)."""
    return PROBE_HEADER + _BODY.pack(nonce, t0, t1, t2)


def parse(datagram: bytes | memoryview) -> Probe:
    """The probe in ``datagram``; WireError with a ``reason`` unless it is exactly one."""
    if len(datagram) != PROBE_SIZE:
        raise WireError("bad_size", f"{len(datagram)}-byte time probe, not {PROBE_SIZE}")
    if bytes(datagram[: wire.HEADER_SIZE]) != PROBE_HEADER:
        raise WireError("not_a_probe", "datagram does not carry the time probe's header")
    nonce, t0, t1, t2 = _BODY.unpack_from(datagram, wire.HEADER_SIZE)
    return Probe(nonce, t0, t1, t2)


def answer(probe: Probe, t1: int, t2: int) -> bytes:
    """The relay's answer to a request: the same nonce and t0, its own two stamps."""
    return encode(probe.nonce, probe.t0, t1, t2)


def measure(t0: int, t1: int, t2: int, t3: int) -> tuple[int, int]:
    """(offset, round trip) of one exchange: the client's clock minus the server's."""
    return ((t0 - t1) + (t3 - t2)) // 2, (t3 - t0) - (t2 - t1)


class Estimator:
    """The offset of the lowest round trip among the last ``keep`` probes (LSL's way):
    queueing only ever lengthens a round trip, so the quickest probe is the least
    disturbed one. Probes past ``keep`` age out, so a drifting clock is followed."""

    def __init__(self, keep: int = KEEP) -> None:
        self.samples: deque[Estimate] = deque(maxlen=keep)

    def add(self, t0: int, t1: int, t2: int, t3: int) -> Estimate:
        offset, round_trip = measure(t0, t1, t2, t3)
        sample = Estimate(offset, (round_trip + 1) // 2, round_trip, t3)
        self.samples.append(sample)
        return sample

    def estimate(self) -> Estimate | None:
        return min(self.samples, key=lambda s: s.round_trip_ns) if self.samples else None


class Prober:
    """The sender's half: when to probe, the requests, and the answers checked against
    them. An answer counts only when it names an outstanding probe's nonce and t0, came
    back within ``ANSWER_WAIT_S`` and has plausible stamps; others are counted by reason
    (``refused``): an off-path forger would have to guess a 64-bit nonce."""

    REASONS = ("unknown_nonce", "not_an_answer", "bad_stamps", "slow", "garbled")

    def __init__(self, seconds: float = PROBE_SECONDS, burst: int = BURST,
                 keep: int = KEEP) -> None:
        self.seconds = seconds
        self.burst = max(1, burst)
        self.estimator = Estimator(keep)
        self.outstanding: OrderedDict[bytes, tuple[int, float]] = OrderedDict()  # nonce: t0, sent
        self.sent = 0
        self.answered = 0
        self.refused = dict.fromkeys(self.REASONS, 0)
        self._next = float("-inf")
        self._in_burst = 0

    def due(self, now: float) -> bool:
        """True when a probe should go out (``now``: a monotonic clock, in seconds)."""
        return now >= self._next

    def request(self, t0: int, now: float) -> bytes:
        """A new probe stamped ``t0`` (the sender's clock), remembered until answered."""
        self._in_burst += 1
        if self._in_burst >= self.burst:
            self._in_burst = 0
            self._next = now + self.seconds
        else:
            self._next = now + BURST_GAP_S
        self.forget(now)
        nonce = random.getrandbits(64).to_bytes(8, "little")
        self.outstanding[nonce] = (t0, now)
        while len(self.outstanding) > MAX_OUTSTANDING:
            self.outstanding.popitem(last=False)
        self.sent += 1
        return encode(nonce, t0)

    def waiting(self, now: float) -> bool:
        """True while a probe sent within ``ANSWER_WAIT_S`` is unanswered: only then does
        the sender look for answers (a relay that never answers costs no reads)."""
        if self.outstanding:
            self.forget(now)
        return bool(self.outstanding)

    def forget(self, now: float) -> None:
        """Drop probes unanswered for ``ANSWER_WAIT_S``."""
        while self.outstanding and now - next(iter(self.outstanding.values()))[1] > ANSWER_WAIT_S:
            self.outstanding.popitem(last=False)

    def take(self, datagram: bytes | memoryview, t3: int) -> Estimate | None:
        """An answer received at ``t3`` (the sender's clock): the probe's measure, or
        None when refused (counted in ``refused``)."""
        try:
            probe = parse(datagram)
        except WireError:
            self.refused["garbled"] += 1
            return None
        if probe.request:
            self.refused["not_an_answer"] += 1
            return None
        sent = self.outstanding.get(probe.nonce)
        if sent is None or sent[0] != probe.t0:
            self.refused["unknown_nonce"] += 1
            return None
        if not 0 < probe.t1 <= probe.t2 <= probe.t1 + MAX_TURNAROUND_NS:
            self.refused["bad_stamps"] += 1
            return None
        round_trip = (t3 - probe.t0) - (probe.t2 - probe.t1)
        if not 0 <= round_trip <= MAX_ROUND_TRIP_NS:
            self.refused["slow" if round_trip > 0 else "bad_stamps"] += 1
            return None
        if abs(measure(probe.t0, probe.t1, probe.t2, t3)[0]) > MAX_OFFSET_NS:
            self.refused["bad_stamps"] += 1  # no report could carry it
            return None
        del self.outstanding[probe.nonce]  # answered: a copy of the answer counts no more
        self.answered += 1
        return self.estimator.add(probe.t0, probe.t1, probe.t2, t3)

    def estimate(self) -> Estimate | None:
        return self.estimator.estimate()

    def statistics(self) -> dict[str, object]:
        best = self.estimate()
        return {"probes_sent": self.sent, "probes_answered": self.answered,
                "probes_refused": dict(self.refused),
                "offset_ns": None if best is None else best.offset_ns,
                "uncertainty_ns": None if best is None else best.uncertainty_ns}


PER_ADDRESS_HZ = 10.0  # probes answered per second per source address (IP) ...
PER_ADDRESS_BURST = 20.0  # ... at once
TOTAL_HZ = 2000.0  # and from all addresses together
MAX_ADDRESSES = 1024  # buckets kept, the least recently heard dropped beyond


class ProbeBudget:
    """The relay's half: which probes to answer. A token bucket per source IP (its port
    is the forger's to vary) in a bounded LRU table, and one for all: an address that
    floods gets ``PER_ADDRESS_HZ`` answers, all of them together ``TOTAL_HZ``, each the
    size of its request. Refused probes are counted by reason (``statistics()``)."""

    REASONS = ("garbled", "not_request", "rate", "busy", "no_address")

    def __init__(self, per_address_hz: float = PER_ADDRESS_HZ,
                 burst: float = PER_ADDRESS_BURST, total_hz: float = TOTAL_HZ,
                 max_addresses: int = MAX_ADDRESSES) -> None:
        self.rate, self.burst, self.total_hz = per_address_hz, burst, total_hz
        self.max_addresses = max_addresses
        self.buckets: OrderedDict[int, tuple[float, int]] = OrderedDict()  # ip: tokens, at
        self._total = (total_hz, 0)
        self.answered = 0
        self.refused = dict.fromkeys(self.REASONS, 0)

    def take(self, datagram: bytes | memoryview, now_ns: int, sender: int | None
             ) -> Probe | None:
        """The probe to answer in ``datagram`` from ``sender`` (IPv4 << 16 | port; None
        when the socket layer read no address), or None: refused and counted, for a
        garbled probe, an answer (never answered), or one beyond the budget."""
        try:
            probe = parse(datagram)
        except WireError:
            return self._refuse("garbled")
        if not probe.request:
            return self._refuse("not_request")
        if sender is None:
            return self._refuse("no_address")
        return probe if self.grant(sender >> 16, now_ns) else None

    def _refuse(self, reason: str) -> None:
        self.refused[reason] += 1

    @staticmethod
    def _refill(tokens: float, at: int, now_ns: int, rate: float, cap: float) -> float:
        return min(cap, tokens + max(now_ns - at, 0) * rate / 1e9)

    def grant(self, ip: int, now_ns: int) -> bool:
        """True if a probe from ``ip`` (IPv4 as an int) arriving at ``now_ns`` is answered."""
        tokens, at = self.buckets.pop(ip, (self.burst, now_ns))
        tokens = self._refill(tokens, at, now_ns, self.rate, self.burst)
        total = self._refill(*self._total, now_ns, self.total_hz, self.total_hz)
        reason = "rate" if tokens < 1 else "busy" if total < 1 else None
        if reason is None:
            tokens, total = tokens - 1, total - 1
            self.answered += 1
        else:
            self.refused[reason] += 1
        self.buckets[ip] = (tokens, now_ns)
        self._total = (total, now_ns)
        if len(self.buckets) > self.max_addresses:
            self.buckets.popitem(last=False)
        return reason is None

    def statistics(self) -> dict[str, object]:
        return {"answered": self.answered, "refused": dict(self.refused),
                "addresses": len(self.buckets)}
