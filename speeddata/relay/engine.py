"""The relay's loop as a pure object with explicit time, in the way aioquic's
``QuicConnection`` is: ``RelayCore.handle_batch(batch, port, now_ns)`` says what to
write and what to forward, ``get_timer()`` when to wake up next and
``handle_timer(now)`` which periodic jobs are due. It opens no socket and reads no
clock, so its timers and counters are tested with a fake clock and no sleeps; the
socket loop in ``relay.server`` selects until ``get_timer()``, receives, and does what
it is told.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from speeddata.relay.core import BatchRouted, BatchRouter, Received, Router
from speeddata.schemas import Channel, Registry

# Upper bounds of the stall histogram's buckets, in milliseconds (the last is open).
STALL_BOUNDS_MS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


class StallHistogram:
    """How long the loop was away from its sockets, per iteration: fixed log buckets
    (bucket i counts stalls of at most ``bounds_ms[i]``, the last one the longer ones),
    so a status file shows the longest stall and how often stalls of each size came."""

    def __init__(self, bounds_ms: tuple[float, ...] = STALL_BOUNDS_MS) -> None:
        self.bounds_ms = bounds_ms
        self.counts = [0] * (len(bounds_ms) + 1)
        self.longest_ms = 0.0

    def record(self, seconds: float) -> None:
        ms = seconds * 1000
        self.counts[bisect.bisect_left(self.bounds_ms, ms)] += 1
        self.longest_ms = max(self.longest_ms, ms)

    def statistics(self) -> dict[str, object]:
        return {"bounds_ms": list(self.bounds_ms), "counts": list(self.counts),
                "longest_ms": round(self.longest_ms, 3)}


class Timers:
    """Periodic deadlines by name on a monotonic clock. A job that comes due is
    rescheduled one period after ``now``, not after its old deadline: a late loop runs
    each job once, never a burst of catch-up rounds."""

    def __init__(self, periods: Mapping[str, float], now: float,
                 first: Mapping[str, float] | None = None) -> None:
        self.periods = dict(periods)
        self.deadlines = {name: now + (first or {}).get(name, period)
                          for name, period in self.periods.items()}

    def next(self) -> float:
        return min(self.deadlines.values(), default=math.inf)

    def due(self, now: float) -> list[str]:
        names = [name for name, deadline in self.deadlines.items() if deadline <= now]
        for name in names:
            self.deadlines[name] = now + self.periods[name]
        return names


@dataclass
class Actions:
    """What the loop does with one batch: append ``writes`` (channel, bodies, count) to
    the cache, forward ``routed`` (slot indices and legacy extras) to the groups."""

    writes: list[tuple[Channel, bytes | memoryview, int]] = field(default_factory=list)
    routed: BatchRouted = field(default_factory=BatchRouted)


class RelayCore:
    """Routing, counters, the stall histogram and the timers of one relay."""

    def __init__(self, router: Router, periods: Mapping[str, float], now: float,
                 first: Mapping[str, float] | None = None) -> None:
        self.router = router
        self.batch_router = BatchRouter(router)
        self.timers = Timers(periods, now, first)
        self.stalls = StallHistogram()
        self.counts = {"batches": 0, "datagrams": 0, "sender_reports": 0, "time_probes": 0,
                       "cached_bytes": 0, "registry_swaps": 0}

    def handle_batch(self, batch: Received, port: int, now_ns: int) -> Actions:
        """Route one received batch (``now_ns``: its receive time on the wall clock)."""
        if not len(batch.lengths):
            return Actions()
        routed = self.batch_router.route(batch, port, now_ns)
        other = routed.other
        self.counts["batches"] += 1
        self.counts["datagrams"] += len(batch.lengths) - len(other.reports) - other.probed
        self.counts["sender_reports"] += len(other.reports)
        self.counts["time_probes"] += other.probed
        writes = routed.writes + [(c, b"".join(bodies), len(bodies))
                                  for c, bodies in other.bodies.items()]
        self.counts["cached_bytes"] += sum(len(payload) for _, payload, _ in writes)
        return Actions(writes, routed)

    def swap_registry(self, registry: Registry) -> None:
        """Route by ``registry`` from the next batch on (parsed elsewhere: one reference
        is replaced between two batches, so no datagram sees half of a reload)."""
        self.router.set_registry(registry)
        self.counts["registry_swaps"] += 1

    def get_timer(self) -> float:
        """The monotonic time by which ``handle_timer`` must be called."""
        return self.timers.next()

    def handle_timer(self, now: float) -> list[str]:
        """The periodic jobs due at ``now``, each rescheduled."""
        return self.timers.due(now)

    def record_stall(self, seconds: float) -> None:
        """One loop iteration was ``seconds`` away from ``select``."""
        self.stalls.record(seconds)

    def statistics(self) -> dict[str, object]:
        return {**self.counts, "loop_stalls": self.stalls.statistics()}
