#!/usr/bin/env python3
"""Pivot benchmark: one minute out of a 1 GB and a 10 GB cache, and the decoder that
feeds pivot and query side by side with fastavro and the pivot of another checkout.

Builds caches of a 10-signal channel (time + 10 doubles, 89-byte records, 10 kHz in
blocks of 1,000), then reads one minute from the middle and reports the median of 3
runs: seconds, records/s, MB/s of cache read, and the ratio to reading the same blocks
with fastavro into dicts. The pivot's time should not grow with the cache. Side by side
on that minute, uncompressed: fastavro, ``--baseline``'s pivot (a checkout of the code
before, run in its own process), this tree's decoder alone (the reading path of pivot
and query: blocks read, checked and decoded into numpy columns) and this tree's pivot.
``--hour`` also times one hour of a 1 kHz 10-signal channel (blocks of 100) into pandas
with ``speeddata.query``, and the peak RSS of reading it whole against reading it as
10 s batches, each in a process of its own.

    PYTHONPATH=. .venv/bin/python benchmarks/pivot.py [--sizes 1 10] [--baseline DIR]
        [--hour] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fastavro

from speeddata.cache.catalogue import Catalogue, plan
from speeddata.cache.reader import read_header
from speeddata.cache.store import CacheWriter
from speeddata.pivot import pivot
from speeddata.readout import chunks, select
from speeddata.schemas import load_file
from speeddata.sender import Encoder
from speeddata.times import format_time
from tests.harness.procs import bench_schemas

T0 = 1_795_000_000 * 10**9
BLOCK = 1000
BLOCKS_PER_SECOND = 10


def build(cache: Path, gigabytes: float, schemas: Path, block: int = BLOCK,
          per_second: int = BLOCKS_PER_SECOND, blocks: int | None = None) -> int:
    channel = load_file(schemas / "bench0.avsc")
    encoder = Encoder(channel)
    spacing = 10**9 // (block * per_second)
    bodies = [encoder.encode({"time": T0 + i * spacing, **{f"s{k}": float(i * k) for k in
                                                           range(10)}})[10:]
              for i in range(block)]
    per_block = sum(len(b) for b in bodies)
    blocks = blocks or int(gigabytes * 1e9 / per_block)
    writer = CacheWriter(cache, 64 * 2**20, 10**9)
    for b in range(blocks):
        writer.append(channel, bodies, T0 + b * (10**9 // per_second))
    writer.close()
    return blocks


def decode_read(cache: Path, start: int, end: int) -> tuple[float, int]:
    """The reading path of pivot and query alone: blocks read, checked, decoded."""
    began = time.perf_counter()
    n = 0
    with select(cache, start, end) as selection:
        for part in selection.channels:
            for chunk in chunks(selection.reader, part):
                n += len(chunk)
    return time.perf_counter() - began, n


BASELINE = """
import json, sys, time
from pathlib import Path
from speeddata.pivot import pivot
cache, out, start, end = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cpu = time.process_time()
result = pivot(cache, out, start, end, compression=None, force=True)
cpu = time.process_time() - cpu
out.unlink()
print(json.dumps([result.seconds, cpu]))
"""


def baseline_pivot(tree: Path, cache: Path, work: Path, start: int, end: int) -> list[float]:
    """An uncompressed pivot of the range by the checkout ``tree``, in its own process
    (its seconds and CPU seconds)
    started in that tree (so it imports that tree's speeddata, not this one's)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", BASELINE, str(cache), str(work / "base.h5"),
                           str(start), str(end)], cwd=tree, env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


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


