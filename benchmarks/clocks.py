#!/usr/bin/env python3
"""Clock probe benchmark: how well a sender's offset is measured, idle relay and loaded.

A real relay on loopback; a sender whose clock runs 3.2 s ahead (an injected clock) calls
``Sender.sync()`` (a burst of 4 probes) ``--rounds`` times with the relay idle (the
baseline), then while another process sends it ``--rate`` datagrams a second. Prints,
per load, the error of the estimate against the true 3.2 s and the uncertainty it
states (half the round trip of its best probe): median and worst.

    PYTHONPATH=. .venv/bin/python benchmarks/clocks.py [--rounds 20] [--rate 2000 20000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

from speeddata import Sender
from speeddata.schemas import load_file
from tests.harness.procs import paced_source, percentile
from tests.helpers import SCHEMAS, relay_settings, start_relay

AHEAD_NS = 3_200_000_000


def measure(port: int, rounds: int) -> dict[str, float]:
    sender = Sender(load_file(SCHEMAS / "example.avsc"), port=port,
                    clock=lambda: time.time_ns() + AHEAD_NS)
    errors, bounds = [], []
    for _ in range(rounds):
        best = sender.sync()
        if best is not None:
            errors.append(abs(best.offset_ns - AHEAD_NS) / 1e3)
            bounds.append(best.uncertainty_ns / 1e3)
        sender.prober.estimator.samples.clear()  # each round on its own probes
        time.sleep(0.4)  # within the relay's budget of 10 probes a second per host
    sender.close()
    return {"rounds": len(errors), "error_us_p50": percentile(errors, 50),
            "error_us_max": max(errors, default=float("nan")),
            "uncertainty_us_p50": percentile(bounds, 50),
            "uncertainty_us_max": max(bounds, default=float("nan")),
            "within_bound": sum(e <= b for e, b in zip(errors, bounds, strict=True))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--rate", type=float, nargs="*", default=[2000.0, 20000.0],
                        help="datagrams per second of load")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="wt-clock-bench-") as tmp:
        relay = start_relay(Path(tmp), relay_settings(Path(tmp)))
        try:
            rows.append({"load_hz": 0, **measure(relay.port, args.rounds)})
            for rate in args.rate:
                load = multiprocessing.get_context("spawn").Process(
                    target=paced_source, args=(SCHEMAS, ["motor"], rate, "127.0.0.1",
                                               relay.port, args.rounds * 0.3 + 5))
                load.start()
                time.sleep(1.0)
                rows.append({"load_hz": rate, **measure(relay.port, args.rounds)})
                load.terminate()
                load.join()
        finally:
            relay.stop()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    base = rows[0]["error_us_p50"] or 1e-9
    print(f"{'load':>9} {'error p50':>10} {'max':>8} {'uncertainty p50':>16} {'max':>8} "
          f"{'within':>7} {'vs idle':>8}")
    for r in rows:
        print(f"{r['load_hz']:>7.0f}/s {r['error_us_p50']:>7.0f} µs {r['error_us_max']:>5.0f} µs "
              f"{r['uncertainty_us_p50']:>13.0f} µs {r['uncertainty_us_max']:>5.0f} µs "
              f"{r['within_bound']:>3}/{r['rounds']:<3} {r['error_us_p50'] / base:>7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
