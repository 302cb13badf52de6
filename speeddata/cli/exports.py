"""``speeddata pivot``, ``replay`` and ``verify``: the cache written out, sent again, checked."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from speeddata import status
from speeddata.cli.base import cfg, channels_of, command, dask_flag, dask_of, progress_bar
from speeddata.config import Config
from speeddata.errors import ConfigError, SpeeddataError


def _pivot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tag", help="the tag to export")
    p.add_argument("--start", help="range start without a tag ('-10m', ISO 8601)")
    p.add_argument("--end", help="range end without a tag (default now)")
    p.add_argument("--out", type=Path, help="output directory (default [exports] dir)")
    p.add_argument("--channels", help="comma-separated channels (default: all)")
    p.add_argument("--signals", help="comma-separated signals (name or channel.name)")
    p.add_argument("--decimate", type=int, default=1, help="keep every Nth record")
    p.add_argument("--compression", choices=["gzip", "lzf", "none"],
                   help="compression (default [exports] compression)")
    p.add_argument("--format", choices=["hdf5", "csv", "parquet"],
                   help="hdf5: one file; csv, parquet: a directory with a file per "
                        "channel (default [exports] format)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--clock", choices=["source", "receive", "corrected"], default="source",
                   help="the time axis: the samples' own times (source, the default), the "
                        "relay's receive times, or the source times corrected by the "
                        "offsets the sender's time probes measured")
    p.add_argument("--archive", action="store_true",
                   help="read the range from the archive ([archive] endpoint): every "
                        "relay's files, fetched by ranged GETs, not the local cache")
    p.add_argument("--partial", action="store_true",
                   help="with --archive: export what could be read when some archived "
                        "objects are missing or damaged (counted, warned, kept in the "
                        "export's attributes); default: fail and export nothing")
    dask_flag(p)


@command("pivot", help="write a tag or time range to HDF5: one group per channel, one "
         "dataset per signal", sections=("channels", "cache", "exports", "archive"),
         args=_pivot_args, extra="pivot")
def cmd_pivot(args: argparse.Namespace) -> int:
    from speeddata.pivot import pivot
    from speeddata.sinks import SUFFIXES
    from speeddata.tags import TagStore, resolve_range

    found = cfg(args)
    span = resolve_range(found.cache.dir, args.tag, args.start, args.end, time.time_ns())
    names = args.channels.split(",") if args.channels else None
    attrs: dict[str, object] = {}
    if span.tag is not None:
        names = names or list(span.tag.channels) or None
        attrs = {"tag": span.tag.name, "note": span.tag.note}
    export_format = args.format or found.exports.format
    out = (args.out or found.exports.dir) / f"{span.name}{SUFFIXES[export_format]}"
    compression = args.compression or found.exports.compression
    bar = progress_bar(args, lambda: 0, "rec", span.name)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    how: dict[str, Any] = dict(
        registry=channels_of(found), channels=names,
        signals=args.signals.split(",") if args.signals else None, decimate=args.decimate,
        force=args.force, compression=None if compression == "none" else compression,
        export_format=export_format, progress=progress, clock=args.clock,
        channels_dir=found.channels.dir)
    dask = dask_of(args, found)
    try:
        if dask:
            result = _pivot_on_dask(args, found, dask, span, out, attrs, how)
        else:
            with contextlib.ExitStack() as cleanup:
                source = found.cache.dir
                if args.archive:
                    source = Path(cleanup.enter_context(tempfile.TemporaryDirectory(
                        prefix="sd-")))
                    attrs = {**attrs, **_from_archive(found, span.start_ns, span.end_ns,
                                                      source, names, args.partial)}
                result = pivot(source, out, span.start_ns, span.end_ns, attrs=attrs, **how)
    finally:
        if bar is not None:
            bar.close()
    for line in result.skipped.lines() if result.skipped else []:
        print(f"speeddata pivot: warning: {line}", file=sys.stderr)
    if span.tag is not None:
        TagStore(found.cache.dir).mark_exported(span.tag.name, time.time_ns())
    rate = result.records / max(result.seconds, 1e-9)
    print(f"wrote {result.path}: {result.records} records ({result.bytes_read / 2**20:.1f} MiB "
          f"of cache) in {result.seconds:.2f} s, {rate / 1e6:.2f} M records/s; channels "
          + ", ".join(f"{k} {v}" for k, v in result.channels.items()))
    return 0


def _pivot_on_dask(args: argparse.Namespace, found: Config, dask: str, span: Any, out: Path,
                   attrs: dict[str, Any], how: dict[str, Any]) -> Any:
    """``pivot --archive --dask``: the workers read, a bar follows their files."""
    from speeddata import distributed

    bar = progress_bar(args, lambda: 0, "file", f"{span.name} on Dask")

    def files(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        return distributed.pivot(dask, found, out, span.start_ns, span.end_ns, attrs=attrs,
                                 tasks=files, fetched=lambda stats: _report_fetched(
                                     stats, args.partial), **how)
    finally:
        if bar is not None:
            bar.close()


def _from_archive(found: Config, start_ns: int, end_ns: int, into: Path,
                  names: list[str] | None, partial: bool) -> dict[str, Any]:
    """``pivot --archive``: the range's blocks fetched from the archive into ``into``; what
    could not be read, each object at fault on a line of its own, then an error (nothing
    exported) unless ``partial``, which exports the rest and keeps the count in the
    export's attributes (returned). Never a short export that looks whole."""
    from speeddata import archive

    if not found.archive.endpoint:
        raise ConfigError("--archive: [archive] endpoint is empty; set it to the store "
                          "the relays archive to (--archive-endpoint URL)")
    return _report_fetched(archive.fetch_range(found, start_ns, end_ns, into, names), partial)


