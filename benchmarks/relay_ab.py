"""Two relay trees against the C baseline in one run, interleaved: the ratio of each to
the baseline, median of the runs, on the same load at the same time (a busy machine
moves all three alike).

    PYTHONPATH=. python benchmarks/relay_ab.py --before /path/to/old/tree [--runs 3]

Each search is ``speeddata bench relay``'s (double until loss, then bisect), 90 B with
multicast by default; the relay process is started with ``PYTHONPATH`` set to the
tree under test, the harness (load generator, listener) is this tree's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from speeddata.bench.relay import build_baseline, highest_rate

HERE = str(Path(__file__).resolve().parents[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the other tree (a checkout)")
    parser.add_argument("--after", default=HERE, help="the tree under test (default: this)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=90)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-multicast", action="store_true")
    args = parser.parse_args()
    multicast_on = not args.no_multicast
    rates: dict[str, list[float]] = {"before": [], "after": [], "baseline": []}

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        binary = build_baseline(Path(tmp))
        for run in range(args.runs):
            for kind in ("before", "baseline", "after"):
                if kind != "baseline":
                    os.environ["PYTHONPATH"] = getattr(args, kind)
                best, _ = highest_rate(args.size, multicast_on, args.seconds, 100_000,
                                       baseline=binary if kind == "baseline" else None,
                                       log=lambda m, k=kind, r=run: log(f"[{k} {r + 1}] {m}"))
                rates[kind].append(best.rate if best else 0.0)
    base = statistics.median(rates["baseline"])
    for kind in ("before", "after", "baseline"):
        median = statistics.median(rates[kind])
        print(f"{kind:>8}: {median / 1e3:6.1f} k/s median of "
              f"{', '.join(f'{r / 1e3:.0f}' for r in rates[kind])}; ratio to the C baseline "
              f"{median / base if base else float('nan'):.3f}")
    print(f"{args.size} B, multicast {'on' if multicast_on else 'off'}, {args.seconds:g} s "
          f"per trial, {args.runs} interleaved runs (before, baseline, after)")


if __name__ == "__main__":
    main()
