#!/usr/bin/env python3
"""Dask benchmark: ``pivot --archive`` of a range of ``--files`` archived files on a
``LocalCluster`` of ``--workers`` worker processes against the one-machine path (the
range fetched into a temporary cache, then pivoted), in the same run, rounds
interleaved after a warm-up round; also ``speeddata.query(...).read()`` both ways.
Records/s of each and their ratio, medians; the load average before and after (this
machine's 2 cores are shared with other work, so the figure is what they gave then, not
what 2 free cores give).

    PYTHONPATH=. .venv/bin/python benchmarks/dask_pivot.py [--files 12] [--mib 16]
        [--workers 2] [--rounds 3] [--compression gzip|lzf|none]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from speeddata import archive, distributed
from speeddata.archive import Archiver
from speeddata.cache.store import CacheWriter
from speeddata.config import build, write_file
from speeddata.pivot import pivot
from speeddata.queries import query
from speeddata.schemas import DEMO_DIR, load_channels, load_file
from speeddata.sender import Encoder
from speeddata.times import format_time
from tests.harness.store import Store

S = 10**9
T0 = 1_795_000_000 * S
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}


def archived(work: Path, store: Store, files: int, mib: int) -> tuple[Path, int, int]:
    """``files`` motor files of about ``mib`` MiB (blocks of 1000 records, varied values)
    archived; the config of a viewer, the records and the bytes of the range."""
    motor = load_file(DEMO_DIR / "motor.avsc")
    encoder = Encoder(motor)
    cache = work / "rig" / "cache"
    writer = CacheWriter(cache, 2**40, 1)
    per_block = 1000
    names = [s.name for s in motor.signals if s.name != motor.time_field]
    size = len(encoder.encode({"time": T0, **dict.fromkeys(names, 1.5)}))
    blocks = mib * 2**20 // (size * per_block)
    records = 0
    for f in range(files):
        t = T0 + f * S
        for b in range(blocks):
            at = t + b * (S // blocks)
            bodies = [encoder.encode({"time": at + i, **{n: float(b * per_block + i + k)
                                                          for k, n in enumerate(names)}})[10:]
                      for i in range(per_block)]
            writer.append(motor, bodies, at)
            records += per_block
        writer.roll_expired(t + S)
    writer.close()
    settings = {"cache": {"dir": str(cache)}, "channels": {"dir": str(DEMO_DIR)},
                "archive": {"endpoint": store.endpoint, "host": "rig", "prefix": "b"}}
    archiver = Archiver(build(write_file(work / "rig.toml", settings)), store.client())
    while archiver.round():
        pass
    nbytes = sum(p.stat().st_size for p in (cache / "motor").glob("*.avro"))
    viewer = {"cache": {"dir": str(work / "viewer" / "cache")},
              "channels": {"dir": str(DEMO_DIR)},
              "archive": {"endpoint": store.endpoint, "prefix": "b"}}
    return write_file(work / "viewer.toml", viewer), records, nbytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compression", default="gzip", choices=["gzip", "lzf", "none"])
    args = parser.parse_args(argv)
    from distributed import LocalCluster

    compression = None if args.compression == "none" else args.compression
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sd-dask-bench-") as tmp:
        work = Path(tmp)
        store = Store(work / "store").start()  # before the keys: weed takes them as its own
        os.environ.update(CREDENTIALS)  # the client's; the workers get theirs below
        try:
            config, records, nbytes = archived(work, store, args.files, args.mib)
            found = build(config)
            registry = load_channels(DEMO_DIR, logging.getLogger("bench"))
            start, end = T0, T0 + args.files * S
            print(f"{args.files} archived files, {records} records, {nbytes / 2**20:.1f} MiB "
                  f"of cache; {args.workers} Dask worker processes; compression "
                  f"{args.compression}; load average before {load_before[0]:.2f}",
                  flush=True)
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              scheduler_port=0, dashboard_address=None,
                              scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                              env=CREDENTIALS) as cluster:
                address = cluster.scheduler_address
                times: dict[str, list[float]] = {k: [] for k in (
                    "pivot local", "pivot dask", "query local", "query dask")}
                # the part after the fetch (local) or the workers' tasks (Dask): local,
                # decoding and writing; on Dask, the columns gathered, merged and written
                later: dict[str, list[float]] = {k: [] for k in times}
                for r in range(args.rounds + 1):  # round 0 warms up (imports on the workers)
                    out = work / f"out{r}"

                    def local_pivot(out: Path = out) -> float:
                        with tempfile.TemporaryDirectory(dir=work) as fetched:
                            archive.fetch_range(found, start, end, Path(fetched))
                            return pivot(Path(fetched), out / "local.h5", start, end,
                                         registry=registry, compression=compression).seconds

                    def dask_pivot(out: Path = out) -> float:
                        return distributed.pivot(address, found, out / "dask.h5", start, end,
                                                 registry=registry,
                                                 compression=compression).seconds

                    def reading(**how: object) -> float:
                        with query(start=format_time(start), end=format_time(end), config=found,
                                   archive=True, **how) as q:
                            began = time.perf_counter()
                            assert len(q.read()["motor"]) == records
                            return time.perf_counter() - began

                    for name, run in (("pivot local", local_pivot), ("pivot dask", dask_pivot),
                                      ("query local", reading),
                                      ("query dask", lambda: reading(dask=address))):
                        began = time.perf_counter()
                        later[name].append(run())
                        times[name].append(time.perf_counter() - began)
                    print(f"round {r or 'warm-up (not counted)'}: " + ", ".join(
                        f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
                    if r == 0:
                        times, later = {k: [] for k in times}, {k: [] for k in times}
        finally:
            store.stop()
    medians = {k: statistics.median(v) for k, v in times.items()}
    print("| what | s (median) | M records/s | MB/s of cache | Dask / local | before: fetch "
          "(local) or tasks (Dask), s | after: decode + write (local) or gather + merge + "
          "write (Dask), s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for k, v in medians.items():
        base = medians[k.replace("dask", "local")]
        after = statistics.median(later[k])
        print(f"| {k} | {v:.2f} | {records / v / 1e6:.2f} | {nbytes / v / 1e6:.0f} | "
              f"{base / v:.2f}x | {v - after:.2f} | {after:.2f} |")
    load_after = os.getloadavg()
    print(f"load average after {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min), "
          f"{os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
