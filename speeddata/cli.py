"""``speeddata``: one command line for every part (``speeddata --help``)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speeddata import __version__, config, logs, status
from speeddata.errors import ConfigError, SpeeddataError

log = logging.getLogger("speeddata")

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def register(func: Command) -> Command:
        COMMANDS[name] = func
        return func

    return register


WRITES_CACHE = {"relay", "serve", "up", "tag", "untag", "control"}


def _cfg(args: argparse.Namespace) -> config.Config:
    cfg = config.from_args(args)
    if "channels" in SECTIONS_OF.get(args.command, ()):
        _channels_dir(cfg.channels.dir)
    if args.command in WRITES_CACHE:
        _writable(cfg.cache.dir, "[cache] dir", "--cache-dir")
    return cfg


def _writable(directory: Path, key: str, flag: str) -> None:
    """A directory this command writes: made if missing, and writable, or a one-line
    error naming the setting. A full disk is not refused: the relay runs on one."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise ConfigError(f"{key}: {directory} cannot be made ({exc.strerror}); choose "
                              f"another with {flag}") from None
    if directory.is_dir() and not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {directory} is not writable by this user; fix its "
                          f"permissions or choose another with {flag}")


def _channels_dir(directory: Path) -> None:
    """The default channels directory is made with the demo channels the first time (so a
    wheel runs ``speeddata up --demo`` anywhere); a configured one must exist."""
    if directory.is_dir():
        return
    if directory != config.home() / "schemas":
        raise ConfigError(f"[channels] dir: {directory} does not exist; make it and put the "
                          "channel schemas (*.avsc) in it, or set [channels] dir")
    import shutil
    import tempfile

    from speeddata.schemas import demo_files

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".schemas-", dir=directory.parent))
    for path in demo_files():
        shutil.copy(path, staging / path.name)
    try:
        staging.rename(directory)  # whole or not at all; another process may have won
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return
    log.info("made %s with the demo channels; put your channel schemas (*.avsc) there",
             directory)


def _registry(cfg: config.Config):  # type: ignore[no-untyped-def]
    from speeddata.schemas import Registry

    registry, errors = Registry.load_dir(cfg.channels.dir)
    for error in errors:
        log.error("%s (channel skipped)", error)
    return registry


@command("relay")
def cmd_relay(args: argparse.Namespace) -> int:
    from speeddata.relay.server import Relay, run_workers

    cfg = _cfg(args)
    if cfg.relay.workers > 1:
        return run_workers(cfg)
    relay = Relay(cfg)
    relay.install_signal_handlers()
    relay.run()
    return 0


@command("archive")
def cmd_archive(args: argparse.Namespace) -> int:
    import signal

    from speeddata import archive

    cfg = _cfg(args)
    if not cfg.archive.endpoint:
        raise ConfigError("[archive] endpoint is empty: set it to the store's URL, like "
                          "--archive-endpoint http://store:8333")
    archive.credentials(cfg.archive)  # a bad credentials file stops here, before the loop
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    archive.run(cfg, lambda: bool(stopping))
    return 0


@command("serve")
def cmd_serve(args: argparse.Namespace) -> int:
    from speeddata.stripchart.app import serve

    serve(_cfg(args))
    return 0


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    import signal

    from speeddata import demo

    cfg = _cfg(args)
    registry = _registry(cfg)
    channels = args.channels.split(",") if args.channels else [
        c for c in demo.GENERATORS if c in registry
    ]
    unknown = [c for c in channels if c not in demo.GENERATORS or c not in registry]
    if unknown:
        raise SpeeddataError(
            f"no demo signals for channel(s) {unknown}; demo channels: {list(demo.GENERATORS)}"
        )
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    host = args.host or ("127.0.0.1" if cfg.relay.host in ("0.0.0.0", "") else cfg.relay.host)
    legacy = {name for name, port in cfg.legacy_ports().items() if port == cfg.relay.port}
    sent = demo.run(registry, host, args.port or cfg.relay.port, channels, args.rate,
                    legacy, args.duration, lambda: bool(stopping))
    log.info("demo stopped: sent %s", sent)
    return 0


WAIT_FOR = ("relay", "serve")


def _format_rate(value: float) -> str:
    return f"{value / 1000:.1f} k/s" if value >= 1000 else f"{value:.1f} /s"


def _format_loss(row: dict) -> str:
    """One hop's figures for one source and channel, as ``speeddata status`` prints them."""
    recent = (f"; last 10 s: {row['recent_lost']} of {row['recent_sent']}"
              if row["recent_sent"] else "")
    failed = f", {row['failed']} sends failed at the sender" if row.get("failed") else ""
    doubts = [text for key, text in (
        ("report_only", "reports only, no data arrived from it"),
        ("unverified", f"{row.get('unverified')} more claimed sent than plausible, not counted"),
    ) if row.get(key)]
    if row.get("trust") == "outside allow":
        doubts.append("reported from outside [relay] allow: cannot be trusted")
    return (f"{row['source']} {row['channel']}: sent {row['sent']}, lost {row['lost']} "
            f"({row['lost_percent']:.1f} %){recent}{failed}"
            + (f" [{'; '.join(doubts)}]" if doubts else ""))


