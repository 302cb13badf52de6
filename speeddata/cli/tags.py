"""``speeddata tag``, ``tags``, ``untag`` and ``control``: marking time ranges, shared
with every relay of the deployment over the control group."""

from __future__ import annotations

import argparse
import time

from speeddata.cli.base import cfg, command, json_flag, show
from speeddata.cli.render import tags_lines
from speeddata.errors import SpeeddataError

TAG_SECTIONS = ("cache", "multicast")


def _tag_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("words", nargs="+", metavar="NAME | start NAME | stop NAME")
    p.add_argument("--start", help="'now', relative like -5m, or ISO 8601 (UTC)")
    p.add_argument("--end", help="as --start (default now)")
    p.add_argument("--note", help="free text kept with the tag")
    p.add_argument("--channels", help="comma-separated channels (default: all)")


@command("tag", help="mark a time range: tag NAME --start T [--end T] | tag start NAME | "
         "tag stop NAME", sections=TAG_SECTIONS, args=_tag_args, writes_cache=True)
def cmd_tag(args: argparse.Namespace) -> int:
    from speeddata.control import announcer
    from speeddata.tags import TagStore
    from speeddata.times import parse_time

    found = cfg(args)
    store = TagStore(found.cache.dir, announcer(found))  # every relay hears of it
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


@command("tags", help="list tags with their range, size on disk, channels and export state",
         sections=("cache",), args=json_flag)
def cmd_tags(args: argparse.Namespace) -> int:
    from speeddata.captures import tag_rows

    return show(args, tag_rows(cfg(args).cache.dir, time.time_ns()), tags_lines)


def _untag_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")


@command("untag", help="remove a tag (its range is no longer protected from retention)",
         sections=TAG_SECTIONS, args=_untag_args, writes_cache=True)
def cmd_untag(args: argparse.Namespace) -> int:
    from speeddata.control import announcer
    from speeddata.tags import TagStore

    found = cfg(args)
    TagStore(found.cache.dir, announcer(found)).delete(args.name)
    print(f"tag {args.name} removed (its range is no longer protected from retention)")
    return 0


def _control_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["key"], help="what to show")


@command("control", help="control key: print the key that authenticates tag messages (made "
         "at the first start); set it as [multicast] control_key on the other relay hosts",
         sections=TAG_SECTIONS, args=_control_args, writes_cache=True)
def cmd_control(args: argparse.Namespace) -> int:
    from speeddata.control import load_key

    found = cfg(args)
    print(load_key(found.multicast.control_key, found.cache.dir).decode())
    return 0
