"""``speeddata tail CHANNEL``: a channel's records as they pass on a multicast group, one
line each (like ``mosquitto_sub`` or ``kcat``). Formatting is pure; the loop is thin."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

import fastavro

from speeddata import wire
from speeddata.errors import SpeeddataError, WireError
from speeddata.schemas import Channel

WIDTH = 12


def pick_signals(channel: Channel, wanted: list[str] | None) -> list[str]:
    names = [s.name for s in channel.signals]
    if not wanted:
        return names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise SpeeddataError(f"channel {channel.name!r} has no signal(s) {unknown} "
                             f"(it has {', '.join(names)})")
    return wanted


def header_line(signals: list[str]) -> str:
    return f"{'time (UTC)':<26}" + "".join(f"{s[:WIDTH - 1]:>{WIDTH}}" for s in signals)


def text_line(record: dict[str, Any], time_field: str, signals: list[str]) -> str:
    stamp = datetime.fromtimestamp(record[time_field] / 1e9, UTC)
    cells = []
    for name in signals:
        value = record.get(name)
        cell = f"{value:.6g}" if isinstance(value, float) else str(value)
        cells.append(f"{cell[:WIDTH - 1]:>{WIDTH}}")
    return f"{stamp.isoformat(timespec='microseconds')[:26]:<26}" + "".join(cells)


def json_line(record: dict[str, Any], channel: str, time_field: str,
              signals: list[str]) -> str:
    return json.dumps({"channel": channel, time_field: record[time_field],
                       **{name: record.get(name) for name in signals}})


def records(datagrams: Iterator[bytes], channel: Channel) -> Iterator[dict[str, Any]]:
    """The records of ``channel`` among ``datagrams`` (the others are skipped)."""
    fingerprints = {channel.fingerprint, *channel.aliases}
    for datagram in datagrams:
        try:
            fp, body = wire.split(datagram)
        except WireError:
            continue
        if fp in fingerprints:
            yield fastavro.schemaless_reader(io.BytesIO(body), channel.parsed, None)


def derived_records(datagrams: Iterator[bytes], compiled: Any, registry: Any
                    ) -> Iterator[dict[str, Any]]:
    """The records of a derived channel (``live.Compiled``), computed from its inputs'
    datagrams among ``datagrams`` one at a time, as the stripchart's hub computes them."""
    import numpy as np

    from speeddata.derived.live import DerivedSet

    derived = DerivedSet([compiled])
    inputs = {fp: registry[name] for name in compiled.inputs()
              for fp in (registry[name].fingerprint, *registry[name].aliases)}
    for datagram in datagrams:
        try:
            fp, body = wire.split(datagram)
            channel = inputs.get(fp)
            if channel is None:
                continue
            record = fastavro.schemaless_reader(io.BytesIO(body), channel.parsed, None)
        except Exception:  # a datagram that is not one of its records: not printed
            continue
        columns = {k: np.asarray([v]) for k, v in record.items()
                   if isinstance(v, int | float)}
        for _, out in derived.compute(channel, columns):
            yield {k: v[0].item() for k, v in out.items()}


def receive(sock: socket.socket) -> Iterator[bytes]:
    while True:
        yield sock.recv(65535)


def run(sock: socket.socket, channel: Channel, signals: list[str], as_json: bool,
        count: int | None, out: TextIO, flush: Callable[[], None],
        found: Iterator[dict[str, Any]] | None = None) -> int:
    """Print records (``found``, else ``channel``'s on ``sock``) until ``count`` (or
    forever); returns how many were printed."""
    if not as_json:
        print(header_line(signals), file=out)
    printed = 0
    for record in found if found is not None else records(receive(sock), channel):
        line = (json_line(record, channel.name, channel.time_field, signals) if as_json
                else text_line(record, channel.time_field, signals))
        print(line, file=out)
        flush()
        printed += 1
        if count is not None and printed >= count:
            break
    return printed
