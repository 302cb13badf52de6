"""The control-plane protocol: authenticated messages on the control multicast group.

A control message is ``SDCTL1``, the sender's wall-clock time (8 bytes, big-endian ns), a
random 16-byte nonce, a JSON object, then HMAC-SHA256 of all that with the deployment's
shared key (32 bytes). A receiver refuses, and counts by reason, anything whose MAC is
wrong (``bad_mac``), whose time is more than ``WINDOW_SECONDS`` from its own clock
(``stale``), or whose nonce it has seen within that window (``replayed``); only then is
the body read (``malformed``). The hosts' clocks must agree within the window (NTP).

Bodies are ``{"kind": "tag", ...}`` (a ``tagrecord.TagRecord``) and ``{"kind": "digest", ...}``:
each relay announces the digest of its tag set every ``DIGEST_SECONDS``; one that hears
a digest unlike its own re-announces its whole set (at most once per
``RESYNC_SECONDS``), so every store ends with the newest record of every name
(the rule is in ``speeddata.tags``). Everything here but the key file and ``announcer``
is free of sockets and clocks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import struct
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speeddata.config import MIN_KEY, Config
from speeddata.errors import ConfigError, ControlError
from speeddata.tagrecord import MAX_ORIGIN, TagRecord, parse_record

MARKER = b"SDCTL1"
_HEAD = struct.Struct(">q16s")
MAC_BYTES = 32
MAX_MESSAGE = 65000  # bytes: the largest tag record (tagrecord.MAX_NOTE, MAX_CHANNELS) fits
WINDOW_SECONDS = 30.0
MAX_NONCES = 65536  # nonces remembered; more in one window (only with the key) is "busy"
DIGEST_SECONDS = 2.0
RESYNC_SECONDS = 4.0
KEY_FILE = ".control-key"
REPEATS = 2  # copies of each change sent (each sealed anew): multicast may lose one
_HEX = re.compile(r"[0-9a-f]{64}")


def seal(key: bytes, body: dict[str, Any], now_ns: int, nonce: bytes) -> bytes:
    """The datagram carrying ``body``, authenticated with ``key``."""
    signed = MARKER + _HEAD.pack(now_ns, nonce) + json.dumps(
        body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    return signed + hmac.new(key, signed, hashlib.sha256).digest()


def _no_constants(text: str) -> None:
    raise ValueError(f"{text} is not a JSON number")


class ReplayWindow:
    """Nonces seen within the window, in bounded memory: each is kept until its
    message would be refused as stale anyway; a full window refuses ("busy")."""

    def __init__(self, window_ns: int, capacity: int = MAX_NONCES) -> None:
        self.window_ns = window_ns
        self.capacity = capacity
        self._seen: dict[bytes, int] = {}
        self._next_sweep = 0

    def admit(self, nonce: bytes, sent_ns: int, now_ns: int) -> str | None:
        """None if the nonce is new (then remembered), else the reason to refuse."""
        if nonce in self._seen:
            return "replayed"
        if len(self._seen) >= self.capacity and now_ns >= self._next_sweep:
            self._seen = {n: t for n, t in self._seen.items() if t + self.window_ns >= now_ns}
            self._next_sweep = now_ns + 10**9  # at most one sweep a second
        if len(self._seen) >= self.capacity:
            return "busy"
        self._seen[nonce] = sent_ns
        return None

    def __len__(self) -> int:
        return len(self._seen)


class Opener:
    """Checks control datagrams with one key and one replay window."""

    def __init__(self, key: bytes, window_seconds: float = WINDOW_SECONDS) -> None:
        self.key = key
        self.window_ns = int(window_seconds * 1e9)
        self.replays = ReplayWindow(self.window_ns)

    def open(self, datagram: bytes, now_ns: int) -> dict[str, Any]:
        """The body of an authentic, fresh, first-seen datagram, or ControlError."""
        if not datagram.startswith(MARKER):
            raise ControlError("bad_marker", "not a control message")
        if len(datagram) > MAX_MESSAGE:
            raise ControlError("too_long", f"a control message of {len(datagram)} bytes")
        if len(datagram) < len(MARKER) + _HEAD.size + 2 + MAC_BYTES:
            raise ControlError("malformed", "a control message too short to hold its MAC")
        signed, mac = datagram[:-MAC_BYTES], datagram[-MAC_BYTES:]
        if not hmac.compare_digest(hmac.new(self.key, signed, hashlib.sha256).digest(), mac):
            raise ControlError("bad_mac", "a control message whose MAC is not of our key")
        sent_ns, nonce = _HEAD.unpack_from(signed, len(MARKER))
        if abs(now_ns - sent_ns) > self.window_ns:
            raise ControlError("stale", f"a control message sent {(now_ns - sent_ns) / 1e9:.0f}"
                               " s from now (clocks must agree within "
                               f"{self.window_ns / 1e9:.0f} s)")
        refused = self.replays.admit(nonce, sent_ns, now_ns)
        if refused:
            raise ControlError(refused, f"a control message {refused}")
        try:
            body = json.loads(signed[len(MARKER) + _HEAD.size:], parse_constant=_no_constants)
        except (ValueError, RecursionError):
            raise ControlError("malformed", "a control message whose body is not JSON") from None
        if not isinstance(body, dict):
            raise ControlError("malformed", "a control message whose body is not an object")
        return body


@dataclass(frozen=True)
class Digest:
    """A relay's announcement of its tag set: a hash and a count, and who it is."""

    digest: str
    count: int
    sender: str  # random per relay run: a relay ignores its own
    origin: str = ""

    def as_message(self) -> dict[str, Any]:
        return {"kind": "digest", "digest": self.digest, "count": self.count,
                "sender": self.sender, "origin": self.origin}


