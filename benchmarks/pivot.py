#!/usr/bin/env python3
"""Pivot benchmark: one minute out of a 1 GB and a 10 GB cache.

Builds caches of a 10-signal channel (time + 10 doubles, 89-byte records, 10 kHz in
blocks of 1,000), then pivots one minute from the middle and reports the median of 3
runs: seconds, records/s, MB/s of cache read, and the ratio to reading the same blocks
with fastavro into dicts. The pivot's time should not grow with the cache.

    PYTHONPATH=. .venv/bin/python benchmarks/pivot.py [--sizes 1 10] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import fastavro

from speeddata.cache.catalogue import Catalogue, plan
from speeddata.cache.reader import read_header
from speeddata.cache.store import CacheWriter
from speeddata.pivot import pivot
from speeddata.schemas import load_file
from speeddata.sender import Encoder
from tests.harness.procs import bench_schemas

T0 = 1_795_000_000 * 10**9
BLOCK = 1000
BLOCKS_PER_SECOND = 10


def build(cache: Path, gigabytes: float, schemas: Path) -> int:
    channel = load_file(schemas / "bench0.avsc")
    encoder = Encoder(channel)
    bodies = [encoder.encode({"time": T0 + i * 100_000, **{f"s{k}": float(i * k) for k in
                                                              range(10)}})[10:]
              for i in range(BLOCK)]
    per_block = sum(len(b) for b in bodies)
    blocks = int(gigabytes * 1e9 / per_block)
    writer = CacheWriter(cache, 64 * 2**20, 10**9)
    for b in range(blocks):
        writer.append(channel, bodies, T0 + b * (10**9 // BLOCKS_PER_SECOND))
    writer.close()
    return blocks


def container_of(path: Path, entries: list) -> bytes:
    """A standalone Avro container of a cache file's header and just ``entries``, for
    fastavro's reader (the baseline: no checks, no columns)."""
    head, _ = read_header(path)
    parts = [head]
    with path.open("rb") as f:
        for entry in entries:
            f.seek(entry.offset)
            parts.append(f.read(entry.length))
    return b"".join(parts)


def fastavro_read(cache: Path, start: int, end: int) -> tuple[float, int]:
    began = time.perf_counter()
    n = 0
    for cached, entries in Catalogue(cache).blocks("bench0", start, end):
        n += len(list(fastavro.reader(io.BytesIO(container_of(cached.path, entries)))))
    return time.perf_counter() - began, n


def measure(gigabytes: float, keep: bool, work: Path) -> dict:
    cache = work / f"cache-{gigabytes:g}GB"
    schemas = work / "schemas"
    bench_schemas(schemas, 1, 10)
    if not (cache / ".complete").exists():
        shutil.rmtree(cache, ignore_errors=True)
        began = time.perf_counter()
        blocks = build(cache, gigabytes, schemas)
        (cache / ".complete").write_text(str(blocks))
        print(f"built a {gigabytes:g} GB cache ({blocks} blocks) in "
              f"{time.perf_counter() - began:.0f} s", file=sys.stderr)
    blocks = int((cache / ".complete").read_text())
    middle = T0 + blocks // 2 * (10**9 // BLOCKS_PER_SECOND)
    start, end = middle, middle + 60 * 10**9 - 1
    selected = plan(Catalogue(cache), start, end)
    row: dict = {"cache_gb": gigabytes, "cache_files": len(Catalogue(cache).files()),
                 "records": selected.records, "mb_read": round(selected.bytes / 1e6, 1)}
    for compression in ("gzip", "none"):
        times = []
        for run in range(3):
            out = work / f"minute-{run}.h5"
            result = pivot(cache, out, start, end, compression=None if compression == "none"
                           else compression, force=True)
            times.append(result.seconds)
            out.unlink()
        row[f"pivot_{compression}_s"] = {"median": round(statistics.median(times), 3),
                                         "min": round(min(times), 3), "max": round(max(times), 3)}
    baseline = [fastavro_read(cache, start, end)[0] for _ in range(3)]
    row["fastavro_dicts_s"] = round(statistics.median(baseline), 3)
    gzip_s = row["pivot_gzip_s"]["median"]
    none_s = row["pivot_none_s"]["median"]
    row["records_per_s_gzip"] = round(selected.records / gzip_s)
    row["records_per_s_none"] = round(selected.records / none_s)
    row["mb_per_s_none"] = round(selected.bytes / 1e6 / none_s, 1)
    row["speedup_vs_fastavro_gzip"] = round(row["fastavro_dicts_s"] / gzip_s, 2)
    row["speedup_vs_fastavro_none"] = round(row["fastavro_dicts_s"] / none_s, 2)
    if not keep:
        shutil.rmtree(cache)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10], help="cache GB")
    parser.add_argument("--dir", type=Path, help="where to build the caches (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the caches for next time")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="speeddata-pivot-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [measure(size, args.keep, work) for size in args.sizes]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'cache':>7} {'files':>6} {'records':>8} {'MB':>6} {'pivot gzip s':>13} "
          f"{'pivot none s':>13} {'fastavro s':>10} {'rec/s none':>11} {'MB/s':>6} "
          f"{'x fastavro':>11}")
    for r in rows:
        print(f"{r['cache_gb']:>5g}GB {r['cache_files']:>6} {r['records']:>8} {r['mb_read']:>6} "
              f"{r['pivot_gzip_s']['median']:>13} {r['pivot_none_s']['median']:>13} "
              f"{r['fastavro_dicts_s']:>10} {r['records_per_s_none']:>11} "
              f"{r['mb_per_s_none']:>6} {r['speedup_vs_fastavro_gzip']:>5}/"
              f"{r['speedup_vs_fastavro_none']:<5}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"one minute out of {last['cache_gb']:g} GB vs {first['cache_gb']:g} GB: "
              f"{last['pivot_none_s']['median'] / first['pivot_none_s']['median']:.2f}x the time")
    print("median of 3; 'x fastavro' is gzip/none pivot speed over reading the same blocks "
          "into dicts with fastavro")
    return 0


if __name__ == "__main__":
    sys.exit(main())
