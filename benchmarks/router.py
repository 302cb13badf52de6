#!/usr/bin/env python3
"""Router benchmark: the relay's per-batch decision cost, without sockets or disk.

Times ``BatchRouter.route`` on batches as the relay receives them: one sender's batch
(one channel) of 1, 41 and 256 datagrams, and a batch mixing 10 channels from 10
senders; and, as the baselines in the same run, the per-datagram ``Router.route`` on the
same datagrams, and the batch without its senders' addresses (what counting arrivals per
sender for the loss figures costs).

    PYTHONPATH=. .venv/bin/python benchmarks/router.py [--seconds 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from speeddata.relay.core import BatchRouter, Received, Router
from speeddata.schemas import Registry, load_file
from speeddata.sender import Encoder
from tests.harness.procs import bench_schemas

SLOT = 16385  # the relay's default slot: max_datagram + 1


def batch(datagrams: list[bytes], senders: int | None) -> Received:
    """The batch as the socket layer leaves it, from ``senders`` senders (None: their
    addresses not read)."""
    buffer = np.zeros(len(datagrams) * SLOT, dtype=np.uint8)
    for i, d in enumerate(datagrams):
        buffer[i * SLOT : i * SLOT + len(d)] = np.frombuffer(d, dtype=np.uint8)
    lengths = np.array([len(d) for d in datagrams], dtype=np.int64)
    if senders is None:
        return Received(buffer, SLOT, lengths)
    which = np.arange(len(datagrams)) % senders
    return Received(buffer, SLOT, lengths, (0x0A000000 + which).astype(np.uint32),
                    np.full(len(datagrams), 40000, dtype=np.uint16))


def per_call_us(func, seconds: float) -> float:
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            func(calls)
            calls += 1
    return elapsed / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        names = bench_schemas(Path(tmp), 10, 10)
        registry, _ = Registry.load_dir(Path(tmp))
        encoders = [Encoder(load_file(Path(tmp) / f"{n}.avsc")) for n in names]
    record = {"time": 1_763_800_000_000_000_000, **{f"s{i}": float(i) for i in range(10)}}
    cases = {f"1 channel x {n}": [encoders[0].encode(record)] * n for n in (1, 41, 256)}
    cases["10 channels x 94"] = [encoders[i % 10].encode(record) for i in range(94)]
    rows = []
    for name, datagrams in cases.items():
        senders = 10 if name.startswith("10") else 1
        received, anonymous = batch(datagrams, senders), batch(datagrams, None)
        views = [memoryview(d) for d in datagrams]

        def timed(route, b) -> float:  # a new decimation window every call, as in time
            return per_call_us(lambda i: route(b, 26000, i * 10**8), args.seconds)

        batch_us = timed(BatchRouter(Router(registry)).route, received)
        anonymous_us = timed(BatchRouter(Router(registry)).route, anonymous)
        one_by_one_us = timed(Router(registry).route, views)
        rows.append({"batch": name, "batch_router_us": round(batch_us, 1),
                     "without_senders_us": round(anonymous_us, 1),
                     "datagram_router_us": round(one_by_one_us, 1),
                     "ratio": round(one_by_one_us / batch_us, 2),
                     "senders_cost": round(batch_us / anonymous_us, 2)})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'batch':>18} {'BatchRouter':>12} {'no senders':>11} {'Router (one by one)':>20}"
          f" {'ratio':>6} {'senders cost':>13}")
    for r in rows:
        print(f"{r['batch']:>18} {r['batch_router_us']:>9} µs {r['without_senders_us']:>8} µs"
              f" {r['datagram_router_us']:>17} µs {r['ratio']:>5}x {r['senders_cost']:>12}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
