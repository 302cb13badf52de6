"""One page's conversation with the stripchart server, with no sockets and no clock.

A ``PageSession`` takes what the page sends (``receive``: the text of one message and
the time) and answers with the JSON replies to send back; at each tick (``tick``, when
``wake_at`` has come) it gives the notices and the binary frame to send; ``sent`` tells
it a frame went out, and when, for its skipped-frame accounting. The WebSocket
endpoint around it (``routes_ws``) only moves bytes and sleeps.

Messages from the page (JSON objects, at most ``MAX_MESSAGE`` bytes of text):

- ``{"type": "subscribe", "signals": [...], "window": s}``: replaces the subscription;
  the next frame is a full history (``"type": "history"``). Rebuilding one costs the
  server a whole window of every signal, so a page may do it ``SUBSCRIBE_BURST`` times
  at once and ``SUBSCRIBE_RATE`` times a second after; one over that limit is not
  applied (the subscription before it stays) and answered with an error with
  ``"limit": "subscribe"``. Reply ``subscribed`` (the signals kept), then an ``error``
  listing the ``unknown`` ones, if any.
- ``{"type": "unsubscribe", "signals": [...]}`` (no signals: all): reply
  ``unsubscribed`` with the signals still subscribed.
- ``{"type": "pause"}``: no more frames until ``{"type": "resume"}``, whose next frame is
  a full history (limited as a subscribe is). Replies ``paused`` and ``resumed``.
- ``{"type": "ping"}``: reply ``pong`` with ``server_ms``.

Anything else is answered with ``{"type": "error", "message": ...}`` and counted; the
connection stays. Besides replies, the server may send ``{"type": "pruned", "signals":
[...], "message": ...}`` when a schema edit removed signals the page subscribed to:
they are dropped from its subscription and frames go on with the others. Every message
type a page does not know is to be ignored (the page's connection.js does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from speeddata import __version__
from speeddata.stripchart.hub import MAX_SIGNALS, Client, Hub, SubscriptionError

MAX_MESSAGE = 64 * 1024  # characters of one message from a page
SUBSCRIBE_RATE = 5.0  # full-history rebuilds a page may ask for per second, after...
SUBSCRIBE_BURST = 10  # ...this many at once (a page resubscribes once per layout change)

Message = dict[str, Any]


@dataclass
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take(now)`` spends one if there is."""

    rate: float
    burst: float
    now: float
    tokens: float = -1.0  # -1: full

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.now)  # a clock that goes back refills nothing
        self.now = max(self.now, now)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class PageSession:
    """What one page subscribed to, what it is owed, and what it has been sent.

    Times: ``now`` in seconds of a monotonic clock (ticks, the subscribe limit),
    ``now_ns`` the wall clock in ns (what frames and replies carry)."""

    def __init__(self, hub: Hub, *, source: str, frame_hz: float, now: float,
                 subscribe_rate: float = SUBSCRIBE_RATE,
                 subscribe_burst: int = SUBSCRIBE_BURST) -> None:
        self.hub = hub
        self.source = source
        self.frame_hz = frame_hz
        self.period = 1.0 / frame_hz
        self.client = Client()
        self.paused = False
        self.wake_at = now + self.period  # the next tick
        self._tick_at = now  # the tick the frame being sent was due at
        self._subscribes = TokenBucket(subscribe_rate, subscribe_burst, now)
        self._pruned: list[str] = []  # dropped by a registry change, not yet told
        self.bad_messages = 0
        self.subscribes = 0
        self.subscribes_limited = 0
        self.pruned = 0  # signals dropped from the subscription by registry changes

    # -- the page's messages ------------------------------------------------------------
    def hello(self, now_ns: int) -> Message:
        """The first message on a new connection."""
        return {"type": "hello", "version": __version__, "server_ms": now_ns / 1e6,
                "frame_hz": self.frame_hz, "source": self.source,
                "levels": [{"width_ms": lvl.width_ns / 1e6, "span_s": lvl.span_seconds}
                           for lvl in self.hub.levels],
                "channels": self.hub.describe(now_ns)}

    def receive(self, text: str | None, now: float, now_ns: int) -> list[Message]:
        """The replies to one message from the page (``text`` None: it was binary)."""
        if text is None or len(text) > MAX_MESSAGE:
            return self._error("send JSON text messages of at most 64 KiB")
        try:
            message = json.loads(text)
            if not isinstance(message, dict):
                raise ValueError("a message is a JSON object")
        except RecursionError:
            return self._error("JSON nested too deeply")
        except ValueError as exc:
            return self._error(f"not a JSON object: {exc}")
        kind = message.get("type")
        if kind == "subscribe":
            return self._subscribe(message, now)
        if kind == "unsubscribe":
            return self._unsubscribe(message)
        if kind == "pause":
            self.paused = True
            return [{"type": "paused"}]
        if kind == "resume":
            if not self.paused:
                return [{"type": "resumed"}]
            if not self._subscribes.take(now):
                return self._limited("resume")
            self.paused = False
            self.client.needs_history = True  # what came meanwhile, in one frame
            return [{"type": "resumed"}]
        if kind == "ping":
            return [{"type": "pong", "server_ms": now_ns / 1e6}]
        return self._error(f"unknown message type {kind!r}: use 'subscribe', "
                           "'unsubscribe', 'pause', 'resume' or 'ping'")

    def _subscribe(self, message: Message, now: float) -> list[Message]:
        if not self._subscribes.take(now):
            return self._limited("subscribe")
        try:
            unknown = self.hub.subscribe(self.client, message)
        except SubscriptionError as exc:
            return self._error(str(exc))
        self.subscribes += 1
        self._pruned = [s for s in self._pruned if s not in self.client.signals]
        replies: list[Message] = [{"type": "subscribed", "signals": self.client.signals,
                                   "source": self.source}]
        if unknown:
            replies.append({
                "type": "error",
                "message": f"unknown signal(s): {', '.join(unknown)} (see /api/channels)",
                "unknown": unknown})
        return replies

    def _unsubscribe(self, message: Message) -> list[Message]:
        signals = message.get("signals")
        if signals is None:
            self.client.signals = []
        elif (not isinstance(signals, list) or len(signals) > MAX_SIGNALS
              or not all(isinstance(s, str) for s in signals)):
            return self._error(f"'signals' must be a list of at most {MAX_SIGNALS} names "
                               "like 'motor.speed' (or left out: all)")
        else:
            dropped = set(signals)
            self.client.signals = [s for s in self.client.signals if s not in dropped]
        return [{"type": "unsubscribed", "signals": self.client.signals}]

    def _limited(self, what: str) -> list[Message]:
        self.subscribes_limited += 1
        rate, burst = self._subscribes.rate, self._subscribes.burst
        return [{"type": "error", "limit": "subscribe", "message": (
            f"too many subscribes: at most {burst:g} at once and {rate:g} a second after; "
            f"this {what} was not applied (the subscription before it stays)")}]

    def _error(self, text: str) -> list[Message]:
        self.bad_messages += 1
        return [{"type": "error", "message": text}]

    # -- the hub changed ----------------------------------------------------------------
    def prune(self) -> list[str]:
        """Drop the signals the hub no longer has (after a registry change); the page
        is told at the next tick. Returns the signals dropped."""
        gone = self.hub.prune(self.client)
        if gone:
            self.pruned += len(gone)
            # bounded: at most what was subscribed, each once
            self._pruned = list(dict.fromkeys([*self._pruned, *gone]))[-MAX_SIGNALS:]
        return gone

    # -- frames -------------------------------------------------------------------------
    def tick(self, now: float, now_ns: int) -> list[Message | bytes]:
        """What to send now that ``wake_at`` has come: notices, then the frame, if any
        (none while paused, or when nothing changed for the page). Schedules the next
        tick."""
        self._tick_at = self.wake_at
        self.wake_at += self.period
        out: list[Message | bytes] = []
        if self._pruned:
            out.append({"type": "pruned", "signals": self._pruned, "message": (
                f"no longer in their channel's schema, no longer sent: "
                f"{', '.join(self._pruned)}")})
            self._pruned = []
        if not self.paused:
            frame = self.hub.frame(self.client, now_ns)
            if frame is not None:
                out.append(frame)
        return out

    def sent(self, now: float) -> None:
        """A frame went out, its send done at ``now``: the ticks the send overran are
        skipped (counted as dropped frames, told to the page in the next frame)."""
        self.client.frames_sent += 1
        late = now - self._tick_at
        if late > self.period:
            skipped = int(late / self.period)
            self.client.frames_dropped += skipped
            self.wake_at += skipped * self.period

    def statistics(self) -> dict[str, int]:
        return {"frames_sent": self.client.frames_sent,
                "frames_dropped": self.client.frames_dropped,
                "subscribes": self.subscribes, "subscribes_limited": self.subscribes_limited,
                "bad_messages": self.bad_messages, "pruned_signals": self.pruned}