def measure(gigabytes: float, keep: bool, work: Path, baseline: Path | None) -> dict:
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
    # interleaved, a round of each at a time, so a machine that gets busier or quieter
    # during the run shifts all of them alike
    # (CPU seconds too: MB per CPU second is the rate per core even on a shared machine)
    times: dict[str, list[float]] = {"gzip": [], "none": [], "fastavro": [], "decoder": [],
                                     "baseline": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    for run in range(3):
        for compression in ("gzip", "none"):
            out = work / f"minute-{run}.h5"
            began = time.process_time()
            result = pivot(cache, out, start, end, compression=None if compression == "none"
                           else compression, force=True)
            cpu[compression].append(time.process_time() - began)
            times[compression].append(result.seconds)
            out.unlink()
        for name, read in (("decoder", decode_read), ("fastavro", fastavro_read)):
            began = time.process_time()
            times[name].append(read(cache, start, end)[0])
            cpu[name].append(time.process_time() - began)
        if baseline is not None:
            wall, used = baseline_pivot(baseline, cache, work, start, end)
            times["baseline"].append(wall)
            cpu["baseline"].append(used)
    row["cpu_s"] = {k: round(statistics.median(v), 3) for k, v in cpu.items() if v}
    for compression in ("gzip", "none"):
        found = times[compression]
        row[f"pivot_{compression}_s"] = {"median": round(statistics.median(found), 3),
                                         "min": round(min(found), 3), "max": round(max(found), 3)}
    row["fastavro_dicts_s"] = round(statistics.median(times["fastavro"]), 3)
    decoder_s = statistics.median(times["decoder"])
    row["decoder_s"] = round(decoder_s, 3)
    row["decoder_mb_per_s"] = round(selected.bytes / 1e6 / decoder_s, 1)
    row["decoder_records_per_s"] = round(selected.records / decoder_s)
    row["decoder_vs_fastavro"] = round(row["fastavro_dicts_s"] / decoder_s, 2)
    if baseline is not None:
        base_s = statistics.median(times["baseline"])
        row["baseline_pivot_none_s"] = round(base_s, 3)
        row["baseline_mb_per_s"] = round(selected.bytes / 1e6 / base_s, 1)
        row["baseline_records_per_s"] = round(selected.records / base_s)
        row["baseline_vs_fastavro"] = round(row["fastavro_dicts_s"] / base_s, 2)
        row["decoder_vs_baseline_pivot"] = round(base_s / decoder_s, 2)
    gzip_s = row["pivot_gzip_s"]["median"]
    none_s = row["pivot_none_s"]["median"]
    row["records_per_s_gzip"] = round(selected.records / gzip_s)
    row["records_per_s_none"] = round(selected.records / none_s)
    row["mb_per_s_none"] = round(selected.bytes / 1e6 / none_s, 1)
    row["speedup_vs_fastavro_gzip"] = round(row["fastavro_dicts_s"] / gzip_s, 2)
    row["speedup_vs_fastavro_none"] = round(row["fastavro_dicts_s"] / none_s, 2)
    if baseline is not None:
        row["pivot_vs_baseline_pivot"] = round(row["baseline_pivot_none_s"] / none_s, 2)
    if not keep:
        shutil.rmtree(cache)
    return row


HOUR_BLOCK = 100  # 1 kHz in blocks of 100: ten batches a second


def hour_child(mode: str, cache: Path) -> dict:
    """In a process of its own: one hour into pandas, read whole, or as 10 s batches;
    the seconds and this process's peak RSS."""
    import speeddata

    began, cpu = time.perf_counter(), time.process_time()
    found = speeddata.query(start=format_time(T0), end=format_time(T0 + 3600 * 10**9 - 1),
                            cache=cache)
    rows = 0
    if mode == "pandas":
        frame = found.to_pandas()["bench0"]
        rows = len(frame)
    elif mode == "whole":
        rows = len(found.read()["bench0"])
    elif mode == "batches":
        for batch in found.batches(window="10s"):
            rows += batch.batch.num_rows
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    # VmHWM, not ru_maxrss: that one keeps the parent's peak across fork and exec
    status = Path("/proc/self/status").read_text()
    peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")
                    ).split()[1]) / 1024
    return {"mode": mode, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
            "rows": rows,
            "peak_rss_mb": round(peak, 1)}


