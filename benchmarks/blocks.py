#!/usr/bin/env python3
"""Processing blocks benchmark: throughput and CPU of a block over a 1 kHz channel of
10 signals (the README's figures).

1. The engine alone (no sockets): datagrams of the channel fed in batches of 50 (what a
   1 kHz channel gives in the 50 ms a batch waits), a function that doubles all 10
   signals, the output datagrams encoded: records/s. The baseline, in the same run: the
   obvious per-record way (fastavro decodes each datagram into a dict, the function runs
   on the dict, fastavro encodes the result), and the ratio.
2. The real thing: a relay, ``speeddata block run`` and a paced 1 kHz source on their own
   port and groups for ``--seconds``; the block's and the relay's CPU (% of one core,
   from /proc) over the same window, and the block's records in/out and latency.

    PYTHONPATH=. .venv/bin/python benchmarks/blocks.py [--seconds 20] [--records N]
        [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import fastavro

from speeddata import status
from speeddata.bench import services
from speeddata.blocks import block
from speeddata.blocks.core import BlockEngine
from speeddata.config import build, write_file
from speeddata.schemas import Registry, channel_from_schema, load_file
from speeddata.sender import Encoder
from tests.harness import procs

SIGNALS = 10
RATE = 1000
BATCH = 50
BLOCK_FILE = """
    from speeddata.blocks import block

    @block(inputs=["bench0"], output="bench0_x2",
           signals={f"d{i}": "V" for i in range(10)})
    def double(batch):
        return {f"d{i}": batch["bench0"][f"s{i}"] * 2 for i in range(10)}
"""


def engine_rate(folder: Path, records: int, runs: int = 3) -> dict[str, float]:
    """Records/s through the engine, and through the per-record baseline: the median of
    ``runs`` runs of each, interleaved (a shared machine's noise moves both alike)."""
    times = [_engine_once(folder, records) for _ in range(runs)]
    engine_s = statistics.median(t[0] for t in times)
    baseline_s = statistics.median(t[1] for t in times)
    return {"engine_records_per_s": records / engine_s,
            "baseline_records_per_s": records / baseline_s,
            "ratio": baseline_s / engine_s,
            "engine_cpu_percent_at_1khz": 100 * RATE * engine_s / records}


def _engine_once(folder: Path, records: int) -> tuple[float, float]:
    """Seconds for ``records`` through the engine, then through the baseline."""
    channel = load_file(folder / "bench0.avsc")
    encoder = Encoder(channel)
    datagrams = [encoder.encode({"time": 1_795_000_000_000_000_000 + i * 1_000_000,
                                 **{f"s{j}": float(i + j) for j in range(SIGNALS)}})
                 for i in range(records)]

    @block(inputs=["bench0"], output="bench0_x2", signals=[f"d{i}" for i in range(SIGNALS)],
           max_records=BATCH)
    def double(batch):
        return {f"d{i}": batch["bench0"][f"s{i}"] * 2 for i in range(SIGNALS)}

    spec = double.__block__
    output = channel_from_schema(spec.schema())
    engine = BlockEngine(spec, output, Registry([channel, output]), time.monotonic)
    began = time.perf_counter()
    out = 0
    for at in range(0, records, BATCH):
        engine.feed(datagrams[at:at + BATCH], 0.0)
        out += len(engine.flush(0.0, everything=True))
    engine_s = time.perf_counter() - began
    assert out == records, engine.statistics()

    out_encoder = Encoder(output)
    parsed = channel.parsed
    began = time.perf_counter()
    for datagram in datagrams:
        record = fastavro.schemaless_reader(io.BytesIO(datagram[10:]), parsed, None)
        result = {f"d{i}": record[f"s{i}"] * 2 for i in range(SIGNALS)}
        out_encoder.encode({"time": record["time"], **result})
    return engine_s, time.perf_counter() - began


def live(work: Path, folder: Path, seconds: float) -> dict[str, float]:
    """The block in its own process over a paced 1 kHz source, through a real relay."""
    settings = services.default_settings(work, folder)
    config = write_file(work / "bench.toml", settings)
    cache = build(config).cache.dir
    relay = services.start("relay", config, work)
    file = work / "double.py"
    file.write_text(textwrap.dedent(BLOCK_FILE))
    log = (work / "block.log").open("w")
    block_process = subprocess.Popen(
        [sys.executable, "-m", "speeddata", "block", "run", str(file), "--config",
         str(config), "-q"], stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        deadline = time.monotonic() + 30
        while not status.read_all(cache).get("block-bench0_x2", {}).get("running"):
            if block_process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / "block.log").read_text())
            time.sleep(0.05)
        source = multiprocessing.Process(target=procs.paced_source, args=(
            folder, ["bench0"], RATE, "127.0.0.1", settings["relay"]["port"], seconds + 2))
        source.start()
        time.sleep(1.0)  # warm up
        cpu0 = services.cpu_seconds(block_process.pid), relay.cpu_seconds()
        began = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - began
        cpu1 = services.cpu_seconds(block_process.pid), relay.cpu_seconds()
        source.join()
        time.sleep(1.5)  # the last batch out, the status written
        snap = status.read_all(cache)["block-bench0_x2"]
    finally:
        block_process.send_signal(signal.SIGINT)
        block_process.wait(20)
        relay.stop()
    return {"block_cpu_percent": 100 * (cpu1[0] - cpu0[0]) / elapsed,
            "relay_cpu_percent": 100 * (cpu1[1] - cpu0[1]) / elapsed,
            "records_in": snap["records_in"], "records_out": snap["records_out"],
            "kernel_drops": snap["kernel_drops"], "errors": snap["errors"],
            "latency_mean_ms": snap["latency_ms"]["mean"],
            "latency_max_ms": snap["latency_ms"]["max"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3, help="engine runs (the median)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wt-blocks-bench-") as tmp:
        work = Path(tmp)
        folder = work / "schemas"
        procs.bench_schemas(folder, 1, SIGNALS)
        figures = {"engine": engine_rate(folder, args.records, args.runs),
                   "live": live(work, folder, args.seconds)}
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    e, lv = figures["engine"], figures["live"]
    print(f"block over a {RATE} Hz channel of {SIGNALS} signals, doubling each")
    print(f"  engine alone: {e['engine_records_per_s']:,.0f} records/s in batches of "
          f"{BATCH} (per-record fastavro baseline {e['baseline_records_per_s']:,.0f}/s: "
          f"{e['ratio']:.1f}x); {e['engine_cpu_percent_at_1khz']:.2f} % of a core at 1 kHz")
    print(f"  live, {args.seconds:g} s through a relay: block CPU "
          f"{lv['block_cpu_percent']:.1f} % of a core, relay CPU "
          f"{lv['relay_cpu_percent']:.1f} %; {lv['records_in']} records in, "
          f"{lv['records_out']} out, kernel drops {lv['kernel_drops']}, errors "
          f"{lv['errors'] or 'none'}; latency (receive to sent) mean "
          f"{lv['latency_mean_ms']:.1f} ms, max {lv['latency_max_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
