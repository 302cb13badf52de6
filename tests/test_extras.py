"""Each role runs with its own extra alone (issue 21): ``serve`` with ``speeddata[serve]``
and ``replay`` with ``speeddata[relay]``, neither with h5py. A subprocess refuses to
import any distribution the extra does not install (read from this tree's
pyproject.toml, through the installed metadata of its requirements)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from speeddata.bench.services import free_port
from speeddata.config import write_file
from tests.helpers import PROJECT, relay_settings
from tests.test_replay import fill

S = 10**9

ONLY_THE_EXTRA = """
import importlib.abc, importlib.metadata, json, re, sys
allowed = set(json.loads(sys.argv[1]))
owners = importlib.metadata.packages_distributions()
def norm(name): return re.sub(r"[-_.]+", "-", name).lower()
class OnlyTheExtra(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = owners.get(top, [])
        if top != "speeddata" and dists and not any(norm(d) in allowed for d in dists):
            raise ModuleNotFoundError(f"No module named {top!r} (not in the extra)",
                                      name=top)
        return None
sys.meta_path.insert(0, OnlyTheExtra())
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installs(extra: str) -> set[str]:
    """The distributions ``pip install speeddata[extra]`` brings (by this tree's
    pyproject.toml, then the installed metadata of each requirement)."""
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    pending = [Requirement(r) for r in project["dependencies"]]
    extras, seen_extras = [extra], set()
    while extras:
        name = extras.pop()
        seen_extras.add(name)
        for line in optional[name]:
            requirement = Requirement(line)
            if _norm(requirement.name) == "speeddata":
                extras += [e for e in requirement.extras if e not in seen_extras]
            else:
                pending.append(requirement)
    found: set[str] = set()
    while pending:
        requirement = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = _norm(requirement.name)
        if name in found:
            continue
        found.add(name)
        # not installed here (uvloop on Windows...): nothing imports it either
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pending += [Requirement(r) for r in importlib.metadata.requires(name) or []]
    return found


def run_with(extra: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", ONLY_THE_EXTRA + script,
                           json.dumps(sorted(installs(extra)))],
                          capture_output=True, text=True, timeout=120)


def test_the_extras_say_what_each_role_brings() -> None:
    serve, relay = installs("serve"), installs("relay")
    assert "h5py" not in serve | relay and "tqdm" not in serve
    assert {"fastapi", "uvicorn", "numpy", "fastavro"} <= serve
    assert {"h5py", "numpy"} <= installs("pivot") and installs("all") >= serve | relay


def test_the_hook_refuses_what_the_extra_leaves_out() -> None:
    done = run_with("relay", "import h5py")
    assert "No module named 'h5py' (not in the extra)" in done.stderr


def test_the_server_builds_with_serve_alone(tmp_path: Path) -> None:
    config = write_file(tmp_path / "serve.toml", relay_settings(tmp_path))
    done = run_with("serve", f"""
from speeddata.config import build
from speeddata.stripchart.app import create_app
app = create_app(build({str(config)!r}))
print(sorted(set(r.path for r in app.routes if r.path.startswith("/api/pivot"))))
print("h5py" in sys.modules, "fastapi" in sys.modules)
""")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['/api/pivot', '/api/pivot/{job_id}']",
                                        "False True"]


@pytest.mark.e2e
def test_replay_runs_with_relay_alone(tmp_path: Path) -> None:
    fill(tmp_path / "cache", time.time_ns() - 30 * S, 3)
    config = write_file(tmp_path / "replay.toml", relay_settings(tmp_path))
    target = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"  # nothing reads it: UDP
    done = run_with("relay", f"""
from speeddata import cli
assert cli.main(["replay", "--config", {str(config)!r}, "--start", "-2m", "--max",
                 "--to", "relay", "--target", {target!r}]) == 0
print("h5py" in sys.modules)
try:
    cli.main(["replay", "--help"])
except SystemExit as exc:
    print("help", exc.code)
""")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("replayed 303 datagrams")  # a catalogue query, then sent
    assert lines[1] == "False" and lines[-1] == "help 0"
    assert done.stderr == ""  # nothing skipped: no warning saying "skipped 0 blocks"


def test_query_and_its_sql_run_with_query_alone(tmp_path: Path) -> None:
    """``speeddata query --sql`` and ``speeddata.query(...).batches()`` with
    ``speeddata[query]`` alone: no h5py, no pandas."""
    from tests.test_pivot import fill as fill_pivot

    fill_pivot(tmp_path / "cache", seconds=5)
    config = write_file(tmp_path / "q.toml", relay_settings(tmp_path))
    done = run_with("query", f"""
import speeddata
from speeddata import cli
assert cli.main(["query", "--config", {str(config)!r}, "--start", "2026-11-18T11:06:40Z",
                 "--end", "2026-11-18T11:06:50Z", "--sql",
                 "select count(*) as n from motor"]) == 0
q = speeddata.query(start="2026-11-18T11:06:40Z", end="2026-11-18T11:06:50Z",
                    config={str(config)!r})
print(sum(b.batch.num_rows for b in q.batches("1s")))
print("h5py" in sys.modules, "pandas" in sys.modules)
""")
    assert done.returncode == 0, done.stderr
    # motor; + env and the derived power (motor.current * motor.voltage), 50 rows
    assert done.stdout.splitlines()[2:] == ["50", "105", "False False"]
