"""The stripchart's state, free of sockets: decoded histories and client subscriptions.

``Hub.ingest`` takes datagrams (as they come from the multicast group) and the time they
arrived; ``Hub.frame`` builds the next binary frame for one client. The hub reads no
clock: every method that needs the time is given it. The web server around it only
moves bytes.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speeddata import loss, wire
from speeddata.columns import ColumnDecoder, matrix
from speeddata.derived.live import derived_of
from speeddata.errors import WireError
from speeddata.logs import Throttle
from speeddata.schemas import Channel, Registry
from speeddata.stripchart import frames
from speeddata.stripchart.alarms import Alarms
from speeddata.stripchart.history import ChannelHistory, Level, TextHistory, default_levels
from speeddata.stripchart.sourceclock import SourceClock

log = logging.getLogger("speeddata.stripchart")


@dataclass(eq=False)  # one per page, kept in a set by identity
class Client:
    """What one page subscribed to and what it has been sent."""

    signals: list[str] = field(default_factory=list)
    window_seconds: float = 60.0
    seq: int = 0  # updates up to this one have been sent
    needs_history: bool = False
    frames_sent: int = 0
    frames_dropped: int = 0


@dataclass
class ChannelRate:
    datagrams: int = 0
    first_ns: int = 0  # the first sample this server drew, on the chart's axis
    last_ns: int = 0
    rate_hz: float = 0.0
    _window_start: float = 0.0
    _window_count: int = 0


CLOCK_TOLERANCE_NS = 10 * 10**9
MAX_SIGNALS = 1000
MAX_WINDOW_SECONDS = 7 * 86400
LOG_SECONDS = 10.0  # refused reserved messages and failed batches are logged this often


class SubscriptionError(ValueError):
    pass


class Hub:
    def __init__(self, registry: Registry, levels: list[Level] | None = None,
                 clock_tolerance_ns: int = CLOCK_TOLERANCE_NS,
                 allow: Sequence[ipaddress.IPv4Network] = ()) -> None:
        self.clock_tolerance_ns = clock_tolerance_ns
        self.levels = levels or default_levels()
        self.clocks: dict[str, SourceClock] = {}
        self.decoders: dict[str, ColumnDecoder] = {}
        self.channels: dict[str, ChannelHistory] = {}
        self.numeric: dict[str, tuple[ChannelHistory, int]] = {}  # signal -> (history, column)
        self.text: dict[str, TextHistory] = {}
        self.rates: dict[str, ChannelRate] = {}
        self.seq = 0
        self.rejected = 0
        self.datagrams = 0
        self.hops: dict[str, loss.Hop] = {}  # per group: what the relays forwarded vs got
        self.allow = list(allow)  # [relay] allow: the networks whose reports are trusted
        # reserved messages refused, per kind and reason; batches the feed could not take
        self.refused: dict[str, dict[str, int]] = {"forward_report": {}, "replay_notice": {}}
        self.feed_errors = 0
        self._refusal_log = Throttle(LOG_SECONDS)
        self._levels_json = json.dumps([lvl.width_ns / 1e6 for lvl in self.levels],
                                       separators=(",", ":"))
        self._series_json: dict[tuple[str, int], str] = {}  # a series' header, but its n
        self.set_registry(registry)

    def set_registry(self, registry: Registry) -> None:
        """Draw the channels of ``registry`` from now on: new ones get a history; an
        edited one keeps its history if its numeric signals are the same, else starts a
        new one, and a text signal it removed is forgotten; a retired one keeps what it has
        (the page can still show it). Subscriptions to what is gone: see ``prune``."""
        self.registry = registry
        self._series_json.clear()
        self.derived = derived_of(registry)  # derived channels: computed in _fold
        for channel in registry:
            self.clocks.setdefault(channel.name, SourceClock(self.clock_tolerance_ns))
            self.rates.setdefault(channel.name, ChannelRate())
            self.decoders[channel.name] = ColumnDecoder(channel)
            names = [s.name for s in channel.signals if s.kind == "number"]
            prefix = f"{channel.name}."
            old = self.channels.get(channel.name)
            if old is None or old.signals != names:
                history = self.channels[channel.name] = ChannelHistory(self.levels, names)
                for key in [k for k in self.numeric if k.startswith(prefix)]:
                    del self.numeric[key]
                for column, name in enumerate(names):
                    self.numeric[prefix + name] = (history, column)
            texts = {prefix + s.name for s in channel.signals if s.kind == "text"}
            for key in [k for k in self.text if k.startswith(prefix) and k not in texts]:
                del self.text[key]  # a text signal the edit removed
            for key in texts:
                self.text.setdefault(key, TextHistory())
        before = getattr(self, "alarms", None)
        self.alarms = Alarms(registry)
        if before is not None:  # what is out of limits stays so, with its since
            for name, state in before.states.items():
                if name in self.alarms.states and before.limits[name] == self.alarms.limits[name]:
                    self.alarms.states[name] = state
        # the numeric columns with limits, per channel: the only ones checked per batch
        self.limited = {name: [(column, f"{name}.{signal}")
                               for column, signal in enumerate(history.signals)
                               if f"{name}.{signal}" in self.alarms.limits]
                        for name, history in self.channels.items()}

    # -- ingest -------------------------------------------------------------------------
    def ingest(self, datagrams: list[bytes], now: float | None = None, *, now_ns: int,
               source: tuple[str, str] | None = None) -> None:
        """Decode and fold in a batch of single-object datagrams received at ``now_ns``
        (the wall clock, for the sources' clocks) and ``now`` (seconds of a monotonic
        clock, for rates; default ``now_ns`` in seconds); ``source``: (group, relay
        address) they all came from, to count multicast loss."""
        now = now_ns / 1e9 if now is None else now
        by_channel: dict[Channel, list[memoryview]] = {}
        table = self.registry.fingerprints
        for datagram in datagrams:
            channel = table.get(datagram[2:10]) if datagram[:2] == wire.MARKER else None
            if channel is None:
                if not datagram.startswith(wire.REPLAY_MARKER):
                    self.rejected += 1
                    continue
                try:
                    notice = wire.parse_replay_notice(datagram)
                except WireError as exc:
                    self.rejected += 1
                    self.refuse("replay_notice", exc, now_ns, source)
                    continue
                for fp in notice.channels:
                    replayed = table.get(fp)
                    if replayed is not None:
                        self.clocks[replayed.name].follow_replay(
                            notice, now_ns, source[1] if source else None)
                continue
            by_channel.setdefault(channel, []).append(memoryview(datagram)[wire.HEADER_SIZE:])
        self.datagrams += len(datagrams)
        if source is not None:
            hop = self.hops.setdefault(source[0], loss.Hop())
            for channel, bodies in by_channel.items():
                hop.arrived((source[1], channel.name), len(bodies), now_ns)
        for channel, bodies in by_channel.items():
            self._ingest_channel(channel, bodies, now, now_ns, source[1] if source else None)

    def ingest_rows(self, rows: np.ndarray, lengths: np.ndarray, now: float, *, now_ns: int,
                    source: tuple[str, str]) -> None:
        """``ingest`` for datagrams as the rows of a uint8 matrix (datagram ``i`` is
        ``rows[i, :lengths[i]]``), as a batch read gives them: routed by fingerprint and
        checked and decoded a channel at a time with numpy, no Python object per
        datagram where a channel's datagrams share one length. Anything else in the batch
        (a replay notice, a short or unknown datagram) goes the way ``ingest`` takes.

        Each channel's batch goes, checked and decoded, to ``_fold(channel, columns,
        ...)``: every field at full rate (``columns.blocks``: the doubles as one
        matrix), not folded yet: where a per-channel hook computes derived columns."""
        n = len(lengths)
        if not n:
            return
        if rows.shape[1] < wire.HEADER_SIZE:  # all too short to be data: room for the test
            rows = np.pad(rows, ((0, 0), (0, wire.HEADER_SIZE - rows.shape[1])))
        ours = (lengths >= wire.HEADER_SIZE) & (rows[:, 0] == wire.MARKER[0]) & (
            rows[:, 1] == wire.MARKER[1])
        prints = np.ascontiguousarray(rows[:, 2:wire.HEADER_SIZE]).view(np.uint64).ravel()
        table = self.registry.fingerprints
        others = ~ours
        groups: list[tuple[Channel, np.ndarray]] = []
        for value in np.unique(prints[ours]).tolist():
            channel = table.get(np.uint64(value).tobytes())
            chosen = ours & (prints == value)
            if channel is None:
                others |= chosen
            else:
                groups.append((channel, np.flatnonzero(chosen)))
        if others.any():  # notices and refusals, one by one
            self.ingest([rows[i, :lengths[i]].tobytes() for i in np.flatnonzero(others)],
                        now, now_ns=now_ns, source=source)
        self.datagrams += n - int(others.sum())
        hop = self.hops.setdefault(source[0], loss.Hop())
        for channel, chosen in groups:
            hop.arrived((source[1], channel.name), len(chosen), now_ns)
            sizes = lengths[chosen]
            size = int(sizes[0])
            if (sizes == size).all():
                bodies = np.ascontiguousarray(rows[chosen, wire.HEADER_SIZE:size])
                self._ingest_rows(channel, bodies, now, now_ns, source[1])
            else:
                self._ingest_channel(channel, [rows[i, wire.HEADER_SIZE:lengths[i]].tobytes()
                                               for i in chosen.tolist()], now, now_ns,
                                     source[1])

    def forward_report(self, group: str, relay: str, datagram: bytes, now_ns: int) -> None:
        """A relay's ForwardReport on ``group``, from address ``relay`` ("ip:port"),
        received at ``now_ns``: matched with the arrivals counted so far (everything that
        came before it) from that address only; refused (counted, logged at a bounded
        rate) if not valid."""
        try:
            report = loss.parse_forward_report(datagram)
        except WireError as exc:
            self.rejected += 1
            self.refuse("forward_report", exc, now_ns, (group, relay))
            return
        hop = self.hops.setdefault(group, loss.Hop())
        for fp, forwarded in report.channels:
            channel = self.registry.by_fingerprint(fp)
            if channel is not None:  # a channel this server does not draw: not its loss
                hop.report((relay, channel.name), report.relay, forwarded, now_ns,
                           name=report.name)

    def refuse(self, kind: str, exc: WireError, now_ns: int,
               source: tuple[str, str] | None) -> None:
        """Count a refused reserved message by kind and reason; log at a bounded rate."""
        counts = self.refused[kind]
        counts[exc.reason] = counts.get(exc.reason, 0) + 1
        if self._refusal_log.ready(now_ns / 1e9):
            log.warning("%s from %s refused (%s): %s; refused so far: %s", kind,
                        source[1] if source else "?", exc.reason, exc, self.refused)

    def feed_failed(self, exc: Exception, datagrams: int, source: str, now_ns: int) -> None:
        """A batch from ``source`` that raised (a bug a datagram found): counted and
        logged at a bounded rate; the feed goes on with the other relays' batches."""
        self.feed_errors += 1
        self.rejected += datagrams
        if self._refusal_log.ready(now_ns / 1e9):
            log.error("%d datagrams from %s not taken (%s: %s); %d such batches so far",
                      datagrams, source, type(exc).__name__, exc, self.feed_errors)

    def statistics(self) -> dict[str, Any]:
        return {"refused": {k: dict(v) for k, v in self.refused.items()},
                "feed_errors": self.feed_errors,
                "derived": self.derived.statistics(),  # per derived channel: failures
                "forward_reports": {g: hop.statistics() for g, hop in self.hops.items()}}

    def loss(self, now_ns: int) -> dict[str, list[dict[str, Any]]]:
        """Per group, relay and channel: forwarded, arrived, lost; and whether the relay's
        address is in a network ``[relay] allow`` lists."""
        return {group: hop.figures(now_ns, trust=self._trust)
                for group, hop in sorted(self.hops.items())}

    def _trust(self, relay: str) -> str:
        return loss.trust_of(relay.rpartition(":")[0], self.allow)

    def _ingest_channel(self, channel: Channel, bodies: list[memoryview], now: float,
                        now_ns: int, source: str | None = None) -> None:
        valid = channel.check.valid_bodies(bodies)
        if not valid.all():  # from a rogue sender on the group: never decoded, counted
            self.rejected += int((~valid).sum())
            bodies = [b for b, ok in zip(bodies, valid.tolist(), strict=True) if ok]
            if not bodies:
                return
        self._fold(channel, self.decoders[channel.name].decode_bodies(bodies), now, now_ns,
                   source)

    def _ingest_rows(self, channel: Channel, bodies: np.ndarray, now: float, now_ns: int,
                     source: str | None) -> None:
        """``_ingest_channel`` for bodies of one length, the rows of a matrix."""
        valid = channel.check.valid_rows(bodies)
        if not valid.all():
            self.rejected += int((~valid).sum())
            bodies = np.ascontiguousarray(bodies[valid])
            if not len(bodies):
                return
        self._fold(channel, self.decoders[channel.name].decode_rows(bodies), now, now_ns,
                   source)

    def _fold(self, channel: Channel, columns: dict[str, np.ndarray], now: float,
              now_ns: int, source: str | None) -> None:
        """Decoded columns of a channel (a field each, full rate) into its histories,
        alarms and rate: placed on the time axis, then folded once per batch; and the
        derived channels it drives, from every sample of the batch (speeddata/derived)."""
        times, keep = self.clocks[channel.name].place(columns[channel.time_field], now_ns,
                                                      source)
        self._fold_placed(channel, columns, times, keep, now)
        for derived, computed in self.derived.compute(channel, columns):
            self._fold_placed(derived, computed, times, keep, now)

    def _fold_placed(self, channel: Channel, columns: dict[str, np.ndarray],
                     times: np.ndarray, keep: np.ndarray, now: float) -> None:
        rate = self.rates[channel.name]
        rate.datagrams += len(keep)
        if not len(times):
            return
        self.seq += 1
        history = self.channels[channel.name]
        if history.signals:
            values = matrix(columns, history.signals)
            if len(times) < len(keep):
                values = values[keep]
            history.add(times, values, self.seq)
            for column, key in self.limited.get(channel.name, ()):
                self.alarms.update(key, times, values[:, column])
        for signal in channel.signals:
            key = f"{channel.name}.{signal.name}"
            if key in self.text:
                text = columns[signal.name]
                self.text[key].add(times, text[keep] if len(times) < len(keep) else text,
                                   self.seq)
        rate.last_ns = max(rate.last_ns, int(times.max()))
        rate.first_ns = rate.first_ns or int(times.min())
        rate._window_count += len(keep)
        if now - rate._window_start >= 1.0:
            rate.rate_hz = rate._window_count / max(now - rate._window_start, 1e-9) if (
                rate._window_start) else 0.0
            rate._window_start, rate._window_count = now, 0

    # -- subscriptions ------------------------------------------------------------------
    def known(self, signal: str) -> bool:
        return signal in self.numeric or signal in self.text

    def subscribe(self, client: Client, message: dict[str, Any]) -> list[str]:
        """Apply a subscribe message; returns the unknown signal names it named."""
        signals = message.get("signals")
        if not isinstance(signals, list) or not all(isinstance(s, str) for s in signals):
            raise SubscriptionError("'signals' must be a list of names like 'motor.speed'")
        if len(signals) > MAX_SIGNALS or any(len(s) > 257 for s in signals):
            raise SubscriptionError(f"at most {MAX_SIGNALS} signals of up to 257 characters")
        window = message.get("window", client.window_seconds)
        if isinstance(window, bool) or not isinstance(window, int | float) or not (
                0 < window <= MAX_WINDOW_SECONDS):
            raise SubscriptionError(
                f"'window' must be a number of seconds, more than 0 and at most "
                f"{MAX_WINDOW_SECONDS}")
        unknown = [s for s in signals if not self.known(s)]
        client.signals = [s for s in dict.fromkeys(signals) if self.known(s)]
        client.window_seconds = float(window)
        client.needs_history = True
        return unknown

    def prune(self, client: Client) -> list[str]:
        """Drop from ``client``'s subscription the signals this hub no longer has (a
        schema edit removed them); returns those dropped, in subscription order."""
        gone = [s for s in client.signals if not self.known(s)]
        if gone:
            client.signals = [s for s in client.signals if self.known(s)]
        return gone

    # -- frames -------------------------------------------------------------------------
    def frame(self, client: Client, now_ns: int) -> bytes | None:
        """The client's next frame, or None when nothing changed for it."""
        history = client.needs_history
        series: list[str] = []  # each series' header, JSON: {"signal":...,"level":...,"n":...}
        arrays: list[np.ndarray] = []
        text: dict[str, list[tuple[float, str]]] = {}
        by_history: dict[int, tuple[ChannelHistory, list[tuple[str, int]]]] = {}
        for name in client.signals:
            if name in self.numeric:
                hist, column = self.numeric[name]
                by_history.setdefault(id(hist), (hist, []))[1].append((name, column))
            else:
                changed = self.text[name].changed_since(-1 if history else client.seq)
                if changed:
                    text[name] = changed
        for hist, wanted in by_history.values():
            columns = [column for _, column in wanted]
            every = None if columns == list(range(len(hist.signals))) else columns
            for level, ring in enumerate(hist.rings):
                if history:
                    span = min(client.window_seconds, ring.level.span_seconds) * 1e9
                    pos = ring.positions_since(now_ns - int(span) if level == 0 else 0)
                else:
                    pos = ring.changed_positions(client.seq)
                if not len(pos):
                    continue
                n = f"{len(pos)}}}"
                series += [self._series_of(name, level) + n for name, _ in wanted]
                arrays.append(ring.block(pos, every))  # each series' arrays, in order
        if not series and not text and not history:
            return None
        # the header as json.dumps(separators=(",", ":")) writes it, byte for byte, of
        # {"type", "server_ms", "seq", "dropped", "levels", "series", "text"} (see frames)
        header = (f'{{"type":"{"history" if history else "data"}",'
                  f'"server_ms":{float(now_ns / 1e6)!r},"seq":{int(self.seq)},'
                  f'"dropped":{int(client.frames_dropped)},"levels":{self._levels_json},'
                  f'"series":[{",".join(series)}],'
                  f'"text":{json.dumps(text, separators=(",", ":"))}}}')
        client.seq = self.seq
        client.needs_history = False
        return frames.encode_text(header.encode(), arrays)

    def _series_of(self, name: str, level: int) -> str:
        """``{"signal":<name>,"level":<level>,"n":`` as JSON, made once per series."""
        key = (name, level)
        text = self._series_json.get(key)
        if text is None:
            text = self._series_json[key] = (
                f'{{"signal":{json.dumps(name)},"level":{int(level)},"n":')
        return text

    # -- descriptions -------------------------------------------------------------------
    def describe(self, now_ns: int) -> list[dict[str, Any]]:
        out = []
        for channel in self.registry:
            rate = self.rates[channel.name]
            out.append({
                "name": channel.name,
                "fingerprint": channel.fingerprint.hex(),
                "doc": channel.schema.get("doc", ""),
                "time_field": channel.time_field,
                "rate_hz": round(rate.rate_hz, 1),
                "datagrams": rate.datagrams,
                "first_seen_ms": rate.first_ns / 1e6 if rate.first_ns else None,
                "last_seen_ms": rate.last_ns / 1e6 if rate.last_ns else None,
                "stale": not rate.last_ns or now_ns - rate.last_ns > 5e9,
                "clock_offset_ms": round(self.clocks[channel.name].offset_ns / 1e6, 1),
                "clock_shifted": self.clocks[channel.name].shifted,
                "replay": self.clocks[channel.name].replaying(now_ns),
                "dropped_times": self.clocks[channel.name].dropped,
                "ahead_times": self.clocks[channel.name].ahead,
                "signals": [
                    {"name": s.name, "id": f"{channel.name}.{s.name}", "type": s.avro_type,
                     "kind": s.kind, "unit": s.unit, "doc": s.doc, "symbols": list(s.symbols),
                     "limits": s.limits.as_json() if s.limits else None,
                     **({"expression": s.expression} if hasattr(s, "expression") else {})}
                    for s in channel.signals
                ],
            })
        return out

    def memory_bytes(self) -> int:
        return sum(h.memory_bytes() for h in self.channels.values())
