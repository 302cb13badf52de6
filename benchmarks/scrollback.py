#!/usr/bin/env python3
"""Scroll-back benchmark: how long the server takes to answer a paused chart's window
from the cache, for a 1 kHz channel (the demo's motor: 6 doubles per record).

It writes ``--hours`` of motor data at 1 kHz into a fresh cache, in blocks of 50
records (a relay's batches at that rate), files rolled every 10 minutes, as the relay
would; summarizes the closed files (what the server does in the background, timed as a
throughput); then times ``CacheView.columns`` for a 1-minute, 1-hour and whole-range
window of 1400 columns, cold (summaries just made, or made by the query for the growing
file) and warm. The baseline is decoding every record of the 1-hour window, which is
what drawing it without summaries costs.

    PYTHONPATH=. .venv/bin/python benchmarks/scrollback.py [--hours 24] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from speeddata.cache import index
from speeddata.cache.catalogue import Catalogue
from speeddata.cache.layout import index_path, summary_path
from speeddata.cache.reader import block_bodies
from speeddata.cache.store import CacheWriter
from speeddata.columns import ColumnDecoder
from speeddata.schemas import DEMO_DIR, Registry, load_file
from speeddata.stripchart.scrollback import CacheView

MOTOR = load_file(DEMO_DIR / "motor.avsc")
RATE = 1000
BLOCK = 50
COLUMNS = 1400


def bodies(times: np.ndarray) -> bytes:
    """Motor bodies for ``times``, vectorised: a 9-byte zigzag varint and six doubles."""
    n = len(times)
    out = np.zeros((n, 9 + 48), dtype=np.uint8)
    zigzag = times.astype(np.uint64) << np.uint64(1)
    for j in range(9):
        byte = (zigzag >> np.uint64(7 * j)) & np.uint64(0x7F)
        out[:, j] = byte | (np.uint64(0x80) if j < 8 else np.uint64(0))
    seconds = (times - times[0]) / 1e9
    values = np.stack([100 * np.sin(2 * np.pi * seconds), np.sign(np.sin(seconds)),
                       np.sin(2 * np.pi * 5 * seconds), np.cos(seconds), seconds % 10,
                       np.full(n, 61.0)], axis=1)
    out[:, 9:] = values.astype("<f8").view(np.uint8).reshape(n, 48)
    return out.tobytes()


def fill(folder: Path, hours: float) -> tuple[int, int]:
    writer = CacheWriter(folder, 2**40, 600)
    start = time.time_ns() - int(hours * 3600e9)
    total = int(hours * 3600 * RATE)
    step = 10**9 // RATE
    chunk = 100_000
    for first in range(0, total, chunk):
        times = start + np.arange(first, min(first + chunk, total), dtype=np.int64) * step
        data = bodies(times)
        size = len(data) // len(times)
        for b in range(0, len(times), BLOCK):
            writer.append_block(MOTOR, data[b * size : (b + BLOCK) * size],
                                min(BLOCK, len(times) - b), int(times[b]))
    writer.close()
    return start, start + total * step


def decode_all(folder: Path, start: int, end: int) -> int:
    """The baseline: every record of the range decoded (what a chart without summaries
    would need)."""
    catalogue = Catalogue(folder)
    decoder = ColumnDecoder(MOTOR)
    records = 0
    for cached, entries in catalogue.blocks("motor", start, end):
        data = [d for _, _, d in block_bodies([(cached, e) for e in entries])]
        count = sum(e.count for e in entries)
        records += len(decoder.decode_block(b"".join(data), count)["speed"])
    return records


def timed(func, runs: int = 5) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        out.append(time.perf_counter() - started)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    registry = Registry()
    registry.add(MOTOR)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        start, end = fill(folder, args.hours)
        fill_s = time.perf_counter() - started
        files = Catalogue(folder).files()
        cache_bytes = sum(f.size for f in files)
        view = CacheView(folder, registry)
        started = time.perf_counter()
        while view.catch_up(60.0):
            pass
        summarize_s = time.perf_counter() - started
        summary_bytes = sum(summary_path(f.path).stat().st_size for f in files
                            if summary_path(f.path).exists())
        records = sum(len(index.unpack(index_path(f.path).read_bytes())) for f in files) * BLOCK
        hour = min(3600e9, end - start)
        windows = {"1 min": (end - 60 * 10**9, end), "1 h": (end - int(hour), end),
                   f"{args.hours:g} h": (start, end)}
        result = {"hours": args.hours, "records": records, "cache_mib": cache_bytes / 2**20,
                  "summary_mib": summary_bytes / 2**20, "fill_s": fill_s,
                  "summarize_records_per_s": records / summarize_s, "windows": {}}
        for name, (a, b) in windows.items():
            fresh = CacheView(folder, registry)  # a server just started: nothing in memory
            cold = timed(lambda fresh=fresh, a=a, b=b: fresh.columns("motor", "speed", a, b,
                                                                      COLUMNS), 1)[0]
            warm = timed(lambda fresh=fresh, a=a, b=b: fresh.columns("motor", "speed", a, b,
                                                                      COLUMNS))
            level = fresh.columns("motor", "speed", a, b, COLUMNS).level
            result["windows"][name] = {"level": level, "cold_ms": cold * 1e3,
                                       "warm_median_ms": statistics.median(warm) * 1e3,
                                       "warm_max_ms": max(warm) * 1e3}
        a, b = windows["1 h"]
        baseline = timed(lambda: decode_all(folder, a - 10**9, b), 1)[0]
        result["baseline_decode_1h_ms"] = baseline * 1e3
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{args.hours:g} h of motor at 1 kHz: {records:,} records, cache "
          f"{result['cache_mib']:.0f} MiB, summaries {result['summary_mib']:.1f} MiB "
          f"({100 * summary_bytes / cache_bytes:.1f} %); written in {fill_s:.0f} s, summarized "
          f"at {result['summarize_records_per_s'] / 1e6:.1f} M records/s")
    print(f"{'window':<10}{'from':<10}{'cold':>10}{'warm median':>13}{'warm max':>10}")
    for name, w in result["windows"].items():
        print(f"{name:<10}{w['level']:<10}{w['cold_ms']:>8.0f}ms{w['warm_median_ms']:>11.0f}ms"
              f"{w['warm_max_ms']:>8.0f}ms")
    hour_ms = result["windows"]["1 h"]["warm_median_ms"]
    print(f"baseline, decoding every record of the hour: {baseline * 1e3:.0f} ms "
          f"({baseline * 1e3 / hour_ms:.0f}x the summaries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
