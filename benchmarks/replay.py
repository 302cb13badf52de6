#!/usr/bin/env python3
"""Replay benchmark: one minute of 10 channels x 1 kHz (6 doubles each, blocks of 15 as a
relay writes them at that rate) replayed onto the multicast groups at 10x and as fast as
possible, with ``speeddata replay`` itself; prints its datagrams/s and, paced, how late
datagrams went out against their due time (p50, p99).

    PYTHONPATH=. .venv/bin/python benchmarks/replay.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from speeddata.bench import services
from speeddata.cache.store import CacheWriter
from speeddata.config import write_file
from speeddata.schemas import load_file
from speeddata.sender import Encoder
from tests.harness import procs


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        schemas = work / "schemas"
        names = procs.bench_schemas(schemas, 10, 6)
        settings = services.default_settings(work, schemas)
        config = write_file(work / "sd.toml", settings)
        writer = CacheWriter(work / "cache", 2**30, 600)
        start = time.time_ns() - 120 * 10**9
        for name in names:
            channel = load_file(schemas / f"{name}.avsc")
            encoder = Encoder(channel)
            signals = [s.name for s in channel.signals]
            for first in range(0, 60_000, 15):
                bodies = [encoder.encode({"time": start + i * 10**6,
                                          **{s: float(i) for s in signals}})[10:]
                          for i in range(first, first + 15)]
                writer.append(channel, bodies, start + first * 10**6)
        writer.close()
        print("1 min of 10 channels x 1 kHz (600 000 datagrams), onto the groups:")
        for flags in (["--speed", "10"], ["--max"]):
            done = subprocess.run(
                [sys.executable, "-m", "speeddata", "replay", "--start", "-3m", *flags,
                 "--config", str(config)], capture_output=True, text=True, check=True)
            print(f"  {' '.join(flags):<12} {done.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