def parse(body: dict[str, Any]) -> TagRecord | Digest:
    """An opened body as a typed value, or ControlError naming the reason."""
    kind = body.get("kind")
    if kind == "tag":
        return parse_record(body)
    if kind == "digest":
        digest, count, sender, origin = (body.get(k) for k in ("digest", "count", "sender",
                                                                 "origin"))
        if not (isinstance(digest, str) and _HEX.fullmatch(digest) and type(count) is int
                and 0 <= count <= 10**7 and isinstance(sender, str) and 0 < len(sender) <= 32
                and isinstance(origin, str) and len(origin) <= MAX_ORIGIN):
            raise ControlError("malformed", "a digest message with a bad field")
        return Digest(digest, count, sender, origin)
    raise ControlError("unknown_kind", f"a control message of kind {str(kind)[:20]!r}")


class Sync:
    """When to announce the digest and when to re-announce the whole set, from the
    time passed in: a digest at once and every ``digest_seconds``; a re-announce when a
    peer's digest differs, at most once per ``resync_seconds``."""

    def __init__(self, now: float, digest_seconds: float = DIGEST_SECONDS,
                 resync_seconds: float = RESYNC_SECONDS) -> None:
        self.digest_seconds = digest_seconds
        self.resync_seconds = resync_seconds
        self.next_digest = now
        self.last_resync = float("-inf")
        self.pending = False

    def heard(self, theirs: Digest, mine: str) -> None:
        if theirs.digest != mine:
            self.pending = True

    def digest_due(self, now: float) -> bool:
        if now < self.next_digest:
            return False
        self.next_digest = now + self.digest_seconds
        return True

    def resync_due(self, now: float) -> bool:
        if not self.pending or now < self.last_resync + self.resync_seconds:
            return False
        self.pending, self.last_resync = False, now
        return True

    def timeout(self, now: float) -> float:
        """Seconds until the next thing is due."""
        due = self.next_digest
        if self.pending:
            due = min(due, self.last_resync + self.resync_seconds)
        return max(0.0, due - now)


class Budget:
    """A token bucket: at most ``rate`` datagrams a second (``burst`` at once)."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.when = float(burst), now

    def take(self, wanted: int, now: float) -> int:
        self.tokens = min(self.burst, self.tokens + (now - self.when) * self.rate)
        self.when = now
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted

    def wait(self, now: float) -> float:
        """Seconds until one more datagram may be taken."""
        missing = 1 - (self.tokens + (now - self.when) * self.rate)
        return max(0.0, missing / self.rate)


# -- the key and the sender: files and sockets ------------------------------------------


def load_key(setting: str, cache_dir: Path) -> bytes:
    """The shared key: ``setting`` if given, else ``<cache>/.control-key``, made once
    (owner-only, written whole before it is visible). A short or empty key file is a
    ConfigError: never "authentication off"."""
    if setting:
        return setting.strip().encode()
    path = cache_dir / KEY_FILE
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        temporary = cache_dir / f"{KEY_FILE}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)  # never replaces a key another process made
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"[multicast] control_key: cannot read {path}: {exc.strerror}"
                          ) from None
    if len(text) < MIN_KEY:
        raise ConfigError(
            f"[multicast] control_key: {path} holds {len(text)} characters, fewer than "
            f"{MIN_KEY}; delete it to make a new one (then copy it to the other hosts with "
            "'speeddata control key'), or set [multicast] control_key")
    return text.encode()


def announcer(config: Config) -> Callable[[TagRecord], None] | None:
    """What a TagStore of this host announces through: the control group, each change
    sealed with the key (None: the control group is off)."""
    group = config.multicast.control
    if group is None:
        return None
    key = load_key(config.multicast.control_key, config.cache.dir)

    def announce(record: TagRecord) -> None:
        import time

        from speeddata import multicast

        with closing(multicast.sender(config.multicast.interface, config.multicast.ttl)) as out:
            out.setblocking(True)
            for _ in range(REPEATS):
                out.sendto(seal(key, record.as_message(), time.time_ns(),
                                secrets.token_bytes(16)), (group.host, group.port))

    return announce


def new_sender_id() -> str:
    return secrets.token_hex(8)


def hostname() -> str:
    return socket.gethostname()[:MAX_ORIGIN]
