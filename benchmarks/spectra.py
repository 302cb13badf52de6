#!/usr/bin/env python3
"""Spectra benchmark: what /api/spectrum and /api/xy cost on the largest range they take.

Writes 4 194 000 motor records (just under 2^22, 70 min at 1 kHz, blocks of 1000) to a
temporary cache, then times, median of 3 runs each: reading every sample of one signal
from the cache
(``fullrate.read``), Welch (1024) and the FFT of them, and the whole HTTP answers
(in process); the baseline is reading the same records with fastavro into dicts
(``cache.reader.records``, over an eighth of the range, times 8), what a naive reader
would do.

    PYTHONPATH=. .venv/bin/python benchmarks/spectra.py [--records N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from starlette.testclient import TestClient

from speeddata import spectra
from speeddata.cache import reader
from speeddata.cache.store import CacheWriter
from speeddata.config import build
from speeddata.schemas import Registry
from speeddata.sender import Encoder
from speeddata.stripchart import fullrate
from speeddata.stripchart.app import create_app
from tests.helpers import SCHEMAS

T0 = 1_795_000_000 * 10**9
BLOCK = 1000


def write(cache: Path, records: int, registry: Registry) -> None:
    motor = registry["motor"]
    encoder = Encoder(motor)
    writer = CacheWriter(cache, 2**30, 10**6)
    phase = 2 * np.pi * 37 * np.arange(BLOCK) / 1000
    for first in range(0, records, BLOCK):
        bodies = [encoder.encode({
            "time": T0 + (first + i) * 10**6, "speed": 2.5 * float(np.sin(phase[i])),
            "torque": 2.5 * float(np.cos(phase[i])), "current": 0.0, "voltage": 48.0,
            "position": 0.0, "temperature": 20.0})[10:] for i in range(min(BLOCK, records - first))]
        writer.append(motor, bodies, T0 + first * 10**6)
    writer.close()


def timed(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=fullrate.MAX_SAMPLES // BLOCK * BLOCK)
    args = parser.parse_args()
    registry, _ = Registry.load_dir(SCHEMAS)
    with tempfile.TemporaryDirectory(prefix="speeddata-spectra-") as tmp:
        cache = Path(tmp) / "cache"
        made = time.perf_counter()
        write(cache, args.records, registry)
        print(f"cache: {args.records} records written in {time.perf_counter() - made:.1f} s")
        end = T0 + args.records * 10**6
        got = fullrate.read(cache, registry, "motor.speed", T0, end, 10 * 10**9)
        assert len(got.values) == args.records
        rows = [("read (fullrate)", timed(lambda: fullrate.read(
            cache, registry, "motor.speed", T0, end, 10 * 10**9)))]
        # the baseline over an eighth of the range (a minute of it otherwise), per sample
        eighth = T0 + args.records // 8 * 10**6
        baseline = 8 * timed(lambda: sum(1 for _ in reader.records(cache, "motor", T0, eighth)), 1)
        rows.append(("read (fastavro dicts, baseline)", baseline))
        rows.append(("welch 1024", timed(lambda: spectra.welch(got.values, 1000.0, 1024))))
        rows.append(("fft", timed(lambda: spectra.amplitude(got.values, 1000.0, "hann", 4096))))
        config = build(None, {("cache", "dir"): cache, ("channels", "dir"): SCHEMAS,
                              ("exports", "dir"): Path(tmp) / "exports",
                              ("web", "host"): "127.0.0.1", ("web", "port"): 0})
        client = TestClient(create_app(config), base_url="http://127.0.0.1")
        span = {"start": str(T0 // 10**6), "end": str(end // 10**6)}
        for name, path, params in (
                ("GET /api/spectrum welch", "/api/spectrum", {"signal": "motor.speed"}),
                ("GET /api/spectrum fft", "/api/spectrum", {"signal": "motor.speed",
                                                            "method": "fft"}),
                ("GET /api/xy 5000 points", "/api/xy", {"x": "motor.speed",
                                                        "y": "motor.torque"})):
            answer = client.get(path, params={**params, **span})
            assert answer.status_code == 200, answer.text
            rows.append((name, timed(lambda p=path, q=params: client.get(p, params={**q, **span}))))
    read_s = rows[0][1]
    print(f"{'step':34} {'median s':>9} {'Msamples/s':>11}")
    for name, seconds in rows:
        print(f"{name:34} {seconds:9.3f} {args.records / seconds / 1e6:11.2f}")
    print(f"fullrate read against fastavro dicts: {baseline / read_s:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
