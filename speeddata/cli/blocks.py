"""``speeddata block``: run a block file (a Python function over column batches whose
results are a new channel), or print the output schema it declares."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from speeddata.cli.base import cfg, command, relay_host, relay_port


def _block_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["run", "schema"],
                   help="run: run the block until Ctrl-C; schema: print its output schema")
    p.add_argument("file", type=Path, help="the block file (Python, with @block functions)")
    p.add_argument("--block", dest="name", help="which block of the file (default: its only "
                   "one)")
    p.add_argument("--host", help="relay address (default: from [relay] host)")
    p.add_argument("--port", type=int, help="relay port (default: [relay] port)")
    p.add_argument("--register", metavar="URL", help="register the output channel at this "
                   "stripchart server (its URL with ?token=, as 'speeddata status --url' "
                   "prints it) instead of the local channels directory")
    p.add_argument("--replace", action="store_true", help="replace the output channel's "
                   "schema when the block's signals changed")


@command("block", help="run a processing block: a Python function over channels' columns "
         "whose results are sent as a new channel ('speeddata block run myblock.py')",
         sections=("channels", "cache", "relay", "multicast"), args=_block_args,
         extra="relay")
def cmd_block(args: argparse.Namespace) -> int:
    from speeddata.blocks import BlockError, load_file

    blocks = load_file(args.file)
    if args.name:
        chosen = [b for b in blocks if b.name == args.name]
        if not chosen:
            raise BlockError(f"block file {args.file}: no block {args.name!r} (it has "
                             f"{', '.join(b.name for b in blocks)})")
    elif len(blocks) > 1:
        raise BlockError(f"block file {args.file} declares {len(blocks)} blocks "
                         f"({', '.join(b.name for b in blocks)}): choose one with --block "
                         "(each runs in its own process)")
    else:
        chosen = blocks
    spec = chosen[0]
    if args.action == "schema":
        print(json.dumps(spec.schema(), indent=1))
        return 0
    from speeddata.blocks import process
    from speeddata.shutdown import stop_flag

    found = cfg(args)
    stopping = stop_flag()
    process.run(spec, found, (relay_host(found, args.host), relay_port(found, args.port)),
                stopping, args.file,
                url=args.register, replace=args.replace)
    return 0
