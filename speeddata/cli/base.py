"""The command registry: each command module declares its commands with ``@command``,
their arguments beside them; and what every command starts with (its configuration,
checked, and the channels of it)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speeddata import config
from speeddata.errors import ConfigError

if TYPE_CHECKING:
    from speeddata.schemas import Registry

log = logging.getLogger("speeddata")

Run = Callable[[argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], None]


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command with the common flags (and its sections' settings) only."""


def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def show(args: argparse.Namespace, data: Any, render: Callable[[Any], list[str]]) -> int:
    """Print ``data`` as JSON with ``--json``, else as ``render`` writes it."""
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print("\n".join(render(data)))
    return 0


@dataclass(frozen=True)
class Command:
    """One ``speeddata`` command. ``sections``: the config sections whose keys are its
    flags; ``writes_cache``: its cache directory is made and must be writable;
    ``extra``: the ``speeddata[...]`` extra that installs what it needs."""

    name: str
    help: str
    run: Run
    arguments: Arguments = no_arguments
    sections: tuple[str, ...] = ()
    writes_cache: bool = False
    extra: str = "all"


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, sections: tuple[str, ...] = (),
            args: Arguments = no_arguments, writes_cache: bool = False,
            extra: str = "all") -> Callable[[Run], Run]:
    """Register the decorated function as the command ``name``; ``args(parser)`` adds its
    own arguments to its subparser."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(name, help, run, args, sections, writes_cache, extra)
        return run

    return register


def cfg(args: argparse.Namespace) -> config.Config:
    """The command's configuration: defaults, file, flags; its channels directory there
    (the default one made) and its cache directory writable if it writes one."""
    found = config.from_args(args)
    spec = COMMANDS[args.command]
    if "channels" in spec.sections:
        channels_dir(found.channels.dir)
    if spec.writes_cache:
        writable(found.cache.dir, "[cache] dir", "--cache-dir")
    return found


def channels_of(found: config.Config) -> Registry:
    """The configured channels; a bad schema file is logged and skipped."""
    from speeddata.schemas import load_channels

    return load_channels(found.channels.dir, log)


def writable(directory: Path, key: str, flag: str) -> None:
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


def channels_dir(directory: Path) -> None:
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


def relay_host(found: config.Config, given: str | None) -> str:
    """Where a local source sends: ``--host``, else the relay's address (this host's
    loopback when the relay listens on every address)."""
    return given or ("127.0.0.1" if found.relay.host in ("0.0.0.0", "") else found.relay.host)


def relay_port(found: config.Config, given: int | None) -> int:
    """Where a local source sends to: ``--port``, else [relay] port, else (port 0: the
    relay chose one) the port the relay of this cache directory reports listening on."""
    if given or found.relay.port:
        return given or found.relay.port
    from speeddata import status

    listen = str(status.read_all(found.cache.dir).get("relay", {}).get("listen", ""))
    port = listen.rpartition(":")[2]
    if not port.isdigit():
        raise ConfigError("[relay] port is 0 (the relay picks one) and no relay runs with "
                          f"the cache directory {found.cache.dir}: give --port")
    return int(port)


def progress_bar(args: argparse.Namespace, total: Callable[[], int], unit: str,
                  desc: str) -> Any:
    """A tqdm bar on stderr when it is a terminal (and not ``--quiet``), else None."""
    if not sys.stderr.isatty() or args.quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total(), unit=unit, unit_scale=True, desc=desc, file=sys.stderr)


def dask_flag(p: argparse.ArgumentParser) -> None:
    """``--dask ADDRESS``: the ``[query] dask`` setting, for archived ranges."""
    p.add_argument("--dask", dest="cfg__query__dask", metavar="ADDRESS",
                   default=argparse.SUPPRESS,
                   help="with --archive: read on this Dask scheduler's workers, a task per "
                        "archived file (like tcp://scheduler:8786; default [query] dask)")


def dask_of(args: argparse.Namespace, found: config.Config) -> str | None:
    """The scheduler to read on: only for --archive (an error when named without it)."""
    if not args.archive:
        if getattr(args, "cfg__query__dask", None):
            raise ConfigError("--dask reads archived ranges on a Dask cluster: add --archive")
        return None
    return found.query.dask or None
