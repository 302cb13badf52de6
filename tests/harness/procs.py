"""Load for the tests and benchmarks: schemas of many channels, a paced source, and
percentiles of what was measured. Starting and measuring the services is
``speeddata.bench.services`` (the product's ``speeddata bench relay`` uses it too)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path


def bench_schemas(folder: Path, channels: int, signals: int) -> list[str]:
    """``channels`` channels named bench0.. with a time and ``signals`` doubles each."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for c in range(channels):
        name = f"bench{c}"
        schema = {"type": "record", "name": name, "fields": [
            {"name": "time", "type": "long"},
            *({"name": f"s{i}", "type": "double", "unit": "V"} for i in range(signals))]}
        (folder / f"{name}.avsc").write_text(json.dumps(schema))
        names.append(name)
    return names


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def paced_source(schemas: Path, channels: list[str], rate_hz: float, host: str, port: int,
                 duration: float, ready: Callable[[], None] | None = None) -> int:
    """Send every channel at ``rate_hz`` with time = the moment of sending; returns sent."""
    from speeddata.schemas import load_file
    from speeddata.sender import Encoder

    encoders = [Encoder(load_file(schemas / f"{c}.avsc")) for c in channels]
    fields = [[s.name for s in e.channel.signals] for e in encoders]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    sent = 0
    due = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= duration:
            break
        target = int(elapsed * rate_hz) + 1
        while due < target:
            t = time.time_ns()
            phase = due / rate_hz
            for encoder, names in zip(encoders, fields, strict=True):
                record = {n: float((due + i) % 100) + phase for i, n in enumerate(names)}
                record["time"] = t
                try:
                    sock.sendto(encoder.encode(record), (host, port))
                    sent += 1
                except OSError:
                    pass
            due += 1
        time.sleep(0.001)
    return sent
