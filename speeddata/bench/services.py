"""Running speeddata services and measuring them from the outside (``/proc``).

``speeddata bench relay`` starts its relay with these, sealed from a running instance
(ports and groups of its own); the tests and benchmarks (``tests/harness/``) start their
services with them too.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speeddata import status
from speeddata.config import Group

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


_PORTS_GIVEN: set[int] = set()  # the ports this process handed out: never one twice


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port the kernel says is free now; within one process never the same twice, as
    the kernel may hand a just-released port out again (CI saw control and decimated
    groups of one test get the same port)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


_GIVEN: set[str] = set()  # the groups this process handed out: never one twice


def fresh_group() -> Group:
    """A multicast group and port no other run (or a running ./start) is likely to use:
    never 239.255.26.x, the defaults' /24, and a port from the kernel's ephemeral range
    (above the defaults' 26000-26003); within one process, never the same group twice."""
    while True:
        host = f"239.255.{random.randint(100, 250)}.{random.randint(1, 250)}"
        if host not in _GIVEN:
            _GIVEN.add(host)
            return Group(host, free_port())


def default_settings(work: Path, schemas: Path) -> dict[str, dict[str, Any]]:
    """A benchmark's config, sealed from a running instance: its own port and groups, the
    control group too (left at its default, a benchmark's tags would reach ./start's)."""
    return {
        "channels": {"dir": str(schemas), "legacy": []},
        "cache": {"dir": str(work / "cache")},
        "relay": {"host": "127.0.0.1", "port": free_port()},
        "multicast": {"full": str(fresh_group()), "decimated": str(fresh_group()),
                      "control": str(fresh_group()), "interface": "127.0.0.1"},
        "web": {"host": "127.0.0.1", "port": free_port(socket.SOCK_STREAM)},
    }


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log: Path

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def rss_bytes(pid: int) -> int:
    """The process's resident memory now (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start(name: str, config: Path, work: Path, *args: str, cpu: int | None = None,
          tree: str | None = None) -> Service:
    """Start ``speeddata <name>`` and wait until it reports running in its status file;
    ``tree``: run the speeddata of that checkout instead (a baseline to compare with)."""
    from speeddata.config import build

    log = work / f"{name}.log"
    command = [sys.executable, "-m", "speeddata", name, "--config", str(config), "-q", *args]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    with log.open("w") as out:
        env = None if tree is None else {**os.environ, "PYTHONPATH": tree}
        # run in the work folder: 'python -m' puts its folder first on sys.path, so from a
        # checkout it would import that checkout whatever PYTHONPATH says
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   cwd=work)
    cfg = build(config)
    deadline = time.monotonic() + 30

    def ready() -> bool:
        if not status.read_all(cfg.cache.dir).get(name, {}).get("running"):
            return False
        return name != "serve" or status.serve_accepting(cfg.cache.dir)

    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return Service(name, process, log)
