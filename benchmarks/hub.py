#!/usr/bin/env python3
"""The stripchart hub in process: CPU per second of data, this tree against others.

N channels of S doubles at R Hz (the server's load at 100 x 1 kHz by default), fed to
``Hub.ingest_rows`` (or ``Hub.ingest`` in a tree without it) in batches of a frame's
worth, with one page subscribed to every signal and sent a frame after each batch, as
the server does. No sockets, no clock: the datagrams and times are made up front, so
only the hub's own work is timed (process CPU time). Each tree runs in its own
process, interleaved run by run; the best of the runs is kept (the machine's noise only
ever adds), and whether every tree made the same frames, byte for byte.

    PYTHONPATH=. .venv/bin/python benchmarks/hub.py [--baseline TREE ...] [--runs 5]
        [--seconds 10] [--channels 10] [--signals 10] [--rate 1000] [--batch-ms 33.3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = 1_795_000_000_123_456_789  # a fixed start: every tree gets the same datagrams
HERE = Path(__file__).resolve()


def child(args: argparse.Namespace) -> dict:
    """One run in this process, with whatever ``speeddata`` the path gives."""
    import numpy as np

    from speeddata.schemas import Registry
    from speeddata.sender import Encoder
    from speeddata.stripchart.hub import Client, Hub

    with tempfile.TemporaryDirectory(prefix="speeddata-hub-bench-") as tmp:
        for c in range(args.channels):
            (Path(tmp) / f"bench{c}.avsc").write_text(json.dumps({
                "type": "record", "name": f"bench{c}", "fields": [
                    {"name": "time", "type": "long"},
                    *({"name": f"s{i}", "type": "double"} for i in range(args.signals))]}))
        registry, _ = Registry.load_dir(Path(tmp))
    names = [f"bench{c}" for c in range(args.channels)]
    encoders = [Encoder(registry[name]) for name in names]
    per_batch = max(1, round(args.rate * args.batch_ms / 1000))
    batches = []
    due = 0
    for _ in range(int(args.seconds * args.rate / per_batch)):
        datagrams = []
        for _ in range(per_batch):
            t = T0 + due * 10**9 // int(args.rate)
            for encoder in encoders:
                datagrams.append(encoder.encode({"time": t, **{
                    f"s{i}": float((due + i) % 100) for i in range(args.signals)}}))
            due += 1
        rows = np.zeros((len(datagrams), max(map(len, datagrams))), dtype=np.uint8)
        for i, d in enumerate(datagrams):
            rows[i, : len(d)] = np.frombuffer(d, dtype=np.uint8)
        lengths = np.array([len(d) for d in datagrams])
        batches.append((datagrams, rows, lengths, T0 + due * 10**9 // int(args.rate)))
    hub = Hub(registry)
    client = Client()
    hub.subscribe(client, {"signals": [f"{c}.s{i}" for c in names
                                       for i in range(args.signals)], "window": 10})
    by_rows = hasattr(hub, "ingest_rows")
    digest = hashlib.sha256()
    ingest = frame = 0.0
    for datagrams, rows, lengths, now_ns in batches:
        a = time.process_time()
        if by_rows:
            hub.ingest_rows(rows, lengths, now_ns / 1e9, now_ns=now_ns,
                            source=("full", "127.0.0.1:9"))
        else:
            hub.ingest(datagrams, now_ns / 1e9, now_ns=now_ns, source=("full", "127.0.0.1:9"))
        b = time.process_time()
        out = hub.frame(client, now_ns)
        frame += time.process_time() - b
        ingest += b - a
        digest.update(out or b"-")
    datagrams = len(batches) * per_batch * args.channels
    return {"cpu_pct": (ingest + frame) / args.seconds * 100,
            "ingest_pct": ingest / args.seconds * 100, "frame_pct": frame / args.seconds * 100,
            "us_per_datagram": (ingest + frame) * 1e6 / datagrams,
            "rows": by_rows, "frames": digest.hexdigest()}


def run_tree(tree: Path | None, argv: list[str]) -> dict:
    """One run of the child in ``tree`` (None: this one), in a process of its own."""
    root = tree or HERE.parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, str(HERE), "--child", *argv], cwd=root, env=env,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", nargs="*", default=[], help="other checkouts")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0, help="of data, per run")
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--signals", type=int, default=10, help="doubles per channel")
    parser.add_argument("--rate", type=float, default=1000.0, help="Hz per channel")
    parser.add_argument("--batch-ms", type=float, default=1000 / 30,
                        help="data per batch (a frame's worth at 30 fps)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    argv = [f"--seconds={args.seconds}", f"--channels={args.channels}",
            f"--signals={args.signals}", f"--rate={args.rate}", f"--batch-ms={args.batch_ms}"]
    trees: list[Path | None] = [None, *(Path(b).resolve() for b in args.baseline)]
    runs: dict[str, list[dict]] = {str(t or "this"): [] for t in trees}
    for _ in range(args.runs):
        for tree in trees:
            runs[str(tree or "this")].append(run_tree(tree, argv))
    best = {name: min(done, key=lambda r: r["cpu_pct"]) for name, done in runs.items()}
    if args.json:
        print(json.dumps({"best": best, "runs": runs}, indent=1))
        return 0
    this = best["this"]
    print(f"{'tree':>40} {'CPU %':>7} {'ingest %':>9} {'frame %':>8} {'us/datagram':>12} "
          f"{'this/tree':>9} {'same frames':>11}")
    for name, r in best.items():
        print(f"{name:>40} {r['cpu_pct']:>7.2f} {r['ingest_pct']:>9.2f} {r['frame_pct']:>8.2f} "
              f"{r['us_per_datagram']:>12.2f} {this['cpu_pct'] / r['cpu_pct']:>9.2f} "
              f"{'yes' if r['frames'] == this['frames'] else 'NO':>11}")
    print(f"best of {args.runs} interleaved runs; {args.channels} channels x {args.signals} "
          f"doubles at {args.rate:g} Hz, batches of {args.batch_ms:.1f} ms, one page of "
          f"every signal framed after each batch; CPU % of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
