"""The long-running commands: ``relay``, ``serve``, ``archive``, ``demo``, ``up`` (all of
them supervised) and ``service`` (the systemd units that run them unattended)."""

from __future__ import annotations

import argparse
from pathlib import Path

from speeddata import config, status
from speeddata.cli.base import COMMANDS, cfg, channels_of, command, log, relay_host
from speeddata.errors import ConfigError, SpeeddataError

EVERY_SECTION = ("channels", "cache", "relay", "multicast", "web", "exports", "archive")


def _relay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", dest="cfg__relay__workers", metavar="N",
                   default=argparse.SUPPRESS,
                   help="relay processes sharing the port (same as --relay-workers)")


@command("relay", help="receive datagrams, cache them to disk and re-multicast them",
         sections=("channels", "cache", "relay", "multicast", "archive", "exports"),
         args=_relay_args, writes_cache=True, extra="relay")
def cmd_relay(args: argparse.Namespace) -> int:
    from speeddata.relay.server import Relay
    from speeddata.relay.workers import run_workers

    found = cfg(args)
    if found.relay.workers > 1:
        return run_workers(found)
    relay = Relay(found)
    relay.install_signal_handlers()
    relay.run()
    return 0


@command("serve", help="serve the live stripchart page and its API (FastAPI, uvicorn, uvloop)",
         sections=("channels", "cache", "multicast", "web", "exports"), writes_cache=True,
         extra="serve")
def cmd_serve(args: argparse.Namespace) -> int:
    from speeddata.stripchart.app import serve

    serve(cfg(args))
    return 0


@command("archive", help="upload closed cache files (and exports) to an S3-compatible store, "
         "verified", sections=("cache", "archive", "exports"), extra="archive")
def cmd_archive(args: argparse.Namespace) -> int:
    from speeddata import archive
    from speeddata.shutdown import stop_flag

    found = cfg(args)
    if not found.archive.endpoint:
        raise ConfigError("[archive] endpoint is empty: set it to the store's URL, like "
                          "--archive-endpoint http://store:8333")
    archive.credentials(found.archive)  # a bad credentials file stops here, before the loop
    archive.run(found, stop_flag())
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=1.0,
                   help="scale every channel's rate (motor 1 kHz, example 10 Hz, env 1 Hz)")
    p.add_argument("--channels", help="comma-separated demo channels (default: all)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--host", help="relay address (default: from [relay] host)")
    p.add_argument("--port", type=int, help="relay port (default: [relay] port)")


@command("demo", help="send demo signals (sine, ramp, square, chirp, noise) to the relay",
         sections=("channels", "relay"), args=_demo_args)
def cmd_demo(args: argparse.Namespace) -> int:
    from speeddata import demo
    from speeddata.shutdown import stop_flag

    found = cfg(args)
    registry = channels_of(found)
    names = args.channels.split(",") if args.channels else [
        c for c in demo.GENERATORS if c in registry
    ]
    unknown = [c for c in names if c not in demo.GENERATORS or c not in registry]
    if unknown:
        raise SpeeddataError(
            f"no demo signals for channel(s) {unknown}; demo channels: {list(demo.GENERATORS)}"
        )
    stopping = stop_flag()
    legacy = {name for name, port in found.legacy_ports().items() if port == found.relay.port}
    sent = demo.run(registry, relay_host(found, args.host), args.port or found.relay.port,
                    names, args.rate, legacy, args.duration, stopping)
    log.info("demo stopped: sent %s", sent)
    return 0


def _up_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true", help="also run the demo source")


@command("up", help="run the relay and the stripchart (and --demo) supervised; Ctrl-C stops "
         "all", sections=EVERY_SECTION, args=_up_args, writes_cache=True)
def cmd_up(args: argparse.Namespace) -> int:
    from speeddata.supervisor import Child, Supervisor, child_argv

    found = cfg(args)  # a wrong key stops here, before any child starts

    def argv(name: str) -> list[str]:
        return child_argv(name, COMMANDS[name].sections, vars(args), args.config)

    def bound(children: list[Child]) -> bool:
        """The relay and the server of this ``up`` run: the demo may send."""
        pids = {c.name: c.process.pid for c in children if c.process}
        return (status.running_as(found.cache.dir, "relay", pids["relay"])
                and status.running_as(found.cache.dir, "serve", pids["serve"])
                and status.serve_accepting(found.cache.dir))

    names = ["relay", "serve", *(["archive"] if found.archive.endpoint else [])]
    supervisor = Supervisor([Child(name, argv(name)) for name in names],
                            [Child("demo", argv("demo"))] if args.demo else [], bound)
    supervisor.install_signal_handlers()
    return supervisor.run()


def _service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", default="speeddata", help="the account the units run as")
    p.add_argument("--home", type=Path, default=Path("/var/lib/speeddata"),
                   help="the data directory: schemas, cache, exports")
    p.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"))
    p.add_argument("--sysctl-dir", type=Path, default=Path("/etc/sysctl.d"))
    p.add_argument("--print", action="store_true", help="print the files, write none")


@command("service", help="write systemd units for the relay and the stripchart (and the "
         "sysctl for the relay's receive buffer), to run unattended as an unprivileged user",
         args=_service_args)
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
