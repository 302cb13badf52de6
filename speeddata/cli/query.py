"""``speeddata query``: a tag or time range of the cache through SQL (DuckDB), each
channel a table; the result printed as a table, or written to CSV or Parquet."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from speeddata.cli.base import cfg, command, dask_flag, dask_of, progress_bar
from speeddata.cli.render import result_lines


def _query_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tag", help="the tag's range (and its channels)")
    p.add_argument("--start", help="or a range: 'now', '-5m', ISO 8601")
    p.add_argument("--end", help="range end (default now)")
    p.add_argument("--channels", help="comma-separated channels (default: all)")
    p.add_argument("--signals", help="comma-separated signals (name or channel.name)")
    p.add_argument("--decimate", type=int, default=1, help="keep every Nth record")
    p.add_argument("--sql", help="the statement; each channel is a table named after it "
                   "(quote names like \"my-rig\"), with its time field and receive_time "
                   "as UTC timestamps; without --sql, the tables and their columns")
    p.add_argument("--window", default="10s",
                   help="receive time read at a time per channel (default 10s): memory "
                        "holds about one window of each table")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", type=Path, metavar="FILE", help="write the result as CSV")
    out.add_argument("--parquet", type=Path, metavar="FILE",
                     help="write the result as Parquet")
    p.add_argument("--archive", action="store_true",
                   help="read the range from the archive ([archive] endpoint)")
    p.add_argument("--partial", action="store_true",
                   help="with --archive: go on when some archived objects cannot be read")
    dask_flag(p)


@command("query", help="SQL over a tag or time range (DuckDB): each channel a table; "
         "print the result, or write it to CSV or Parquet",
         sections=("channels", "cache", "archive"), args=_query_args, extra="query")
def cmd_query(args: argparse.Namespace) -> int:
    from speeddata import queries

    found = cfg(args)
    dask = dask_of(args, found)
    fetching = progress_bar(args, lambda: 0, "file", "on Dask") if dask else None
    reading = progress_bar(args, lambda: 0, "rec", "query")

    def files(done: int, total: int) -> None:
        if fetching is not None:
            fetching.total = total
            fetching.update(done - fetching.n)

    def records(done: int, total: int) -> None:
        if reading is not None:
            if done < reading.n or total != reading.total:  # SQL reads a table at a time
                reading.reset(total)
            reading.update(done - reading.n)

    try:
        q = queries.query(args.tag, start=args.start, end=args.end, channels=args.channels,
                          signals=args.signals, config=found, archive=args.archive,
                          partial=args.partial, decimate=args.decimate, now_ns=time.time_ns(),
                          dask=dask, progress=files)
        with q:
            q.progress = records
            return _run(args, q)
    finally:
        for bar in (fetching, reading):
            if bar is not None:
                bar.close()


def _run(args: argparse.Namespace, q: object) -> int:
    """The tables listed, or the statement run and its result printed or written."""
    from speeddata import queries
    from speeddata.tables import pyarrow

    assert isinstance(q, queries.Query)
    if not args.sql:
        for name, schema in q.schemas().items():
            print(f"{name}: " + ", ".join(f"{f.name} {f.type}" for f in schema))
        return 0
    result = queries.sql(q, args.sql, window=args.window, csv=args.csv, parquet=args.parquet)
    if result is None:
        print(f"wrote {args.csv or args.parquet}")
        return 0
    pa = pyarrow()
    columns = [c.cast(pa.string()).to_pylist() if not pa.types.is_floating(c.type)
               else [None if v is None else repr(v) for v in c.to_pylist()]
               for c in result.columns]
    for line in result_lines(result.column_names, columns):
        print(line)
    return 0
