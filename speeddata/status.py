"""Status files: each running service writes a JSON snapshot that ``speeddata status`` reads.

A file under ``<cache>/.status/`` is rewritten atomically about once a second; a
snapshot older than a few seconds, or whose process is gone, is shown as not running.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speeddata.snapshots import Snapshot, SnapshotError, as_json, parse

log = logging.getLogger("speeddata.status")

STALE_SECONDS = 5.0


def directory(cache_dir: Path) -> Path:
    return cache_dir / ".status"


def write(cache_dir: Path, name: str, snapshot: Snapshot) -> None:
    """The service's snapshot as its status file, replaced whole (never read half-written)."""
    folder = directory(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.json.tmp"
    tmp.write_text(json.dumps(as_json(snapshot), indent=1, default=str))
    os.replace(tmp, folder / f"{name}.json")


def remove(cache_dir: Path, name: str) -> None:
    (directory(cache_dir) / f"{name}.json").unlink(missing_ok=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_all(cache_dir: Path, now: float | None = None) -> dict[str, dict[str, Any]]:
    """Every service's last snapshot, each with ``running`` set from its age and pid."""
    now = time.time() if now is None else now
    out = {}
    folder = directory(cache_dir)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            snapshot = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        try:  # a file another program (or a full disk) left is not a snapshot
            age = now - float(snapshot["written"])
            pid = int(snapshot["pid"])
        except (TypeError, KeyError, ValueError, OverflowError):
            continue
        snapshot["age_seconds"] = round(age, 1)
        snapshot["running"] = age < STALE_SECONDS and pid > 0 and alive(pid)
        out[path.stem] = snapshot
    return out


@dataclass(frozen=True)
class Seen:
    """A service's typed snapshot, and whether it still runs."""

    snapshot: Snapshot
    running: bool
    age_seconds: float


def read(cache_dir: Path, now: float | None = None) -> dict[str, Seen]:
    """Every service's last snapshot, typed; a file that does not hold one (written by
    another version, or damaged) is left out and said at debug level."""
    out = {}
    for name, raw in read_all(cache_dir, now).items():
        try:
            out[name] = Seen(parse(raw), raw["running"], raw["age_seconds"])
        except SnapshotError as exc:
            log.debug("status file %s left out: %s", name, exc)
    return out


def all_running(cache_dir: Path, names: tuple[str, ...]) -> bool:
    """Whether each named service runs; ``relay`` also stands for its workers (relay-wN)."""
    snapshots = read_all(cache_dir)
    return all(any(snap.get("running") for key, snap in snapshots.items()
                   if key == name or key.startswith(f"{name}-w")) for name in names)


def serve_accepting(cache_dir: Path) -> bool:
    """Whether the stripchart server takes connections: it writes its status a moment
    before uvicorn listens, and "ready" must mean a browser gets the page."""
    import socket

    listen = read_all(cache_dir).get("serve", {}).get("listen", "")
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        return False
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, int(port))) == 0


def running_as(cache_dir: Path, name: str, pid: int) -> bool:
    """Whether ``name`` runs as process ``pid`` (or a worker it forked): a snapshot left by
    another instance sharing the cache directory does not count."""
    for key, snap in read_all(cache_dir).items():
        if (key == name or key.startswith(f"{name}-w")) and snap.get("running"):
            found = int(snap.get("pid", 0))
            if found == pid or _parent(found) == pid:
                return True
    return False


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None  # gone, or no /proc (then a worker's own pid must match)
