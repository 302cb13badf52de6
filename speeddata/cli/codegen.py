"""``speeddata codegen c``: a channel's sender as a single C99 header (and an example)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from speeddata.cli.base import command
from speeddata.config import RelayConfig
from speeddata.errors import SpeeddataError
from speeddata.wire import HEADER_SIZE

log = logging.getLogger("speeddata.codegen")


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
         args=_codegen_args)
def cmd_codegen(args: argparse.Namespace) -> int:
    from speeddata.codegen import c
    from speeddata.schemas import load_file

    channel = load_file(Path(args.schema))  # the checks the relay makes of a channel
    model, text = c.generate(channel.schema, args.max_length, args.schema)
    name = model.root.cname
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
              f"datagrams of at most {size} bytes")
    if args.example:
        folder = Path(args.example)
        _write(folder / f"{name}.h", text)
        _write(folder / "example.c", c.example(model))
        print(f"{folder}/example.c and {folder}/{name}.h: cc -std=c99 -o example example.c "
              f"&& ./example HOST PORT COUNT")
    return 0

