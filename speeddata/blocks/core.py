"""A block's work between the group and the relay, with no sockets and no clock: take
datagrams, batch the inputs' records, decode them into columns, join them, call the
function, check what it returns and give back the datagrams to send.

The loop around it (``speeddata.blocks.process``) reads the group, passes the time in,
asks when the next batch is due and sends what comes out. Nothing here raises into that
loop: bad datagrams, bodies, results and the function's exceptions are counted by
reason and logged at a bounded rate."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from speeddata import wire
from speeddata.blocks.declare import Block
from speeddata.blocks.join import Columns, Held, concat
from speeddata.blocks.results import ResultError, check, encode, nan_rows
from speeddata.columns import ColumnDecoder
from speeddata.errors import WireError
from speeddata.logs import Throttle
from speeddata.schemas import Channel, Registry

log = logging.getLogger("speeddata.blocks")

LOG_SECONDS = 10.0  # each kind of trouble is logged at most this often (with a count)
HELD_PENDING = 4096  # a joined input's bodies waiting for a batch are decoded beyond this


class _Input:
    """One input channel: its current schema's decoder, and its bodies not yet decoded
    (runs by decoder, so a schema edited mid-batch decodes each body by its own)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.channel: Channel | None = None
        self.decoder: ColumnDecoder | None = None
        self.runs: list[tuple[ColumnDecoder, list[bytes]]] = []
        self.pending = 0
        self.first_at = 0.0  # when the oldest pending body came (the loop's clock)
        self.received = 0

    def add(self, decoder: ColumnDecoder, body: bytes, now: float) -> None:
        if not self.runs or self.runs[-1][0] is not decoder:
            self.runs.append((decoder, []))
        if not self.pending:
            self.first_at = now
        self.runs[-1][1].append(body)
        self.pending += 1
        self.received += 1

    def take(self, count: int) -> list[tuple[ColumnDecoder, list[bytes]]]:
        """The first ``count`` pending bodies, in runs."""
        taken: list[tuple[ColumnDecoder, list[bytes]]] = []
        while count and self.runs:
            decoder, bodies = self.runs[0]
            if len(bodies) <= count:
                taken.append(self.runs.pop(0))
                count -= len(bodies)
            else:
                taken.append((decoder, bodies[:count]))
                self.runs[0] = (decoder, bodies[count:])
                count = 0
        self.pending = sum(len(b) for _, b in self.runs)
        return taken


