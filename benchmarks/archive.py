#!/usr/bin/env python3
"""Archive benchmark: upload throughput to a local SeaweedFS, and the relay's held rate
with the archiver running beside it.

1. Upload: ``--files`` closed cache files of ``--mib`` MiB each, archived by the real
   ``Archiver`` (MD5, PUT, HEAD check, ledger) with one stream and with ``[archive]
   streams`` (4), against plain boto3 ``put_object`` of the same files one by one in the
   same run (the baseline: what the store and the client take).
2. Relay: the highest rate the relay holds without loss (``speeddata bench relay``'s
   search, 90-byte records, files rolled every second so the archiver always uploads),
   with and without ``speeddata archive`` running, interleaved. On this 2-core machine
   the archiver shares the cores with the relay and the load generator.

    PYTHONPATH=. .venv/bin/python benchmarks/archive.py [--files 8] [--mib 32] [--seconds 3]
        [--runs 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from speeddata.archive import LEDGER, Archiver
from speeddata.bench import relay as relay_bench
from speeddata.cache.store import CacheWriter
from speeddata.config import build, write_file
from speeddata.schemas import DEMO_DIR, load_file
from speeddata.sender import Encoder
from tests.harness.store import Store


def cache_files(cache: Path, files: int, mib: int) -> int:
    """``files`` closed files of about ``mib`` MiB (and the newest, left alone)."""
    motor = load_file(DEMO_DIR / "motor.avsc")
    body = Encoder(motor).encode({"time": 0, "speed": 1.0, "torque": 2.0, "current": 3.0,
                                  "voltage": 4.0, "position": 5.0, "temperature": 6.0})[10:]
    writer = CacheWriter(cache, 2**40, 1)
    per_block = 4096
    blocks = mib * 2**20 // (len(body) * per_block)
    for f in range(files + 1):
        t = (1_795_000_000 + f) * 10**9
        for b in range(blocks if f < files else 1):
            writer.append(motor, [body] * per_block, t + b)
        writer.roll_expired(t + 10**9)
    writer.close()
    return sum(p.stat().st_size for p in sorted((cache / "motor").glob("*.avro"))[:-1])


def upload(files: int, mib: int, work: Path, store: Store) -> dict[str, float]:
    cache = work / "cache"
    size = cache_files(cache, files, mib)
    s3 = store.client()
    for bucket in ("bench", "plain"):  # a new bucket's first volumes take seconds: not timed
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="warm-up", Body=bytes(2**20))
    rates = {}
    for streams in (1, 4):
        settings = {"cache": {"dir": str(cache)}, "archive": {
            "endpoint": store.endpoint, "host": f"s{streams}", "bucket": "bench",
            "streams": streams}}
        cfg = build(write_file(work / "a.toml", settings))
        (cache / LEDGER).unlink(missing_ok=True)  # everything anew, under another host
        started = time.perf_counter()
        Archiver(cfg, s3).round()
        rates[streams] = size / (time.perf_counter() - started) / 1e6
    started = time.perf_counter()
    for path in sorted((cache / "motor").glob("*.avro"))[:-1]:
        with path.open("rb") as body:
            s3.put_object(Bucket="plain", Key=path.name, Body=body)
    plain = time.perf_counter() - started
    return {"bytes": size, "one_stream_mb_s": rates[1], "four_streams_mb_s": rates[4],
            "plain_mb_s": size / plain / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0, help="per relay trial")
    parser.add_argument("--runs", type=int, default=2, help="relay searches per setting")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = Store(work / "store").start()
        try:
            up = upload(args.files, args.mib, work / "upload", store)
            print(f"upload of {up['bytes'] / 2**20:.0f} MiB in {args.files} files: archiver "
                  f"(MD5, PUT, HEAD check, ledger) one stream {up['one_stream_mb_s']:.0f} "
                  f"MB/s, four streams {up['four_streams_mb_s']:.0f} MB/s; plain boto3 "
                  f"put_object one by one {up['plain_mb_s']:.0f} MB/s; ratios to plain "
                  f"{up['one_stream_mb_s'] / up['plain_mb_s']:.2f} and "
                  f"{up['four_streams_mb_s'] / up['plain_mb_s']:.2f}")
            held: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(args.runs):
                for mode in ("off", "on"):  # interleaved: the machine's drift hits both
                    best, _ = relay_bench.highest_rate(
                        90, True, args.seconds, 50_000.0, log=lambda m: print(m, file=sys.stderr),
                        archive=store.endpoint if mode == "on" else None, rotate_seconds=1.0)
                    held[mode].append(best.rate if best else 0.0)
            off, on = statistics.median(held["off"]), statistics.median(held["on"])
            print(f"relay held rate, 90 B records, files rolled every second: archiving off "
                  f"{off / 1000:.0f} k/s {[round(r / 1000) for r in held['off']]}, on "
                  f"{on / 1000:.0f} k/s {[round(r / 1000) for r in held['on']]}; on/off "
                  f"{on / off:.3f}")
        finally:
            store.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
