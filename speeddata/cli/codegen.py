"""``speeddata codegen c``: a channel's sender as a single C99 header (and an example)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from speeddata import config
from speeddata.cli.base import command
from speeddata.config import RelayConfig
from speeddata.errors import SpeeddataError
from speeddata.wire import HEADER_SIZE

log = logging.getLogger("speeddata.codegen")

if TYPE_CHECKING:
    from speeddata.schemas import Channel


def _codegen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("language", choices=["c"], help="the language of the sender")
    p.add_argument("schema", metavar="SCHEMA.avsc", help="the channel's schema file")
    p.add_argument("-o", "--output", metavar="HEADER",
                   help="where the header goes (default: <channel>.h here; - for stdout)")
    p.add_argument("--example", metavar="DIR",
                   help="also write DIR/example.c and the header beside it: a program "
                   "taking HOST PORT COUNT [RATE] that sends COUNT records")
    p.add_argument("--max-length", type=int, metavar="N",
                   help="the most bytes of a string or bytes field that has no "
                   "\"maxLength\" attribute (it sizes the fixed send buffer)")


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise SpeeddataError(f"cannot write {path}: {exc.strerror}") from None


@command("codegen", help="a channel's sender in C: one C99 header, no heap, POSIX or any "
         "network stack (lwIP); --example writes a program that sends COUNT records",
         sections=("channels",), args=_codegen_args)
def cmd_codegen(args: argparse.Namespace) -> int:
    from speeddata.codegen import c
    from speeddata.schemas import load_file

    channel = load_file(Path(args.schema))  # the checks the relay makes of a channel
    model, text = c.generate(channel.schema, args.max_length, args.schema)
    name = model.root.cname
    relay_has = _check_with_relay(args, channel)
    size = HEADER_SIZE + model.root.max_size
    if size > RelayConfig.max_datagram:
        log.warning("channel %s: datagrams of up to %d bytes, more than a relay takes by "
                    "default ([relay] max_datagram %d): raise it, or lower maxLength",
                    channel.name, size, RelayConfig.max_datagram)
    if args.output == "-":
        sys.stdout.write(text)
    elif args.output or not args.example:
        out = Path(args.output or f"{name}.h")
        _write(out, text)
        print(f"{out}: the sender of channel {channel.name} ({channel.fingerprint.hex()}), "
              f"datagrams of at most {size} bytes{relay_has}")
    if args.example:
        folder = Path(args.example)
        _write(folder / f"{name}.h", text)
        _write(folder / "example.c", c.example(model))
        print(f"{folder}/example.c and {folder}/{name}.h{relay_has}: cc -std=c99 -o example "
              "example.c && ./example HOST PORT COUNT")
    return 0


def _check_with_relay(args: argparse.Namespace, channel: Channel) -> str:
    """Say whether the relay's channels directory (this configuration's) has the channel
    with this fingerprint: if not, the relay counts its datagrams as unknown_schema."""
    from speeddata.schemas import load_channels

    folder = config.from_args(args).channels.dir
    known = load_channels(folder, log).get(channel.name) if folder.is_dir() else None
    if known is None:
        log.warning("the relay's channels (%s) have no channel %s: add it (speeddata "
                    "channels add %s), or the relay counts its datagrams as unknown_schema",
                    folder, channel.name, args.schema)
    elif known.fingerprint != channel.fingerprint:
        log.warning("the relay's channel %s (%s) has fingerprint %s, this header %s: the "
                    "relay counts its datagrams as unknown_schema; generate from its schema "
                    "or replace it (speeddata channels add --replace %s)", channel.name,
                    known.source, known.fingerprint.hex(), channel.fingerprint.hex(),
                    args.schema)
    else:
        return f"; the relay's channels ({folder}) have it"
    return ""
