#!/usr/bin/env python3
"""Reliability benchmark: what speeddata survives, with figures (the README's table).

Runs every scenario of ``tests.harness.reliability`` at full size on loopback: a
relay fuzzed with 1,000,000 hostile datagrams among 10,000 valid ones, a disk filling
up, kill -9 in a loop, an overload, hostile WebSocket clients, hostile REST input, and
1,000,000 forged control, report and notice datagrams beside data at 20 k/s. The disk
scenario needs root (it mounts a tmpfs). About 6 minutes.

    PYTHONPATH=. .venv/bin/python benchmarks/reliability.py [--only fuzz,rest] [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

from tests.harness import reliability

FULL = {
    "fuzz": {"hostile": 1_000_000, "valid": 10_000, "rate": 40_000},
    "disk_full": {"rate": 5000, "phase": 3.0},
    "crash_loop": {"kills": 10, "rate": 20_000},
    "overload": {"seconds": 20.0},
    "websocket": {"seconds": 20.0, "silent": 50, "churn": 500},
    "rest": {},
    "forged": {"forged": 1_000_000, "forged_rate": 40_000, "data_rate": 20_000},
}


def mib(n: int) -> str:
    return f"{n / 2**20:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated scenarios: " + ", ".join(FULL))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--runs", type=int, default=1, metavar="N",
                        help="run each scenario N times: the table shows the last run's "
                        "figures and how many of the N survived (a verdict is only worth "
                        "as much as its runs agree)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(FULL)
    unknown = [n for n in names if n not in FULL]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(FULL)}")
    warnings.simplefilter("ignore")  # Apache Avro's note on timestamp-nanos
    rows, verdicts = [], {}
    for name in names:
        for run in range(args.runs):
            with tempfile.TemporaryDirectory(prefix=f"speeddata-{name}-") as work:
                started = time.monotonic()
                print(f"{name} {run + 1}/{args.runs} ...", file=sys.stderr, flush=True)
                row = reliability.SCENARIOS[name](Path(work), **FULL[name])
                row.details["seconds"] = round(time.monotonic() - started, 1)
                rows.append(row)
                verdicts.setdefault(row.scenario, []).append((row.survived, row.lost))
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=1, default=str))
        return 0 if all(r.survived for r in rows) else 1
    last = list({r.scenario: r for r in rows}.values())
    print("| scenario | sent | accepted | lost | counted | RSS before → after (MiB) | survived "
          "| runs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in last:
        runs = verdicts[r.scenario]
        survived = sum(ok for ok, _ in runs)
        print(f"| {r.scenario} | {r.sent:,} | {r.accepted:,} | {r.lost:,} | {r.counted:,} | "
              f"{mib(r.rss_before)} → {mib(r.rss_after)} | {'yes' if r.survived else 'NO'} | "
              f"{survived} of {len(runs)} survived, lost {'/'.join(str(n) for _, n in runs)} |")
    print()
    for r in last:
        print(f"{r.scenario}: {json.dumps(r.details, default=str)}")
    return 0 if all(r.survived for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
