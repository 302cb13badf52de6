"""``speeddata bench``: the benchmarks that ship with the package."""

from __future__ import annotations

import argparse

from speeddata.cli.base import command


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["relay"], help="what to measure")
    p.add_argument("rest", nargs=argparse.REMAINDER,
                   help="the benchmark's own options (see speeddata bench relay --help)")


@command("bench", help="benchmarks: 'speeddata bench relay --help' (the stripchart's needs "
         "Playwright: benchmarks/stripchart.py)", args=_bench_args)
def cmd_bench(args: argparse.Namespace) -> int:
    from speeddata.bench import relay

    return relay.main(args.rest)