def _report_fetched(fetched: dict[str, Any], partial: bool) -> dict[str, Any]:
    """What a fetch from the archive got, said; what it could not read, each object at
    fault on a line of its own, then an error unless ``partial`` (see ``_from_archive``)."""
    print(f"fetched {fetched['blocks']} blocks ({fetched['bytes'] / 2**20:.2f} MiB) from "
          f"{fetched['files']} files of {len(fetched['hosts'])} relay hosts "
          f"({', '.join(fetched['hosts']) or 'none'}) in the archive")
    if fetched["unverified_files"]:
        print(f"speeddata pivot: note: {fetched['unverified_files']} archived files have no "
              "block sums (archived by an older speeddata): their blocks were checked by "
              "their framing only", file=sys.stderr)
    if not fetched["problems"]:
        return {}
    for line in fetched["problems"]:
        print(f"speeddata pivot: archive: {line}", file=sys.stderr)
    unknown = fetched["unknown_files"]
    said = (f"{fetched['unread_records']} of {fetched['records']} records in the range could "
            "not be read from the archive" + (f", and {unknown} files whose records could not "
                                              "even be counted" if unknown else ""))
    if not partial:
        raise SpeeddataError(f"{said}: nothing exported (--partial exports the rest and says "
                             "what is missing in the export)")
    print(f"speeddata pivot: warning: {said}; exporting the rest (--partial)", file=sys.stderr)
    return {"archive_unread_records": fetched["unread_records"],
            "archive_unknown_files": unknown, "archive_problems": "\n".join(fetched["problems"])}


def _replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tag", help="the tag's range")
    p.add_argument("--start", help="or a range: 'now', '-5m', ISO 8601")
    p.add_argument("--end", help="range end (default now)")
    p.add_argument("--channels", help="comma-separated channels (default: all)")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--speed", type=float, default=1.0, help="times real time (default 1)")
    speed.add_argument("--max", action="store_true", help="as fast as possible")
    p.add_argument("--to", choices=["groups", "relay"], default="groups",
                   help="groups: the multicast groups (nothing is cached again); "
                        "relay: a relay's port, --target")
    p.add_argument("--target", metavar="HOST:PORT", help="the relay to feed")
    p.add_argument("--recache", action="store_true",
                   help="let --target be this relay (its data is cached twice)")
    p.add_argument("--loop", action="store_true", help="start again at the end")