def _format_stalls(stalls: dict) -> str:
    """The relay loop's stall histogram on one line: iterations per bucket, up to the
    longest stall, so a slow job on the loop shows as a count in a far bucket."""
    bounds, counts = stalls["bounds_ms"], stalls["counts"]
    labels = [f"<={b:g}" for b in bounds] + [f">{bounds[-1]:g}"]
    last = max((i for i, c in enumerate(counts) if c), default=0)
    buckets = " ".join(f"{label}:{count}" for label, count in
                       zip(labels[: last + 1], counts[: last + 1], strict=True))
    return f"loop stalls (ms): {buckets}; longest {stalls['longest_ms']:.1f} ms"


@command("status")
def cmd_status(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    if args.url:
        from speeddata.stripchart.guard import stored_token

        serve = status.read_all(cfg.cache.dir).get("serve", {})
        url = serve.get("url") or f"http://{cfg.web.host}:{cfg.web.port}/"
        token = stored_token(cfg.cache.dir) if serve.get("token_required") else None
        if serve.get("token_required") and cfg.web.token not in ("", "off"):
            token = cfg.web.token
        print(url + (f"?token={token}" if token else ""))
        return 0
    if args.wait is not None:
        deadline = time.monotonic() + args.wait
        while not (status.all_running(cfg.cache.dir, WAIT_FOR)
                   and status.serve_accepting(cfg.cache.dir)):
            if time.monotonic() > deadline:
                log.error("not all of %s running after %g s", ", ".join(WAIT_FOR), args.wait)
                return 1
            time.sleep(0.2)
    snapshots = status.read_all(cfg.cache.dir)
    if args.json:
        print(json.dumps(snapshots, indent=1, default=str))
        return 0 if any(s["running"] for s in snapshots.values()) else 1
    if not snapshots:
        print(f"nothing running (no status in {status.directory(cfg.cache.dir)}); "
              "start it with ./start or 'speeddata up'")
        return 1
    for name, snap in snapshots.items():
        state = "running" if snap["running"] else (
            f"NOT running (last seen {snap['age_seconds']} s ago)")
        uptime = time.time() - snap.get("started", time.time())
        print(f"{name}: {state}, pid {snap.get('pid')}, up {uptime:.0f} s"
              + (f", listening {snap['listen']}" if "listen" in snap else "")
              + (f", url {snap['url']}" if "url" in snap else ""))
        if snap.get("service") == "relay":
            print(f"  {snap['datagrams']} datagrams in {snap['batches']} batches, kernel drops "
                  f"{snap['kernel_drops']}, multicast send errors {snap['multicast_send_errors']},"
                  f" not cached {snap['cache_dropped']}")
            if "io" in snap:
                cache = snap.get("cache", {})
                print(f"  io {snap['io']}, receive buffer {snap.get('rcvbuf', 0) / 2**20:.1f} MiB,"
                      f" retention deleted {cache.get('deleted_files', 0)} files"
                      f" ({cache.get('deleted_bytes', 0) / 2**20:.1f} MiB)")
            if "loop_stalls" in snap:
                print("  " + _format_stalls(snap["loop_stalls"]))
            if control := snap.get("control"):
                refused = {k: v for k, v in control.get("refused", {}).items() if v}
                print(f"  control group {control['group']}"
                      f"{'' if control.get('joined') else ' (not joined)'}: "
                      f"{control.get('received', 0)} received, refused "
                      f"{refused or 'none'}, {control.get('sent', 0)} sent")
            for error in snap.get("schema_errors", []):
                print(f"  schema error (channel skipped): {error}")
            rejected = {k: v for k, v in snap["rejected"].items() if v}
            print(f"  rejected: {rejected or 'none'}")
            for fp, seen in snap.get("unknown_fingerprints", {}).items():
                ago = (time.time_ns() - seen["last_seen_ns"]) / 1e9
                print(f"  unknown schema {fp}: {seen['count']} datagrams from "
                      f"{seen.get('source', 'an unrecorded sender')}, last {ago:.0f} s ago "
                      "(add its .avsc to the channels dir)")
            print(f"  {'channel':<16}{'datagrams':>12}{'rate':>12}{'bytes':>14}{'decimated':>11}")
            for channel, c in sorted(snap["channels"].items()):
                print(f"  {channel:<16}{c['datagrams']:>12}{_format_rate(c['rate_hz']):>12}"
                      f"{c['bytes']:>14}{c['decimated']:>11}")
            for row in snap.get("senders", []):
                print("  sender " + _format_loss(row))
            refused = {k: v for k, v in snap.get("sender_reports", {}).get("refused", {}).items()
                       if v}
            if refused:
                print(f"  sender reports refused: {refused}")
        if snap.get("service") == "archive":
            print(f"  to {snap['endpoint']} bucket {snap['bucket']} as {snap['host']}: store "
                  f"{snap['store']}, {snap['archived_files']} files "
                  f"({snap['archived_bytes'] / 2**20:.1f} MiB) archived, backlog "
                  f"{snap['backlog_files']} files ({snap['backlog_bytes'] / 2**20:.1f} MiB), "
                  f"{snap['errors']} errors" + (f", last: {snap['last_error']}"
                                                if snap['last_error'] else ""))
        damage = snap.get("cache_damage") or {}
        cache = snap.get("cache") or {}
        if damage.get("blocks"):
            print(f"  cache damage skipped by scroll-back: {damage['blocks']} blocks "
                  f"({damage['records']} records) in {damage['files']} files; last: "
                  f"{damage['last']} ('speeddata verify' lists all)")
        if cache.get("damaged_files") or cache.get("moved_aside"):
            print(f"  cache damage found at start: {cache.get('damaged_files', 0)} files with "
                  f"damaged blocks (skipped by readers), {cache.get('moved_aside', 0)} "
                  "unreadable files moved into <channel>/damaged/")
        refused = {f"{kind} {reason}": n for kind, counts in snap.get("refused", {}).items()
                   for reason, n in counts.items()}
        if refused or snap.get("feed_errors"):
            print(f"  refused: {refused}, batches that failed: {snap.get('feed_errors', 0)}")
        for group, rows in (snap.get("multicast_loss") or {}).items():
            for row in rows:
                print(f"  {group} group from {row['name'] or 'relay'} at " + _format_loss(row))
    from speeddata.cache.catalogue import Catalogue

    print(f"cache {cfg.cache.dir}: {Catalogue(cfg.cache.dir).size() / 2**20:.1f} MiB")
    return 0 if any(s["running"] for s in snapshots.values()) else 1


@command("config")
def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(config.markdown_table())
        return 0
    print(config.dump(_cfg(args)), end="")
    return 0


@command("up")
def cmd_up(args: argparse.Namespace) -> int:
    from speeddata.supervisor import Child, Supervisor

    cfg = _cfg(args)  # a wrong key stops here, before any child starts

    def argv(name: str) -> list[str]:
        """The child's command line: the same config file and the flags it takes."""
        flags = ["--config", str(args.config)] if args.config else []
        for dest, value in vars(args).items():
            if dest.startswith("cfg__"):
                _, section, key = dest.split("__")
                if section in SECTIONS_OF[name]:
                    flags += [f"--{section}-{key}".replace("_", "-"), str(value)]
        return [sys.executable, "-m", "speeddata", name, *flags]

    def bound(children: list[Child]) -> bool:
        """The relay and the server of this ``up`` run: the demo may send."""
        pids = {c.name: c.process.pid for c in children if c.process}
        return (status.running_as(cfg.cache.dir, "relay", pids["relay"])
                and status.running_as(cfg.cache.dir, "serve", pids["serve"])
                and status.serve_accepting(cfg.cache.dir))

    names = ["relay", "serve", *(["archive"] if cfg.archive.endpoint else [])]
    supervisor = Supervisor([Child(name, argv(name)) for name in names],
                            [Child("demo", argv("demo"))] if args.demo else [], bound)
    supervisor.install_signal_handlers()
    return supervisor.run()


@command("captures")
def cmd_captures(args: argparse.Namespace) -> int:
    from speeddata.captures import captures, outlook, tag_state
    from speeddata.times import format_time

    cfg = _cfg(args)
    view = captures(cfg)
    if args.json:
        print(json.dumps(view, indent=1))
        return 0
    mib = 2**20
    print(f"{'channel':<16}{'MiB':>10}{'files':>7}  {'from':<21}{'to':<21}{'grows':>12}")
    for name, c in view["channels"].items():  # type: ignore[union-attr]
        print(f"{name:<16}{c['bytes'] / mib:>10.1f}{c['files']:>7}  "
              f"{format_time(c['first_ns'])[:19]:<21}{format_time(c['last_ns'])[:19]:<21}"
              f"{c['growth_bytes_per_s'] / 1000:>8.1f} kB/s")
    quota = view["quota"]
    print(f"cache {int(view['bytes']) / mib:.1f} MiB of "  # type: ignore[call-overload]
          f"{'an unknown quota (no relay ran yet)' if not quota else f'{quota / 2**30:.2f} GiB'}"
          f", growing {view['growth_bytes_per_s'] / 1000:.1f} kB/s; "  # type: ignore[operator]
          f"{outlook(view)}")
    for t in view["tags"]:  # type: ignore[union-attr]
        print(f"tag {t['name']}: {t['start']} to {t['end']}, {t['bytes'] / mib:.1f} MiB, "
              f"{tag_state(t)}")
    return 0


@command("replay")
def cmd_replay(args: argparse.Namespace) -> int:
    import signal
    import socket

    from speeddata import multicast, replay, wire
    from speeddata.cache.check import Skipped
    from speeddata.relay.core import Decimator
    from speeddata.tags import resolve_range

    cfg = _cfg(args)
    span = resolve_range(cfg.cache.dir, args.tag, args.start, args.end, time.time_ns())
    start, end = span.start_ns, span.end_ns
    if not args.max and not wire.MIN_SPEED <= args.speed <= wire.MAX_SPEED:
        raise SpeeddataError(f"--speed must be {wire.MIN_SPEED:g} to {wire.MAX_SPEED:g}")
    channels = args.channels.split(",") if args.channels else None
    registry = _registry(cfg)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if args.to == "relay":
        host, _, port = (args.target or "").rpartition(":")
        if not host or not port.isdigit():
            raise SpeeddataError("--to relay needs --target HOST:PORT, the relay to feed")
        target = (host, int(port))
        own = host in ("127.0.0.1", "localhost", cfg.relay.host) and int(port) == cfg.relay.port
        if own and not args.recache:
            raise SpeeddataError(f"{args.target} is the relay that cached this data: it would "
                                 "cache it twice; add --recache if that is what you want")

        def send(datagram: bytes) -> None:
            out.sendto(datagram, target)
    else:
        out = multicast.sender(cfg.multicast.interface, cfg.multicast.ttl)
        groups = [(g.host, g.port) for g in (cfg.multicast.full, cfg.multicast.decimated) if g]
        decimated = cfg.multicast.decimated
        decimator = Decimator(cfg.multicast.decimated_rate_hz)
        full = cfg.multicast.full
        fingerprints = [c.fingerprint for c in registry if not channels or c.name in channels]
        notice: dict = {"next": 0.0, "data": []}

        def announce(first_ns: int) -> None:  # the page draws a replay as one
            notice["data"] = wire.replay_notices(fingerprints, first_ns, time.time_ns(),
                                                 None if args.max else args.speed)
            notice["next"] = 0.0

        def send(datagram: bytes) -> None:
            if time.monotonic() >= notice["next"]:
                for group in groups:
                    for data in notice["data"]:
                        out.sendto(data, group)
                notice["next"] = time.monotonic() + 0.25
            if full:
                out.sendto(datagram, (full.host, full.port))
            if decimated and decimator.grant(datagram[2:10].hex(), time.time_ns(), 1):
                out.sendto(datagram, (decimated.host, decimated.port))
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    skipped = Skipped()
    while True:
        result = replay.pace(replay.batches(cfg.cache.dir, start, end, channels, registry,
                                            skipped),
                             None if args.max else args.speed, send, time.monotonic,
                             time.sleep, lambda: bool(stopping),
                             announce if args.to == "groups" else lambda first: None)
        rate = result.sent / max(result.seconds, 1e-9)
        timing = "" if args.max else (
            f"; lateness p50 {result.percentile(50) * 1e3:.2f} ms, "
            f"p99 {result.percentile(99) * 1e3:.2f} ms")
        print(f"replayed {result.sent} datagrams in {result.seconds:.2f} s "
              f"({rate:,.0f}/s){timing}")
        for line in skipped.lines() if skipped else []:
            print(f"speeddata replay: warning: {line}", file=sys.stderr)
        skipped = Skipped()
        if not args.loop or stopping:
            return 0


@command("source")
def cmd_source(args: argparse.Namespace) -> int:
    import signal

    from speeddata.sender import Sender
    from speeddata.sources import serial as serial_source

    cfg = _cfg(args)
    channel = _registry(cfg)[args.channel]
    try:
        sync = bytes.fromhex(args.sync or "")
    except ValueError:
        raise SpeeddataError(f"--sync {args.sync!r}: give the frame's first bytes in hex, "
                             "e.g. AA55") from None
    parser = serial_source.parser_for(channel, args.format,
                                      args.fields.split(",") if args.fields else [], sync)
    try:
        import serial
    except ModuleNotFoundError:
        raise SpeeddataError("the serial source needs pyserial: pip install "
                             "'speeddata[serial]'") from None
    host = args.host or ("127.0.0.1" if cfg.relay.host in ("0.0.0.0", "") else cfg.relay.host)
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    with Sender(channel, host=host, port=cfg.relay.port) as sender:
        log.info("reading %s at %d baud as channel %s (%s), sending to %s:%d", args.port,
                 args.baud, channel.name, args.format, host, cfg.relay.port)
        counters = serial_source.run(
            lambda: serial.Serial(args.port, args.baud, timeout=0.1), parser, sender.send,
            lambda: bool(stopping))
    log.info("serial source stopped: %d records sent, %d bad lines (%s), reopened %d times",
             counters.records, counters.bad,
             ", ".join(f"{k} {v}" for k, v in sorted(counters.reasons.items())) or "none",
             counters.reopened)
    return 0


@command("tail")
def cmd_tail(args: argparse.Namespace) -> int:
    from speeddata import multicast, tail

    cfg = _cfg(args)
    channel = _registry(cfg)[args.channel]
    signals = tail.pick_signals(channel, args.signals.split(",") if args.signals else None)
    group = getattr(cfg.multicast, args.group)
    if group is None:
        raise ConfigError(f"[multicast] {args.group}: the group is off; tail the other one")
    if args.count is not None and args.count < 1:
        raise SpeeddataError("--count must be 1 or more")
    with multicast.listener(group, cfg.multicast.interface) as sock:
        tail.run(sock, channel, signals, args.json, args.count, sys.stdout, sys.stdout.flush)
    return 0


@command("channels")
def cmd_channels(args: argparse.Namespace) -> int:
    from speeddata import schemas

    cfg = _cfg(args)
    folder = cfg.channels.dir
    registry = _registry(cfg)
    if args.action != "list" and not args.target:
        raise SpeeddataError(f"'channels {args.action}' needs a "
                             f"{'schema file' if args.action == 'add' else 'channel name'}")
    if args.action == "list":
        for channel in registry:
            numbers = sum(s.kind == "number" for s in channel.signals)
            print(f"{channel.name:<20} {channel.fingerprint.hex()}  "
                  f"{len(channel.signals)} signals ({numbers} numeric)")
        if not len(registry):
            print(f"no channels in {folder}")
        return 0
    if args.action == "show":
        channel = registry[args.target]
        print(json.dumps(channel.schema, indent=1))
        return 0
    if args.action == "add":
        path = Path(args.target)
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SpeeddataError(f"{path}: cannot read a JSON schema ({exc})") from None
        channel = schemas.store_schema(folder, schema, registry, args.replace)
        print(f"channel {channel.name} stored in {folder}; a running relay takes it within "
              "a second")
        return 0
    moved = schemas.retire_schema(folder, args.target, time.time_ns())
    print(f"channel {args.target} retired (schema kept as {moved}); its cached data stays")
    return 0


@command("service")
def cmd_service(args: argparse.Namespace) -> int:
    from speeddata import service

    given = args.config.resolve() if args.config else None  # the units pass it on
    if given is not None:
        config.build(given)  # a wrong file stops here, not at boot
    home = args.home.resolve()
    files = service.units(args.user, home, given)
    if args.print:
        for name, text in files.items():
            print(f"# {name}\n{text}")
        return 0
    for name, text in files.items():
        folder = args.sysctl_dir if name == service.SYSCTL_FILE else args.unit_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        except OSError as exc:
            raise SpeeddataError(f"cannot write {folder / name}: {exc.strerror} (run it as "
                                 "root, or --print the files)") from None
    print(service.next_steps(args.user, home, args.unit_dir, args.sysctl_dir))
    return 0


@command("tag")
def cmd_tag(args: argparse.Namespace) -> int:
    from speeddata.control import announcer
    from speeddata.tags import TagStore
    from speeddata.times import parse_time

    cfg = _cfg(args)
    store = TagStore(cfg.cache.dir, announcer(cfg))  # every relay hears of it
    now = time.time_ns()
    channels = tuple(args.channels.split(",")) if args.channels else ()
    words = args.words
    if len(words) == 2 and words[0] in ("start", "stop"):
        action, name = words
        if action == "start":
            tag = store.add(name, parse_time(args.start or "now", now), None, args.note or "",
                            channels, now)
            print(f"tag {tag.name} started at {tag.as_dict()['start']}; "
                  f"'speeddata tag stop {tag.name}' ends it")
        else:
            tag = store.stop(name, parse_time(args.end or "now", now))
            print(f"tag {tag.name}: {tag.as_dict()['start']} to {tag.as_dict()['end']}")
        return 0
    if len(words) != 1:
        raise SpeeddataError("usage: speeddata tag NAME --start T [--end T], "
                             "speeddata tag start NAME, speeddata tag stop NAME")
    if not args.start:
        raise SpeeddataError("say where the tag starts: --start -5m (or ISO 8601), or use "
                             f"'speeddata tag start {words[0]}' to start it now")
    tag = store.add(words[0], parse_time(args.start, now), parse_time(args.end or "now", now),
                    args.note or "", channels, now)
    print(f"tag {tag.name}: {tag.as_dict()['start']} to {tag.as_dict()['end']}")
    return 0


@command("tags")
def cmd_tags(args: argparse.Namespace) -> int:
    from speeddata.captures import tag_size
    from speeddata.tags import TagStore

    cfg = _cfg(args)
    rows = []
    for tag in TagStore(cfg.cache.dir).list():
        row = tag.as_dict()
        row["bytes"] = tag_size(cfg.cache.dir, tag.start_ns, tag.end_ns or time.time_ns(),
                                tag.channels)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no tags yet: 'speeddata tag start NAME' marks from now on")
        return 0
    print(f"{'name':<20}{'start':<26}{'end':<26}{'MiB':>8}  {'channels':<14}{'exported':<26}"
          f"{'made on':<16}note")
    for r in rows:
        print(f"{r['name']:<20}{r['start']:<26}{r['end']:<26}{r['bytes'] / 2**20:>8.1f}  "
              f"{','.join(r['channels']) or 'all':<14}{r['exported'] or 'no':<26}"
              f"{r['origin'] or 'this host':<16}{r['note']}")
    return 0


@command("untag")
def cmd_untag(args: argparse.Namespace) -> int:
    from speeddata.control import announcer
    from speeddata.tags import TagStore

    cfg = _cfg(args)
    TagStore(cfg.cache.dir, announcer(cfg)).delete(args.name)
    print(f"tag {args.name} removed (its range is no longer protected from retention)")
    return 0


@command("control")
def cmd_control(args: argparse.Namespace) -> int:
    from speeddata.control import load_key

    cfg = _cfg(args)
    print(load_key(cfg.multicast.control_key, cfg.cache.dir).decode())
    return 0


@command("pivot")
def cmd_pivot(args: argparse.Namespace) -> int:
    from speeddata.pivot import SUFFIXES, pivot
    from speeddata.tags import TagStore, resolve_range

    cfg = _cfg(args)
    span = resolve_range(cfg.cache.dir, args.tag, args.start, args.end, time.time_ns())
    start, end, name = span.start_ns, span.end_ns, span.name
    channels = args.channels.split(",") if args.channels else None
    attrs: dict[str, object] = {}
    if span.tag is not None:
        channels = channels or list(span.tag.channels) or None
        attrs = {"tag": span.tag.name, "note": span.tag.note}
    export_format = args.format or cfg.exports.format
    out = (args.out or cfg.exports.dir) / f"{name}{SUFFIXES[export_format]}"
    compression = args.compression or cfg.exports.compression
    bar = None
    if sys.stderr.isatty() and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="rec", unit_scale=True, desc=name, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    with contextlib.ExitStack() as cleanup:
        source = cfg.cache.dir
        if args.archive:
            from speeddata import archive

            if not cfg.archive.endpoint:
                raise ConfigError("--archive: [archive] endpoint is empty; set it to the store "
                                  "the relays archive to (--archive-endpoint URL)")
            source = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="sd-")))
            fetched = archive.fetch_range(cfg, start, end, source, channels)
            print(f"fetched {fetched['blocks']} blocks ({fetched['bytes'] / 2**20:.2f} MiB) from "
                  f"{fetched['files']} files of {len(fetched['hosts'])} relay hosts "
                  f"({', '.join(fetched['hosts']) or 'none'}) in the archive")
            attrs = {**attrs, **_archive_shortfall(fetched, args.partial)}
        try:
            result = pivot(source, out, start, end, registry=_registry(cfg),
                           channels=channels,
                           signals=args.signals.split(",") if args.signals else None,
                           decimate=args.decimate, force=args.force, attrs=attrs,
                           compression=None if compression == "none" else compression,
                           export_format=export_format, progress=progress)
        finally:
            if bar is not None:
                bar.close()
    for line in result.skipped.lines() if result.skipped else []:
        print(f"speeddata pivot: warning: {line}", file=sys.stderr)
    if span.tag is not None:
        TagStore(cfg.cache.dir).mark_exported(span.tag.name, time.time_ns())
    rate = result.records / max(result.seconds, 1e-9)
    print(f"wrote {result.path}: {result.records} records ({result.bytes_read / 2**20:.1f} MiB "
          f"of cache) in {result.seconds:.2f} s, {rate / 1e6:.2f} M records/s; channels "
          + ", ".join(f"{k} {v}" for k, v in result.channels.items()))
    return 0


