#!/usr/bin/env python3
"""A Raspberry Pi-class load: 12 channels x 1 kHz (12 k datagrams/s) through relay and
stripchart server (full-rate source), the relay and the server pinned to one core and the
source to the other.

Reports, per service, CPU % of one core, microseconds of CPU per datagram and memory;
and loss (sent against what the relay counted and cached). The same run at a tenth of
the load is the baseline: the ratio shows what the load itself costs.

    PYTHONPATH=. .venv/bin/python benchmarks/pi_load.py [--channels 12] [--rate 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

from speeddata import status
from speeddata.bench import services
from speeddata.config import write_file
from tests.harness import procs


def measure(channels: int, rate: float, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        schemas = work / "schemas"
        names = procs.bench_schemas(schemas, channels, 6)
        settings = services.default_settings(work, schemas)
        config = write_file(work / "sd.toml", settings)
        relay = services.start("relay", config, work, cpu=0)
        serve = services.start("serve", config, work, cpu=0)
        try:
            source = multiprocessing.Process(target=procs.paced_source, args=(
                schemas, names, rate, "127.0.0.1", settings["relay"]["port"], seconds + 2))
            source.start()
            time.sleep(1.0)  # past start-up
            before = {s.name: s.cpu_seconds() for s in (relay, serve)}
            counted = _datagrams(work)
            started = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - started
            used = {s.name: s.cpu_seconds() - before[s.name] for s in (relay, serve)}
            arrived = _datagrams(work) - counted
            source.join()
            time.sleep(0.5)
            snapshot = status.read_all(work / "cache")["relay"]
            result = {"datagrams_per_s": arrived / elapsed,
                      "kernel_drops": snapshot["kernel_drops"],
                      "rejected": sum(snapshot["rejected"].values())}
            for service in (relay, serve):
                result[service.name] = {
                    "cpu_percent": 100 * used[service.name] / elapsed,
                    "us_per_datagram": 1e6 * used[service.name] / max(arrived, 1),
                    "rss_mib": service.rss_bytes() / 2**20}
            return result
        finally:
            serve.stop()
            relay.stop()


def _datagrams(work: Path) -> int:
    return status.read_all(work / "cache").get("relay", {}).get("datagrams", 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=12)
    parser.add_argument("--rate", type=float, default=1000.0, help="per channel (Hz)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = {"baseline (1/10 load)": measure(args.channels, args.rate / 10, args.seconds),
            "load": measure(args.channels, args.rate, args.seconds)}
    if args.json:
        print(json.dumps(runs, indent=1))
        return 0
    print(f"{args.channels} channels x {args.rate:g} Hz, {args.seconds:g} s; relay and server "
          "on core 0, source on core 1")
    print(f"{'run':<22}{'datagrams/s':>12}{'drops':>7}{'relay CPU':>11}{'µs/dgram':>10}"
          f"{'RSS':>8}{'server CPU':>12}{'µs/dgram':>10}{'RSS':>8}")
    for name, r in runs.items():
        print(f"{name:<22}{r['datagrams_per_s']:>12.0f}{r['kernel_drops']:>7}"
              f"{r['relay']['cpu_percent']:>10.1f}%{r['relay']['us_per_datagram']:>10.1f}"
              f"{r['relay']['rss_mib']:>6.0f}MB{r['serve']['cpu_percent']:>11.1f}%"
              f"{r['serve']['us_per_datagram']:>10.1f}{r['serve']['rss_mib']:>6.0f}MB")
    base, load = runs["baseline (1/10 load)"], runs["load"]
    for service in ("relay", "serve"):
        ratio = load[service]["cpu_percent"] / max(base[service]["cpu_percent"], 1e-9)
        print(f"{service}: {ratio:.1f}x the CPU for 10x the datagrams")
    return 0


if __name__ == "__main__":
    sys.exit(main())