@command("replay", help="send a tagged or given range again, with its original spacing "
         "scaled, to the multicast groups or to a relay",
         sections=("channels", "cache", "relay", "multicast"), args=_replay_args,
         extra="relay")
def cmd_replay(args: argparse.Namespace) -> int:
    import socket

    from speeddata import multicast, replay, wire
    from speeddata.cache.check import Skipped
    from speeddata.shutdown import stop_flag
    from speeddata.tags import resolve_range

    found = cfg(args)
    span = resolve_range(found.cache.dir, args.tag, args.start, args.end, time.time_ns())
    if not args.max and not wire.MIN_SPEED <= args.speed <= wire.MAX_SPEED:
        raise SpeeddataError(f"--speed must be {wire.MIN_SPEED:g} to {wire.MAX_SPEED:g}")
    speed = None if args.max else args.speed
    names = args.channels.split(",") if args.channels else None
    registry = channels_of(found)
    if args.to == "relay":
        target = _relay_target(args, found)
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        send, started = (lambda datagram: out.sendto(datagram, target)), (lambda first: None)
    else:
        out = multicast.sender(found.multicast.interface, found.multicast.ttl)
        full, decimated = found.multicast.full, found.multicast.decimated
        sink = replay.GroupSink(
            out.sendto, full and (full.host, full.port),
            decimated and (decimated.host, decimated.port), found.multicast.decimated_rate_hz,
            [c.fingerprint for c in registry if not names or c.name in names], speed,
            time.monotonic, time.time_ns)
        send, started = sink, sink.started  # the page draws a replay as one
    stopping = stop_flag()
    skipped = Skipped()
    while True:
        result = replay.pace(replay.batches(found.cache.dir, span.start_ns, span.end_ns, names,
                                            registry, skipped),
                             speed, send, time.monotonic, time.sleep, stopping, started)
        rate = result.sent / max(result.seconds, 1e-9)
        timing = "" if args.max else (
            f"; lateness p50 {result.percentile(50) * 1e3:.2f} ms, "
            f"p99 {result.percentile(99) * 1e3:.2f} ms")
        print(f"replayed {result.sent} datagrams in {result.seconds:.2f} s "
              f"({rate:,.0f}/s){timing}")
        for line in skipped.lines() if skipped else []:
            print(f"speeddata replay: warning: {line}", file=sys.stderr)
        skipped = Skipped()
        if not args.loop or stopping():
            return 0


def _relay_target(args: argparse.Namespace, found: Config) -> tuple[str, int]:
    """``--target HOST:PORT``; not the relay that cached the data unless ``--recache``."""
    host, _, port = (args.target or "").rpartition(":")
    if not host or not port.isdigit():
        raise SpeeddataError("--to relay needs --target HOST:PORT, the relay to feed")
    own = host in ("127.0.0.1", "localhost", found.relay.host) and int(port) == found.relay.port
    if own and not args.recache:
        raise SpeeddataError(f"{args.target} is the relay that cached this data: it would "
                             "cache it twice; add --recache if that is what you want")
    return host, int(port)


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repair", action="store_true",
                   help="cut torn ends, move unreadable files into <channel>/damaged/, "
                        "rebuild indexes (files a running relay may write are left)")


@command("verify", help="check every block of every cache file (header, sync markers, "
         "counts, decoding); exit 1 if any is damaged; --repair fixes what can be",
         sections=("channels", "cache"), args=_verify_args)
def cmd_verify(args: argparse.Namespace) -> int:
    from speeddata import verify

    found = cfg(args)
    running = status.all_running(found.cache.dir, ("relay",))
    from speeddata.cache.catalogue import Catalogue

    bar = progress_bar(args, Catalogue(found.cache.dir).size, "B", "verify")
    try:
        verdict = verify.verify(found.cache.dir, channels_of(found), args.repair, running,
                                bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    for line in verify.lines(verdict):
        print(line)
    damaged = verdict.damaged
    print(f"{len(verdict.files)} files checked, {len(damaged)} damaged"
          + ("" if not damaged or args.repair else "; 'speeddata verify --repair' cuts torn "
             "ends, moves unreadable files aside and rebuilds indexes"))
    return 1 if damaged else 0