class BlockEngine:
    """One block's state: its inputs, the joined channels' held samples, its counters.

    ``clock`` (seconds, monotonic) times the function's calls; the tests pass their own."""

    def __init__(self, spec: Block, output: Channel, registry: Registry,
                 clock: Callable[[], float]) -> None:
        self.spec = spec
        self.output = output
        self.clock = clock
        self.inputs = [_Input(name) for name in spec.inputs]
        self.held = [Held() for _ in spec.inputs[1:]]
        self.routes: dict[bytes, tuple[_Input, ColumnDecoder]] = {}
        self.signals = tuple(s.name for s in spec.signals)
        self.counts = {"batches": 0, "records_in": 0, "records_out": 0, "nan_records": 0,
                       "dropped_nan": 0, "other_datagrams": 0, "function_seconds": 0.0}
        self.refused: dict[str, int] = {}  # datagrams and bodies, by reason
        self.errors: dict[str, int] = {}  # batches the function failed or returned badly
        self.latency = {"last_ms": 0.0, "max_ms": 0.0, "sum_ms": 0.0}
        self._throttles: dict[str, Throttle] = {}
        self._quiet: dict[str, int] = {}  # events not logged since the last line of a kind
        self.set_registry(registry)

    def set_registry(self, registry: Registry) -> list[str]:
        """Route the inputs by ``registry`` from now on (a schema added or edited while
        running); returns the inputs it does not have yet."""
        routes: dict[bytes, tuple[_Input, ColumnDecoder]] = {}
        missing = []
        for source in self.inputs:
            channel = registry.get(source.name)
            if channel is None:
                missing.append(source.name)
                continue
            if channel is not source.channel:
                source.channel, source.decoder = channel, ColumnDecoder(channel)
            assert source.decoder is not None
            for fp in (channel.fingerprint, *channel.aliases):
                routes.setdefault(fp, (source, source.decoder))
        self.routes = routes
        return missing

    def feed(self, datagrams: Iterable[bytes], now: float) -> None:
        """Datagrams from the group: the inputs' bodies kept for the next batch, bad
        datagrams counted, other channels' passed over."""
        routes = self.routes
        marker, size = wire.MARKER, wire.HEADER_SIZE
        for datagram in datagrams:
            if len(datagram) < size or datagram[:2] != marker:
                try:  # the reason, as the relay names it
                    wire.split(datagram)
                except WireError as exc:
                    self._refuse(exc.reason, str(exc), now)
                continue
            route = routes.get(bytes(datagram[2:size]))
            if route is None:  # other channels, the relays' loss reports
                self.counts["other_datagrams"] += 1
                continue
            route[0].add(route[1], bytes(datagram[size:]), now)
        for source, held in zip(self.inputs[1:], self.held, strict=True):
            if source.pending > HELD_PENDING:  # no primary for a while: bounded all the same
                self._hold(source, held, now)

    def wake_at(self) -> float | None:
        """When the pending batch is due (the loop's clock), None with nothing pending."""
        primary = self.inputs[0]
        if not primary.pending:
            return None
        if primary.pending >= self.spec.max_records:
            return primary.first_at
        return primary.first_at + self.spec.max_delay

    def flush(self, now: float, everything: bool = False) -> list[bytes]:
        """Run the batches due at ``now`` (all that is pending with ``everything``, as at
        a stop); the output datagrams, in the order of their input samples."""
        out: list[bytes] = []
        while (due := self.wake_at()) is not None and (everything or due <= now):
            out += self._batch(now)
        return out

    def _batch(self, now: float) -> list[bytes]:
        primary = self.inputs[0]
        started_at = primary.first_at
        for source, held in zip(self.inputs[1:], self.held, strict=True):
            self._hold(source, held, now)
        columns = self._decode(primary, self.spec.max_records, now)
        if primary.pending:
            primary.first_at = now
        if columns is None:
            return []
        assert primary.channel is not None
        times = columns.pop(primary.channel.time_field).astype(np.int64, copy=False)
        if not len(times):
            return []
        batch: dict[str, Any] = {"time": times, primary.name: columns}
        for source, held in zip(self.inputs[1:], self.held, strict=True):
            batch[source.name] = held.join(times)
            held.trim(int(times.max()))
        self.counts["batches"] += 1
        self.counts["records_in"] += len(times)
        before = self.clock()
        try:
            result = self.spec.function(batch)
        except (Exception, SystemExit) as exc:  # sys.exit() in a block ends a batch only
            self.counts["function_seconds"] += self.clock() - before
            kind = f"exception {type(exc).__name__}"
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self._log(kind, now, logging.ERROR, "block %s raised on a batch of %d records "
                      "(the block goes on; the batch sends nothing):\n%s", self.spec.name,
                      len(times), "".join(traceback.format_exception(exc)).rstrip())
            return []
        self.counts["function_seconds"] += self.clock() - before
        try:
            rows = check(result, self.signals, times)
        except ResultError as exc:
            kind = f"return {exc.reason}"
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self._log(kind, now, logging.WARNING, "block %s: batch of %d records refused: "
                      "the function %s", self.spec.name, len(times), exc)
            return []
        if rows is None:
            return []
        holes = nan_rows(rows)
        count = int(holes.sum())
        self.counts["nan_records"] += count
        if count and self.spec.nan == "drop":
            self.counts["dropped_nan"] += count
            keep = ~holes
            rows = type(rows)(rows.times[keep], rows.values[keep])
        datagrams = encode(self.output.fingerprint, rows)
        self.counts["records_out"] += len(datagrams)
        late_ms = max(0.0, (now - started_at) * 1e3)
        self.latency["last_ms"] = late_ms
        self.latency["max_ms"] = max(self.latency["max_ms"], late_ms)
        self.latency["sum_ms"] += late_ms
        return datagrams

    def _hold(self, source: _Input, held: Held, now: float) -> None:
        columns = self._decode(source, source.pending, now)
        if columns:
            assert source.channel is not None
            times = columns.pop(source.channel.time_field)
            held.add(times, columns)

    def _decode(self, source: _Input, count: int, now: float) -> Columns | None:
        """Up to ``count`` pending bodies of ``source`` as columns; a body its schema does
        not decode is counted (``bad_body``) and left out."""
        parts: list[Columns] = []
        for decoder, bodies in source.take(count):
            try:
                parts.append(decoder.decode_bodies(bodies))
                continue
            except ValueError:
                pass
            good = []
            for body in bodies:  # find the bad ones: rare, so one at a time is fine
                try:
                    decoder.decode_bodies([body])
                except ValueError as exc:
                    self._refuse("bad_body", f"channel {source.name}: {exc}", now)
                else:
                    good.append(body)
            if good:
                parts.append(decoder.decode_bodies(good))
        return concat(parts) if parts else None

    def _refuse(self, reason: str, message: str, now: float) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self._log(f"refused {reason}", now, logging.WARNING, "block %s: datagram refused "
                  "(%s): %s", self.spec.name, reason, message)

    def _log(self, kind: str, now: float, level: int, message: str, *args: Any) -> None:
        """Log one event of ``kind`` (with how many since the last line of it) at most
        once per LOG_SECONDS."""
        throttle = self._throttles.setdefault(kind, Throttle(LOG_SECONDS))
        if not throttle.ready(now):
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        quiet = self._quiet.pop(kind, 0)
        log.log(level, message + (f" [{quiet} more not logged in the last "
                                  f"{LOG_SECONDS:g} s]" if quiet else ""), *args)

    def statistics(self) -> dict[str, Any]:
        """Counters since the start, as the status file and the tests read them."""
        batches = max(1, self.counts["batches"])
        return {
            "block": self.spec.name, "inputs": list(self.spec.inputs),
            "output": self.spec.output, **self.counts,
            "received": {source.name: source.received for source in self.inputs},
            "pending": sum(source.pending for source in self.inputs),
            "held_dropped": sum(held.dropped for held in self.held),
            "refused": dict(self.refused), "errors": dict(self.errors),
            "latency_ms": {"last": round(self.latency["last_ms"], 3),
                           "max": round(self.latency["max_ms"], 3),
                           "mean": round(self.latency["sum_ms"] / batches, 3)},
        }
