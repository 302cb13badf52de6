#!/usr/bin/env python3
"""Loss-table benchmark: what a datagram costs the relay when it opens a new link.

A link is one (sender address and port, channel) whose arrivals and reports the relay
matches (``speeddata.loss.Hop``). The table is bounded, so once it is full every new
link evicts one. Measured through ``BatchRouter.route``, as the relay calls it, with
``links`` data links in the table (each sent data and reported):

- ``reports``: batches of 256 SenderReports, each from a port never seen (a forger
  spraying reports from many ports);
- ``data``: batches of 256 data datagrams, each from a new port (a crowd of senders);
- ``steady``: batches of 256 data datagrams from the senders already known.

    PYTHONPATH=. .venv/bin/python benchmarks/loss_links.py [--links 1000 3000] [--seconds 1]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from speeddata import loss
from speeddata.relay.core import BatchRouter, Received, Router
from speeddata.schemas import Registry, channel_from_schema
from speeddata.sender import Encoder

BATCH = 256
SLOT = 2048
SCHEMA = {"type": "record", "name": "bench", "fields": [
    {"name": "time", "type": "long"}, {"name": "value", "type": "double"}]}


def received(datagrams: list[bytes], senders: np.ndarray) -> Received:
    """A batch as the socket layer leaves it; ``senders`` packed IPv4 << 16 | port."""
    buffer = np.zeros(len(datagrams) * SLOT, dtype=np.uint8)
    for i, d in enumerate(datagrams):
        buffer[i * SLOT : i * SLOT + len(d)] = np.frombuffer(d, dtype=np.uint8)
    return Received(buffer, SLOT, np.array([len(d) for d in datagrams], dtype=np.int64),
                    (senders >> 16).astype(np.uint32), (senders & 0xFFFF).astype(np.uint16))


def sender_of(n: int) -> int:
    """The n-th sender: 10.x.y.z port 40000, a new address per sender."""
    return ((0x0A000000 + n) << 16) | 40000


def measure(links: int, case: str, seconds: float) -> float:
    """µs per datagram of ``case`` with ``links`` links in the table."""
    channel = channel_from_schema(SCHEMA)
    router = Router(Registry([channel]))
    router.hop = loss.Hop(max_links=links)
    batches = BatchRouter(router)
    data = Encoder(channel).encode({"time": 1, "value": 0.5})
    now = 10**18
    for start in range(0, links, BATCH):  # fill the table: data, then a report, per link
        who = np.array([sender_of(n) for n in range(start, min(links, start + BATCH))],
                       dtype=np.uint64)
        batches.route(received([data] * len(who), who), 26000, now)
        reports = [loss.sender_report(now, 7, channel.fingerprint, 0, 0)] * len(who)
        batches.route(received(reports, who), 26000, now)
    report = loss.sender_report(now, 7, channel.fingerprint, 0, 0)
    fresh, calls, elapsed = links, 0, 0.0
    while elapsed < seconds:
        now += 10**6
        if case == "steady":
            first = calls * BATCH % links
            who = np.array([sender_of((first + k) % links) for k in range(BATCH)],
                           dtype=np.uint64)
        else:
            who = np.array([sender_of(fresh + k) for k in range(BATCH)], dtype=np.uint64)
            fresh += BATCH
        batch = received([report if case == "reports" else data] * BATCH, who)
        t0 = time.perf_counter()  # the route call only, not making the batch
        batches.route(batch, 26000, now)
        elapsed += time.perf_counter() - t0
        calls += 1
    return elapsed / (calls * BATCH) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = [{"links": n, **{case: round(measure(n, case, args.seconds), 2)
                            for case in ("reports", "data", "steady")}} for n in args.links]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'links':>6} {'new report-only link':>21} {'new data link':>14} {'known link':>11}"
          "   (µs a datagram)")
    for r in rows:
        print(f"{r['links']:>6} {r['reports']:>21} {r['data']:>14} {r['steady']:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
