"""Helpers shared by the tests: timeouts, waiting on conditions, real relay processes."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speeddata import status
from speeddata.bench.services import free_port, fresh_group
from speeddata.config import Group, write_file
from speeddata.schemas import copy_demo_channels

PROJECT = Path(__file__).resolve().parents[1]


def _demo_channels() -> Path:
    """The demo channels, copied once for the session: ``schemas/`` of the checkout
    holds them, and also the channels a ./start of the checkout keeps there, which no
    test may read or write."""
    folder = Path(tempfile.mkdtemp(prefix="speeddata-demo-channels-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return copy_demo_channels(folder)


SCHEMAS = _demo_channels()  # the demo channels alone, never the user's directory
# One scalable timeout: raise SPEEDDATA_TEST_TIMEOUT on a slow machine.
TIMEOUT = float(os.environ.get("SPEEDDATA_TEST_TIMEOUT", "20"))


def wait_until(condition: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    """Poll ``condition`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@dataclass
class RelayProcess:
    process: subprocess.Popen
    config_path: Path
    cache_dir: Path
    port: int
    full: Group
    decimated: Group
    log_path: Path

    def snapshot(self) -> dict[str, Any]:
        return status.read_all(self.cache_dir).get("relay", {})

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text()


def relay_settings(tmp: Path, **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A test's config, sealed: its own ports and groups, the control group too (the
    defaults are a running ./start's; tests/seal.py fails a test that uses them)."""
    settings: dict[str, dict[str, Any]] = {
        "channels": {"dir": str(SCHEMAS), "legacy": ["example"]},
        "cache": {"dir": str(tmp / "cache"), "fsync_seconds": 0.2},
        "relay": {"host": "127.0.0.1", "port": 0},
        "multicast": {"full": str(fresh_group()), "decimated": str(fresh_group()),
                      "control": str(fresh_group()), "interface": "127.0.0.1"},
        "web": {"host": "127.0.0.1", "port": free_port(socket.SOCK_STREAM)},
        "exports": {"dir": str(tmp / "exports")},
    }
    for section, values in extra.items():
        settings.setdefault(section, {}).update(values)
    return settings


def sealed_flags() -> list[str]:
    """Command-line flags giving a command its own groups, for tests that run one with
    no config file."""
    return [flag for key in ("full", "decimated", "control")
            for flag in (f"--multicast-{key}", str(fresh_group()))]


def start_relay(tmp: Path, settings: dict[str, dict[str, Any]], *args: str) -> RelayProcess:
    """Run ``speeddata relay`` as a real process and wait until it reports running."""
    config_path = write_file(tmp / "relay.toml", settings)
    cache_dir = Path(settings["cache"]["dir"])
    log_path = tmp / f"relay-{time.monotonic_ns()}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "speeddata", "relay", "--config", str(config_path), *args],
            stdout=log, stderr=subprocess.STDOUT,
        )

    def ready() -> dict[str, Any] | None:
        if process.poll() is not None:
            raise AssertionError(f"relay exited with {process.returncode}:\n{log_path.read_text()}")
        snap = status.read_all(cache_dir).get("relay")
        return snap if snap and snap["running"] and snap["pid"] == process.pid else None

    snap = wait_until(ready, what="the relay's status file")
    from speeddata.configvalues import parse_group

    return RelayProcess(
        process, config_path, cache_dir, int(snap["listen"].rsplit(":", 1)[1]),
        parse_group(settings["multicast"]["full"]), parse_group(settings["multicast"]["decimated"]),
        log_path,
    )


@dataclass
class ServeProcess:
    process: subprocess.Popen
    url: str
    log_path: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text()


def start_serve(tmp: Path, config_path: Path) -> ServeProcess:
    """Run ``speeddata serve`` as a real process and wait until it answers HTTP."""
    import urllib.error
    import urllib.request

    from speeddata.config import build

    cfg = build(config_path)
    log_path = tmp / f"serve-{time.monotonic_ns()}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "speeddata", "serve", "--config", str(config_path)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{cfg.web.port}/"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url + "api/channels", timeout=1) as response:
                return response.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # up, and asking for its token
        except OSError:
            return False

    wait_until(ready, what="the stripchart server")
    return ServeProcess(process, url, log_path)



def run_or_skip(steps: list[list[str]], what: str) -> None:
    """Run each setup command (``ip netns``, ``nft`` ...); skip the test, saying which
    command failed and why, where this machine cannot do ``what`` (not root, no tool)."""
    import pytest

    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True)
        except FileNotFoundError as exc:
            pytest.skip(f"cannot make {what} here: {exc.filename} is missing "
                        "(./install --dev installs it)")
        if done.returncode:
            pytest.skip(f"cannot make {what} here ({' '.join(step)}: {done.stderr.strip()}); "
                        "run as root on Linux")
