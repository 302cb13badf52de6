"""``speeddata``: one command line for every part (``speeddata --help``).

Each command lives in the module of its concern, its arguments declared beside it
(``@command`` in ``base``): ``services`` (relay, serve, archive, demo, up, service),
``status`` (status, captures, config), ``tags`` (tag, tags, untag, control), ``exports``
(pivot, replay, verify), ``query``, ``channels``, ``blocks`` (block), ``sources`` (source,
tail), ``bench``, ``codegen``; what ``status``, ``captures`` and ``tags`` print is in
``render``."""

from __future__ import annotations

import argparse
import os
import re
import sys

from speeddata import __version__, config, logs
from speeddata.cli import (
    bench,
    blocks,
    channels,
    codegen,
    exports,
    query,
    services,
    sources,
    status,
    tags,
)
from speeddata.cli.base import COMMANDS, Command
from speeddata.errors import ConfigError, SpeeddataError

__all__ = ["COMMANDS", "SECTIONS_OF", "Command", "main", "parser"]
MODULES = (bench, blocks, channels, codegen, exports, query, services, sources, status,
           tags)  # they register

# The order ``speeddata --help`` lists them in.
ORDER = ("relay", "serve", "archive", "demo", "status", "config", "up", "tag", "tags",
         "untag", "pivot", "query", "bench", "service", "channels", "tail", "source", "replay",
         "captures", "verify", "control", "block", "codegen")
SECTIONS_OF = {name: spec.sections for name, spec in COMMANDS.items()}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="speeddata",
        description="Telemetry for real machines: collect every sample, cache it, "
        "chart it live, export tagged ranges to HDF5.",
    )
    top.add_argument("--version", action="version", version=f"speeddata {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in sorted(COMMANDS, key=lambda name: ORDER.index(name)):
        spec = COMMANDS[name]
        p = sub.add_parser(name, help=spec.help, description=spec.help)
        p.add_argument("-v", "--verbose", action="count", default=0, help="log debug details")
        p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
        config.add_arguments(p, list(spec.sections))
        spec.arguments(p)
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


# What the bare package (the sender) leaves out; each command's extra brings its part.
OPTIONAL_MODULES = {"numpy", "h5py", "tqdm", "fastapi", "fastapi_offline", "uvicorn",
                    "websockets", "pydantic", "starlette", "uvloop", "boto3", "botocore",
                    "pyarrow", "duckdb"}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(_glue_relative_times(sys.argv[1:] if argv is None else argv))
    logs.setup(args.verbose, args.quiet)
    spec = COMMANDS[args.command]
    try:
        return spec.run(args)
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
        print(f"speeddata {args.command}: needs {exc.name}, which is not installed; "
              f"install it with: pip install 'speeddata[{spec.extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # 'speeddata status | head': the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
