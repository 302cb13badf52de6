"""How often and how soon the relay forwards, as plain objects: every N-th datagram of
a channel to the decimated group, and how long a quiet link's batch may wait (no sockets,
the time passed in)."""

from __future__ import annotations


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

    def grant(self, key: str, now_ns: int, wanted: int) -> int:
        """How many of ``wanted`` datagrams of ``key`` arriving at ``now_ns`` may pass."""
        last = self._last.get(key)
        if last is None:
            tokens = self.capacity
        else:  # a wall clock stepped backwards gives no tokens, never negative ones
            elapsed = max(0, now_ns - last)
            tokens = min(self.capacity, self._tokens[key] + elapsed * 1e-9 * self.rate)
        self._last[key] = now_ns if last is None else max(last, now_ns)
        granted = max(0, min(wanted, int(tokens)))
        self._tokens[key] = tokens - granted
        return granted


class Linger:
    """How long to wait after a batch so that the next one holds more datagrams.

    At low rates a wakeup per few datagrams costs far more CPU than the datagrams do
    (the receive, route, write and send calls cost about the same for 1 as for 100).
    Waiting lets the kernel queue some; the wait is sized from the arrival rate so that
    about half a batch queues up, which a default-sized socket buffer holds, and a full
    batch means no wait at all.
    """

    def __init__(self, max_seconds: float, batch: int) -> None:
        self.max_seconds = max_seconds
        self.fill = max(1, batch // 2)
        self.rate = 0.0  # datagrams/s, smoothed
        self._last: float | None = None

    def after(self, received: int, now: float) -> float:
        """Seconds to wait, given a batch of ``received`` datagrams handled at ``now``."""
        if self._last is not None:
            seen = received / max(now - self._last, 1e-6)
            self.rate = seen if seen > self.rate else 0.8 * self.rate + 0.2 * seen
        self._last = now
        if received >= self.fill or self.max_seconds <= 0:
            return 0.0
        return self.max_seconds if self.rate <= 0 else min(self.max_seconds,
                                                            self.fill / self.rate)
