"""``speeddata source`` (a device's records sent to the relay) and ``tail`` (a channel's
records printed as they pass on a multicast group)."""

from __future__ import annotations

import argparse
import sys

from speeddata.cli.base import cfg, channels_of, command, log, relay_host
from speeddata.errors import ConfigError, SpeeddataError


def _source_args(p: argparse.ArgumentParser) -> None:
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


@command("source", help="read a device and send its records: 'speeddata source serial --help'",
         sections=("channels", "relay"), args=_source_args)
def cmd_source(args: argparse.Namespace) -> int:
    from speeddata.sender import Sender
    from speeddata.shutdown import stop_flag
    from speeddata.sources import serial as serial_source

    found = cfg(args)
    channel = channels_of(found)[args.channel]
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
    host = relay_host(found, args.host)
    stopping = stop_flag()
    with Sender(channel, host=host, port=found.relay.port) as sender:
        log.info("reading %s at %d baud as channel %s (%s), sending to %s:%d", args.port,
                 args.baud, channel.name, args.format, host, found.relay.port)
        counters = serial_source.run(
            lambda: serial.Serial(args.port, args.baud, timeout=0.1), parser, sender.send,
            stopping)
    log.info("serial source stopped: %d records sent, %d bad lines (%s), reopened %d times",
             counters.records, counters.bad,
             ", ".join(f"{k} {v}" for k, v in sorted(counters.reasons.items())) or "none",
             counters.reopened)
    return 0


def _tail_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("channel")
    p.add_argument("--signals", help="comma-separated signals (default: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--full", dest="group", action="store_const", const="full",
                       default="full", help="every record (default)")
    which.add_argument("--decimated", dest="group", action="store_const",
                       const="decimated", help="the decimated group's records")
    p.add_argument("--count", type=int, help="stop after N records")


@command("tail", help="print a channel's records as they pass on the multicast group, a line "
         "each", sections=("channels", "multicast"), args=_tail_args)
def cmd_tail(args: argparse.Namespace) -> int:
    from speeddata import multicast, tail

    found = cfg(args)
    registry = channels_of(found)
    made = None
    if args.channel not in registry:  # a derived channel: computed from its inputs here
        from speeddata.derived import live

        made = next((c for c in live.load(found.channels.dir, registry).compiled
                     if c.channel.name == args.channel), None)
    channel = made.channel if made is not None else registry[args.channel]
    signals = tail.pick_signals(channel, args.signals.split(",") if args.signals else None)
    group = getattr(found.multicast, args.group)
    if group is None:
        raise ConfigError(f"[multicast] {args.group}: the group is off; tail the other one")
    if args.count is not None and args.count < 1:
        raise SpeeddataError("--count must be 1 or more")
    with multicast.listener(group, found.multicast.interface) as sock:
        computed = (tail.derived_records(tail.receive(sock), made, registry)
                    if made is not None else None)
        tail.run(sock, channel, signals, args.json, args.count, sys.stdout, sys.stdout.flush,
                 computed)
    return 0
