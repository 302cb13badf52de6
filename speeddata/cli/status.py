"""``speeddata status``, ``captures`` and ``config``: what runs, what is cached, what is
configured."""

from __future__ import annotations

import argparse
import json
import time

from speeddata import config, status
from speeddata.cli.base import cfg, command, json_flag, log, show
from speeddata.cli.render import MIB, captures_lines, status_lines
from speeddata.snapshots import ServeSnapshot

WAIT_FOR = ("relay", "serve")


def _status_args(p: argparse.ArgumentParser) -> None:
    json_flag(p)
    p.add_argument("--wait", type=float, metavar="SECONDS",
                   help="first wait until the relay and the stripchart run")
    p.add_argument("--url", action="store_true", help="print the stripchart's URL only")


@command("status", help="show what runs, with rates, drops and cache size",
         sections=("cache", "web"), args=_status_args)
def cmd_status(args: argparse.Namespace) -> int:
    found = cfg(args)
    if args.url:
        print(_url(found))
        return 0
    if args.wait is not None:
        deadline = time.monotonic() + args.wait
        while not (status.all_running(found.cache.dir, WAIT_FOR)
                   and status.serve_accepting(found.cache.dir)):
            if time.monotonic() > deadline:
                log.error("not all of %s running after %g s", ", ".join(WAIT_FOR), args.wait)
                return 1
            time.sleep(0.2)
    snapshots = status.read_all(found.cache.dir)
    if args.json:
        print(json.dumps(snapshots, indent=1, default=str))
        return 0 if any(s["running"] for s in snapshots.values()) else 1
    if not snapshots:
        print(f"nothing running (no status in {status.directory(found.cache.dir)}); "
              "start it with ./start or 'speeddata up'")
        return 1
    for line in status_lines(status.read(found.cache.dir), time.time_ns()):
        print(line)
    from speeddata.cache.catalogue import Catalogue

    print(f"cache {found.cache.dir}: {Catalogue(found.cache.dir).size() / MIB:.1f} MiB")
    return 0 if any(s["running"] for s in snapshots.values()) else 1


def _url(found: config.Config) -> str:
    """The page's link, with the token when the running server asks for one."""
    from speeddata.stripchart.guard import stored_token

    seen = status.read(found.cache.dir).get("serve")
    serve = seen.snapshot if seen and isinstance(seen.snapshot, ServeSnapshot) else None
    url = (serve and serve.url) or f"http://{found.web.host}:{found.web.port}/"
    required = serve is not None and serve.token_required
    token = stored_token(found.cache.dir) if required else None
    if required and found.web.token not in ("", "off"):
        token = found.web.token
    return url + (f"?token={token}" if token else "")


@command("captures", help="what the cache holds per channel, how fast it grows, the hours "
         "left before retention deletes, and the tags with their sizes",
         sections=("cache",), args=json_flag)
def cmd_captures(args: argparse.Namespace) -> int:
    from speeddata.captures import captures

    return show(args, captures(cfg(args)), captures_lines)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--markdown", action="store_true",
                   help="print the table of every setting for the README")


@command("config", help="print the effective configuration as TOML",
         sections=("channels", "cache", "relay", "multicast", "web", "exports", "archive"),
         args=_config_args)
def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(config.markdown_table())
        return 0
    print(config.dump(cfg(args)), end="")
    return 0