def measure_hour(work: Path, keep: bool) -> dict:
    cache = work / "cache-hour"
    schemas = work / "schemas"
    bench_schemas(schemas, 1, 10)
    if not (cache / ".complete").exists():
        shutil.rmtree(cache, ignore_errors=True)
        blocks = build(cache, 0, schemas, HOUR_BLOCK, 10, blocks=3600 * 10)
        (cache / ".complete").write_text(str(blocks))
    size = sum(p.stat().st_size for p in cache.rglob("*.avro"))
    results = {}
    for mode in ("idle", "pandas", "pandas", "pandas", "whole", "batches"):
        done = subprocess.run([sys.executable, __file__, "--hour-child", mode, str(cache)],
                              check=True, capture_output=True, text=True)
        found = json.loads(done.stdout)
        results.setdefault(mode, []).append(found)
    if not keep:
        shutil.rmtree(cache)
    pandas_s = statistics.median(r["seconds"] for r in results["pandas"])
    return {"records": results["whole"][0]["rows"], "cache_mb": round(size / 1e6, 1),
            "pandas_s": round(pandas_s, 3),
            "pandas_cpu_s": statistics.median(r["cpu_seconds"] for r in results["pandas"]),
            "pandas_records_per_s": round(results["whole"][0]["rows"] / pandas_s),
            "rss_idle_mb": results["idle"][0]["peak_rss_mb"],
            "rss_pandas_mb": max(r["peak_rss_mb"] for r in results["pandas"]),
            "rss_whole_mb": results["whole"][0]["peak_rss_mb"],
            "rss_batches_mb": results["batches"][0]["peak_rss_mb"],
            "batches_s": results["batches"][0]["seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10], help="cache GB")
    parser.add_argument("--dir", type=Path, help="where to build the caches (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the caches for next time")
    parser.add_argument("--baseline", type=Path,
                        help="a checkout of the code before (git worktree add DIR REV): its "
                             "pivot measured on the same minute, in its own process")
    parser.add_argument("--hour", action="store_true",
                        help="also one hour of a 1 kHz 10-signal channel into pandas")
    parser.add_argument("--hour-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.hour_child:
        print(json.dumps(hour_child(args.hour_child[0], Path(args.hour_child[1]))))
        return 0
    work = args.dir or Path(tempfile.mkdtemp(prefix="speeddata-pivot-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [measure(size, args.keep, work, args.baseline) for size in args.sizes]
    hour = measure_hour(work, args.keep) if args.hour else None
    if args.json:
        print(json.dumps({"minute": rows, "hour": hour}, indent=1))
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
    print("median of 3 interleaved rounds; 'x fastavro' is gzip/none pivot speed over "
          "reading the same blocks into dicts with fastavro")
    print()
    print("one minute, uncompressed, side by side (median; MB/s of cache read):")
    print(f"{'cache':>7} {'reader':<26} {'s':>7} {'MB/s':>7} {'M rec/s':>8} {'x fastavro':>11}"
          f" {'CPU s':>7} {'MB/CPU-s':>9} {'M rec/CPU-s':>12}")
    for r in rows:
        lines = [("fastavro into dicts", r["fastavro_dicts_s"], "fastavro")]
        if "baseline_pivot_none_s" in r:
            lines.append(("pivot of --baseline", r["baseline_pivot_none_s"], "baseline"))
        lines += [("decoder (pivot and query)", r["decoder_s"], "decoder"),
                  ("pivot, this tree", r["pivot_none_s"]["median"], "none")]
        for name, seconds, key in lines:
            used = r["cpu_s"][key]
            print(f"{r['cache_gb']:>5g}GB {name:<26} {seconds:>7.3f} "
                  f"{r['mb_read'] / seconds:>7.1f} {r['records'] / seconds / 1e6:>8.2f} "
                  f"{r['fastavro_dicts_s'] / seconds:>11.2f} {used:>7.3f} "
                  f"{r['mb_read'] / used:>9.1f} {r['records'] / used / 1e6:>12.2f}")
        if "baseline_pivot_none_s" in r:
            print(f"  decoder / baseline pivot: {r['decoder_vs_baseline_pivot']}x; "
                  f"pivot / baseline pivot: {r['pivot_vs_baseline_pivot']}x")
    if hour:
        print()
        print(f"one hour of a 1 kHz 10-signal channel ({hour['records']} records, "
              f"{hour['cache_mb']} MB of cache) into pandas with speeddata.query: "
              f"{hour['pandas_s']} s ({hour['pandas_records_per_s'] / 1e6:.2f} M records/s, "
              f"median of 3; {hour['pandas_cpu_s']} CPU s, pandas' import included)")
        print(f"peak RSS: imports and select {hour['rss_idle_mb']} MB, to_pandas "
              f"{hour['rss_pandas_mb']} MB, read() whole {hour['rss_whole_mb']} MB, "
              f"batches('10s') {hour['rss_batches_mb']} MB ({hour['batches_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
