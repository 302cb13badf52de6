"""``speeddata channels``: list, show, add or retire channel schemas (a running relay and
server take the change within a second)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from speeddata.cli.base import cfg, channels_of, command
from speeddata.errors import SpeeddataError


def _channels_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "show", "add", "retire"])
    p.add_argument("target", nargs="?", metavar="NAME|FILE.avsc|FILE.derived.toml",
                   help="show/retire: a channel name; add: a schema file, or a derived "
                   "channel's file")
    p.add_argument("--replace", action="store_true",
                   help="add: replace the schema of a channel of that name")


@command("channels", help="list, show, add or retire channels (a running relay and server "
         "take the change within a second, without a restart)", sections=("channels",),
         args=_channels_args)
def cmd_channels(args: argparse.Namespace) -> int:
    from speeddata import schemas
    from speeddata.derived import files, live

    found = cfg(args)
    folder = found.channels.dir
    registry = channels_of(found)
    if args.action != "list" and not args.target:
        raise SpeeddataError(f"'channels {args.action}' needs a "
                             f"{'schema file' if args.action == 'add' else 'channel name'}")
    if args.action == "list":
        for channel in registry:
            numbers = sum(s.kind == "number" for s in channel.signals)
            print(f"{channel.name:<20} {channel.fingerprint.hex()}  "
                  f"{len(channel.signals)} signals ({numbers} numeric)")
        derived = live.load(folder, registry)
        for made in derived.compiled:
            print(f"{made.channel.name:<20} derived (on {made.driver})  "
                  f"{len(made.programs)} signals: "
                  + ", ".join(f"{n} = {p.text}" for n, p in made.programs))
        if not len(registry) and not derived.compiled:
            print(f"no channels in {folder}")
        return 0
    if args.action == "show":
        channel = registry[args.target]
        print(json.dumps(channel.schema, indent=1))
        return 0
    if args.action == "add" and args.target.endswith(".toml"):
        path = Path(args.target)
        definition = files.load_file(path) if path.name.endswith(files.SUFFIX) else (
            files.parse(_read(path), str(path)))
        live.check(definition, registry, folder)
        stored = files.store(folder, definition, args.replace)
        print(f"derived channel {definition.name} stored as {stored}; a running server "
              "computes it within a second")
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
    moved = files.retire(folder, args.target, time.time_ns()) or schemas.retire_schema(
        folder, args.target, time.time_ns())
    print(f"channel {args.target} retired (schema kept as {moved}); its cached data stays")
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise SpeeddataError(f"{path}: cannot read ({exc})") from None