def _archive_shortfall(fetched: dict[str, Any], partial: bool) -> dict[str, Any]:
    """What ``pivot --archive`` could not read: each object at fault on a line of its own,
    then an error (nothing exported) unless ``--partial``, which exports the rest and keeps
    the count in the export's attributes. Never a short export that looks whole."""
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


@command("verify")
def cmd_verify(args: argparse.Namespace) -> int:
    from speeddata import verify

    cfg = _cfg(args)
    running = any(s.get("service") == "relay" and s["running"]
                  for s in status.read_all(cfg.cache.dir).values())
    bar = None
    if sys.stderr.isatty() and not args.quiet:
        from tqdm import tqdm

        from speeddata.cache.catalogue import Catalogue

        bar = tqdm(total=Catalogue(cfg.cache.dir).size(), unit="B", unit_scale=True,
                   desc="verify", file=sys.stderr)
    try:
        verdict = verify.verify(cfg.cache.dir, _registry(cfg), args.repair, running,
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


@command("bench")
def cmd_bench(args: argparse.Namespace) -> int:
    from speeddata.bench import relay

    return relay.main(args.rest)


SECTIONS_OF = {
    "relay": ["channels", "cache", "relay", "multicast", "archive", "exports"],
    "serve": ["channels", "cache", "multicast", "web", "exports"],
    "archive": ["cache", "archive", "exports"],
    "demo": ["channels", "relay"],
    "status": ["cache", "web"],
    "config": ["channels", "cache", "relay", "multicast", "web", "exports", "archive"],
    "up": ["channels", "cache", "relay", "multicast", "web", "exports", "archive"],
    "tag": ["cache", "multicast"],
    "tags": ["cache"],
    "untag": ["cache", "multicast"],
    "pivot": ["channels", "cache", "exports", "archive"],
    "bench": [],
    "service": [],
    "channels": ["channels"],
    "tail": ["channels", "multicast"],
    "source": ["channels", "relay"],
    "replay": ["channels", "cache", "relay", "multicast"],
    "captures": ["cache"],
    "verify": ["channels", "cache"],
    "control": ["cache", "multicast"],
}

HELP = {
    "relay": "receive datagrams, cache them to disk and re-multicast them",
    "archive": "upload closed cache files (and exports) to an S3-compatible store, verified",
    "serve": "serve the live stripchart page and its API (FastAPI, uvicorn, uvloop)",
    "demo": "send demo signals (sine, ramp, square, chirp, noise) to the relay",
    "status": "show what runs, with rates, drops and cache size",
    "config": "print the effective configuration as TOML",
    "up": "run the relay and the stripchart (and --demo) supervised; Ctrl-C stops all",
    "tag": "mark a time range: tag NAME --start T [--end T] | tag start NAME | tag stop NAME",
    "tags": "list tags with their range, size on disk, channels and export state",
    "untag": "remove a tag (its range is no longer protected from retention)",
    "pivot": "write a tag or time range to HDF5: one group per channel, one dataset per signal",
    "bench": "benchmarks: 'speeddata bench relay --help' (the stripchart's needs Playwright: "
             "benchmarks/stripchart.py)",
    "captures": "what the cache holds per channel, how fast it grows, the hours left before "
                "retention deletes, and the tags with their sizes",
    "replay": "send a tagged or given range again, with its original spacing scaled, to the "
              "multicast groups or to a relay",
    "source": "read a device and send its records: 'speeddata source serial --help'",
    "tail": "print a channel's records as they pass on the multicast group, a line each",
    "channels": "list, show, add or retire channels (a running relay and server take the "
                "change within a second, without a restart)",
    "verify": "check every block of every cache file (header, sync markers, counts, "
              "decoding); exit 1 if any is damaged; --repair fixes what can be",
    "control": "control key: print the key that authenticates tag messages (made at the "
               "first start); set it as [multicast] control_key on the other relay hosts",
    "service": "write systemd units for the relay and the stripchart (and the sysctl for "
               "the relay's receive buffer), to run unattended as an unprivileged user",
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="speeddata",
        description="Telemetry for real machines: collect every sample, cache it, "
        "chart it live, export tagged ranges to HDF5.",
    )
    top.add_argument("--version", action="version", version=f"speeddata {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, sections in SECTIONS_OF.items():
        p = sub.add_parser(name, help=HELP[name], description=HELP[name])
        p.add_argument("-v", "--verbose", action="count", default=0, help="log debug details")
        p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
        config.add_arguments(p, sections)
        if name == "relay":
            p.add_argument("--workers", dest="cfg__relay__workers", metavar="N",
                           default=argparse.SUPPRESS,
                           help="relay processes sharing the port (same as --relay-workers)")
        elif name == "demo":
            p.add_argument("--rate", type=float, default=1.0,
                           help="scale every channel's rate (motor 1 kHz, example 10 Hz, env 1 Hz)")
            p.add_argument("--channels", help="comma-separated demo channels (default: all)")
            p.add_argument("--duration", type=float, help="stop after this many seconds")
            p.add_argument("--host", help="relay address (default: from [relay] host)")
            p.add_argument("--port", type=int, help="relay port (default: [relay] port)")
        elif name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")
            p.add_argument("--wait", type=float, metavar="SECONDS",
                           help="first wait until the relay and the stripchart run")
            p.add_argument("--url", action="store_true", help="print the stripchart's URL only")
        elif name == "config":
            p.add_argument("--markdown", action="store_true",
                           help="print the table of every setting for the README")
        elif name == "up":
            p.add_argument("--demo", action="store_true", help="also run the demo source")
        elif name == "tag":
            p.add_argument("words", nargs="+", metavar="NAME | start NAME | stop NAME")
            p.add_argument("--start", help="'now', relative like -5m, or ISO 8601 (UTC)")
            p.add_argument("--end", help="as --start (default now)")
            p.add_argument("--note", help="free text kept with the tag")
            p.add_argument("--channels", help="comma-separated channels (default: all)")
        elif name == "tags":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        elif name == "untag":
            p.add_argument("name")
        elif name == "control":
            p.add_argument("what", choices=["key"], help="what to show")
        elif name == "bench":
            p.add_argument("what", choices=["relay"], help="what to measure")
            p.add_argument("rest", nargs=argparse.REMAINDER,
                           help="the benchmark's own options (see speeddata bench relay --help)")
        elif name == "captures":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        elif name == "replay":
            p.add_argument("--tag", help="the tag's range")
            p.add_argument("--start", help="or a range: 'now', '-5m', ISO 8601")
            p.add_argument("--end", help="range end (default now)")
            p.add_argument("--channels", help="comma-separated channels (default: all)")
            speed = p.add_mutually_exclusive_group()
            speed.add_argument("--speed", type=float, default=1.0,
                               help="times real time (default 1)")
            speed.add_argument("--max", action="store_true", help="as fast as possible")
            p.add_argument("--to", choices=["groups", "relay"], default="groups",
                           help="groups: the multicast groups (nothing is cached again); "
                                "relay: a relay's port, --target")
            p.add_argument("--target", metavar="HOST:PORT", help="the relay to feed")
            p.add_argument("--recache", action="store_true",
                           help="let --target be this relay (its data is cached twice)")
            p.add_argument("--loop", action="store_true", help="start again at the end")
        elif name == "source":
            p.add_argument("kind", choices=["serial"], help="the kind of source")
            p.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0")
            p.add_argument("--baud", type=int, default=115200)
            p.add_argument("--channel", required=True, help="the channel its records are of")
            p.add_argument("--format", default="csv",
                           help="csv (header line, or --fields), kv (a=1 b=2), json (an "
                                "object per line) or struct:FMT (fixed binary frames)")
            p.add_argument("--fields", help="comma-separated field names, in order")
            p.add_argument("--sync", help="struct: the bytes (hex, e.g. AA55) that start "
                                          "every frame, to find frames again after garbage")
            p.add_argument("--host", help="relay address (default: from [relay] host)")
        elif name == "tail":
            p.add_argument("channel")
            p.add_argument("--signals", help="comma-separated signals (default: all)")
            p.add_argument("--json", action="store_true", help="one JSON object per line")
            which = p.add_mutually_exclusive_group()
            which.add_argument("--full", dest="group", action="store_const", const="full",
                               default="full", help="every record (default)")
            which.add_argument("--decimated", dest="group", action="store_const",
                               const="decimated", help="the decimated group's records")
            p.add_argument("--count", type=int, help="stop after N records")
        elif name == "channels":
            p.add_argument("action", choices=["list", "show", "add", "retire"])
            p.add_argument("target", nargs="?", metavar="NAME|FILE.avsc",
                           help="show/retire: a channel name; add: a schema file")
            p.add_argument("--replace", action="store_true",
                           help="add: replace the schema of a channel of that name")
        elif name == "service":
            p.add_argument("--user", default="speeddata", help="the account the units run as")
            p.add_argument("--home", type=Path, default=Path("/var/lib/speeddata"),
                           help="the data directory: schemas, cache, exports")
            p.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"))
            p.add_argument("--sysctl-dir", type=Path, default=Path("/etc/sysctl.d"))
            p.add_argument("--print", action="store_true", help="print the files, write none")
        elif name == "pivot":
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
            p.add_argument("--archive", action="store_true",
                           help="read the range from the archive ([archive] endpoint): every "
                                "relay's files, fetched by ranged GETs, not the local cache")
            p.add_argument("--partial", action="store_true",
                           help="with --archive: export what could be read when some archived "
                                "objects are missing or damaged (counted, warned, kept in the "
                                "export's attributes); default: fail and export nothing")
        elif name == "verify":
            p.add_argument("--repair", action="store_true",
                           help="cut torn ends, move unreadable files into <channel>/damaged/, "
                                "rebuild indexes (files a running relay may write are left)")
    return top


RELATIVE_TIME = re.compile(r"^-\d+(\.\d+)?(ms|s|m|min|h|d)?$")


def _glue_relative_times(argv: list[str]) -> list[str]:
    """``--start -5m`` as users write it: argparse would take ``-5m`` for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--start", "--end") and RELATIVE_TIME.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


# What the bare package (the sender) leaves out; each role's extra brings its part.
EXTRA_OF = {"replay": "relay"}  # commands that run with another role's extra
OPTIONAL_MODULES = {"numpy", "h5py", "tqdm", "fastapi", "fastapi_offline", "uvicorn",
                    "websockets", "pydantic", "starlette", "uvloop", "boto3", "botocore"}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(_glue_relative_times(sys.argv[1:] if argv is None else argv))
    logs.setup(args.verbose, args.quiet)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"speeddata {args.command}: configuration error: {exc}\n"
              "  'speeddata config' prints every key with its value.", file=sys.stderr)
        return exc.exit_code
    except SpeeddataError as exc:  # the type says whether a restart can help (errors.py)
        print(f"speeddata {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in OPTIONAL_MODULES:
            raise
        extra = args.command if args.command in ("relay", "serve", "pivot", "archive") else (
            EXTRA_OF.get(args.command, "all"))
        print(f"speeddata {args.command}: needs {exc.name}, which is not installed; "
              f"install it with: pip install 'speeddata[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # 'speeddata status | head': the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
