"""The demo source: sine, ramp, square, chirp and noise signals on the demo channels.

Samples are timestamped on a fixed grid and sent in small bursts (every 10 ms), so the
rate is exact on average however the OS schedules the process.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from speeddata import loss
from speeddata.schemas import Registry
from speeddata.sender import Encoder

log = logging.getLogger("speeddata.demo")

TICK = 0.01  # seconds between bursts
STATES = ("IDLE", "RUNNING", "FAULT")


def motor(t: float, i: int) -> dict[str, Any]:
    chirp_phase = 2 * math.pi * (1 + 4 * ((t % 10) / 10)) * (t % 10)  # 1 -> 5 Hz over 10 s
    return {
        "speed": 1500 + 500 * math.sin(2 * math.pi * 0.5 * t),
        "torque": 10.0 if (t % 2) < 1 else -10.0,
        "current": 20 * math.sin(chirp_phase),
        "voltage": 48 + random.gauss(0, 0.5),
        "position": (t * 90) % 360,
        "temperature": 60 + 5 * math.sin(2 * math.pi * t / 60),
    }


def env(t: float, i: int) -> dict[str, Any]:
    state = STATES[(i // 20) % 2] if i % 97 else "FAULT"
    return {
        "humidity": 45 + 5 * math.sin(2 * math.pi * t / 300),
        "pressure": 1013.0 + random.gauss(0, 0.2),
        "state": state,
        "message": f"sample {i}: rig {state.lower()}",
    }


def example(t: float, i: int) -> dict[str, Any]:
    return {
        "message": "Hello from the SpeedData prototype",
        "counter": i,
        "sine_wave": math.sin(2 * math.pi * t),
        "ramp": (t % 1.0) * 2 - 1,
        "square_wave": 1.0 if (t % 1.0) < 0.5 else -1.0,
        "noise": random.random(),
    }


GENERATORS: dict[str, Callable[[float, int], dict[str, Any]]] = {
    "motor": motor, "env": env, "example": example,
}
DEFAULT_RATES = {"motor": 1000.0, "env": 1.0, "example": 10.0}


def schedule(rate_hz: float, start: float, now: float, done: int) -> Iterator[int]:
    """Sample numbers due by ``now`` for a source started at ``start`` that sent ``done``."""
    due = int((now - start) * rate_hz) + 1
    return iter(range(done, due))


def run(
    registry: Registry,
    host: str,
    port: int,
    channels: list[str],
    rate_scale: float = 1.0,
    legacy: set[str] | None = None,
    duration: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, int]:
    """Send the demo channels until ``duration`` passes or ``should_stop()``.

    Channels named in ``legacy`` are sent as bare bodies, as the prototype's senders do.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    encoders = {name: Encoder(registry[name]) for name in channels}
    rates = {name: DEFAULT_RATES.get(name, 10.0) * rate_scale for name in channels}
    sent = dict.fromkeys(channels, 0)
    failed = dict.fromkeys(channels, 0)
    reporter = loss.Reporter()  # the relay counts what the network lost of the demo's
    start = time.time()
    log.info("demo: sending %s to %s:%d",
             ", ".join(f"{n} at {r:g} Hz" for n, r in rates.items()), host, port)

    def report() -> None:
        counts = {registry[n].fingerprint: (sent[n] - failed[n], failed[n]) for n in channels}
        for datagram in reporter.reports(time.time_ns(), counts):
            with contextlib.suppress(OSError):
                sock.sendto(datagram, (host, port))

    while not should_stop():
        now = time.time()
        if duration is not None and now - start >= duration:
            break
        if reporter.due(time.monotonic()):
            report()
        for name in channels:
            encoder = encoders[name]
            bare = legacy is not None and name in legacy
            for i in schedule(rates[name], start, now, sent[name]):
                t = start + i / rates[name]
                record = GENERATORS[name](t, i)
                record[registry[name].time_field] = int(t * 1e9)
                datagram = encoder.encode(record)
                try:
                    sock.sendto(datagram[10:] if bare else datagram, (host, port))
                except OSError:
                    failed[name] += 1
                sent[name] = i + 1
        time.sleep(max(0.0, TICK - (time.time() - now)))
    report()
    sock.close()
    return {**sent, "failed": sum(failed.values())}


__all__ = ["GENERATORS", "run", "schedule"]
