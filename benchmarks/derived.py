#!/usr/bin/env python3
"""Derived signals benchmark: what they cost the stripchart's hub and the pivot.

Hub: the CPU (process time) the hub spends per second of a 1 kHz channel (two sines, a
counter word; 33 datagrams a batch, as a server's batch reads take them), with no derived
signals, with 10 elementwise ones, and with 10 mixed ones (moving mean and max, deriv,
integral, lowpass among them), in one run, each the median of 3.

Pivot: records/s of an HDF5 pivot of 60 s of that channel (60,000 records), with no
derived channel, with the 10 elementwise and with the 10 mixed signals computed too
(median of 3).

    PYTHONPATH=. .venv/bin/python benchmarks/derived.py [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from speeddata.cache.store import CacheWriter
from speeddata.derived import files, live
from speeddata.pivot import pivot
from speeddata.sender import Encoder
from speeddata.stripchart.hub import Hub
from tests.derived.common import PAIR, REGISTRY, T0, sines

ELEMENTWISE = {
    "d": "pair.a - pair.b", "p": "pair.a * pair.b", "s": "sqrt(abs(pair.a))",
    "w": "where(pair.a > pair.b, pair.a, pair.b)", "c": "clip(pair.a, -1, 1)",
    "l": "log10(2 + pair.b)", "t": "arctan2(pair.a, pair.b)", "k": "bit(pair.word, 3)",
    "r": "round(pair.a * 10) / 10", "n": "(pair.a > 0) and (pair.b > 0)",
}
MIXED = {
    "d": "pair.a - pair.b", "p": "pair.a * pair.b", "m": "mean(pair.a, 10)",
    "x": 'max(pair.a - pair.b, "10ms")', "v": "deriv(pair.a)", "i": "integral(pair.b)",
    "f": "lowpass(pair.a, 0.01)", "s": "sqrt(abs(pair.a))", "k": "bit(pair.word, 3)",
    "n": "min(pair.b, 20)",
}
BATCH = 33


def file_text(name: str, signals: dict[str, str]) -> str:
    lines = [f'name = "{name}"']
    for key, expression in signals.items():
        lines += [f"[signals.{key}]", f"expression = {expression!r}"]
    return "\n".join(lines) + "\n"


def derived_set(signals: dict[str, str]) -> live.DerivedSet:
    return live.DerivedSet([live.compile_channel(files.parse(file_text("calc", signals), "b"),
                                                 REGISTRY)])


def batches(seconds: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    columns = sines(seconds * 1000)
    columns["word"] %= 64  # one byte in Avro: datagrams of one length, the rows' fast path
    encoder = Encoder(REGISTRY["pair"])
    sent = [encoder.encode({k: columns[k][i].item() for k in ("time", "a", "b", "word", "flag")})
            for i in range(len(columns["time"]))]
    size = len(sent[0])
    assert all(len(d) == size for d in sent)
    out = []
    for lo in range(0, len(sent), BATCH):
        chunk = sent[lo: lo + BATCH]
        rows = np.frombuffer(b"".join(chunk), dtype=np.uint8).reshape(len(chunk), size)
        out.append((rows, np.full(len(chunk), size), int(columns["time"][lo + len(chunk) - 1])))
    return out


def hub_cpu(signals: dict[str, str] | None, feed: list, seconds: int) -> float:
    """CPU seconds per second of data (a fraction of one core)."""
    registry = derived_set(signals).view(REGISTRY) if signals else REGISTRY
    hub = Hub(registry)
    started = time.process_time()
    for rows, lengths, now_ns in feed:
        hub.ingest_rows(rows, lengths, now_ns / 1e9, now_ns=now_ns,
                        source=("full", "127.0.0.1:1"))
    return (time.process_time() - started) / seconds


def build_cache(folder: Path, seconds: int) -> None:
    writer = CacheWriter(folder, 2**30, 600)
    columns = sines(seconds * 1000)
    encoder = Encoder(REGISTRY["pair"])
    for lo in range(0, len(columns["time"]), 100):
        recv = int(columns["time"][lo + 99]) + 10**6
        writer.append(REGISTRY["pair"], [encoder.encode(
            {k: columns[k][i].item() for k in ("time", "a", "b", "word", "flag")})[10:]
            for i in range(lo, lo + 100)], recv)
    writer.close()


def pivot_rate(cache: Path, channels: Path | None, out: Path) -> float:
    started = time.perf_counter()
    result = pivot(cache, out, T0 - 10**9, T0 + 3600 * 10**9, registry=REGISTRY,
                   channels_dir=channels, force=True)
    return result.channels["pair"] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="seconds of 1 kHz data")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    feed = batches(args.seconds)
    runs: dict[str, list[float]] = {"none": [], "elementwise": [], "mixed": []}
    for _ in range(3):  # interleaved: the machine's drift falls on each alike
        runs["none"].append(hub_cpu(None, feed, args.seconds))
        runs["elementwise"].append(hub_cpu(ELEMENTWISE, feed, args.seconds))
        runs["mixed"].append(hub_cpu(MIXED, feed, args.seconds))
    cpu = {k: statistics.median(v) for k, v in runs.items()}
    with tempfile.TemporaryDirectory(prefix="wt-derived-bench-") as tmp:
        root = Path(tmp)
        build_cache(root / "cache", 60)
        channels = root / "schemas"
        channels.mkdir()
        (channels / "pair.avsc").write_text(json.dumps(PAIR))
        simple = root / "simple"
        simple.mkdir()
        (simple / "pair.avsc").write_text(json.dumps(PAIR))
        (channels / "calc.derived.toml").write_text(file_text("calc", MIXED))
        (simple / "calc.derived.toml").write_text(file_text("calc", ELEMENTWISE))
        rates: dict[str, list[float]] = {"without": [], "elementwise": [], "with": []}
        for _ in range(3):
            rates["without"].append(pivot_rate(root / "cache", None, root / "a.h5"))
            rates["elementwise"].append(pivot_rate(root / "cache", simple, root / "c.h5"))
            rates["with"].append(pivot_rate(root / "cache", channels, root / "b.h5"))
    rate = {k: statistics.median(v) for k, v in rates.items()}
    figures = {"hub_cpu_per_second": cpu,
               "hub_ratio": {k: cpu[k] / cpu["none"] for k in ("elementwise", "mixed")},
               "pivot_records_per_second": rate,
               "pivot_ratio": {k: rate[k] / rate["without"] for k in ("elementwise", "with")}}
    if args.json:
        print(json.dumps(figures, indent=1))
        return
    print(f"hub, 1 kHz channel ({args.seconds} s of data, {BATCH} datagrams a batch), CPU "
          "per second of data:")
    for k, v in cpu.items():
        ratio = f"  ({v / cpu['none']:.2f}x)" if k != "none" else ""
        print(f"  {k:<12} {v * 100:6.2f} % of a core  "
              f"({v / 1000 * 1e6:.1f} us a sample){ratio}")
    print("pivot of 60 s (60,000 records) to HDF5:")
    print(f"  without derived  {rate['without']:>10,.0f} records/s")
    print(f"  10 elementwise   {rate['elementwise']:>10,.0f} records/s  "
          f"({rate['elementwise'] / rate['without']:.2f}x)")
    print(f"  10 mixed         {rate['with']:>10,.0f} records/s  "
          f"({rate['with'] / rate['without']:.2f}x)")


if __name__ == "__main__":
    main()
