"""``speeddata up``: run the services as child processes, restart the ones that crash."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speeddata.shutdown import on_stop_signal

log = logging.getLogger("speeddata.up")

STOP_GRACE_SECONDS = 10.0
SLOW_START_SECONDS = 30.0  # waiting longer for the services is said once


class Backoff:
    """Restart delays: 0.5 s doubling to 30 s; reset after a child ran 60 s."""

    def __init__(self, first: float = 0.5, most: float = 30.0, healthy: float = 60.0) -> None:
        self.first, self.most, self.healthy = first, most, healthy
        self.delay = first

    def after_exit(self, ran_seconds: float) -> float:
        if ran_seconds >= self.healthy:
            self.delay = self.first
        delay = self.delay
        self.delay = min(self.most, self.delay * 2)
        return delay


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    started: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    backoff: Backoff = field(default_factory=Backoff)


# What speeddata's commands exit with for an error a restart cannot fix (configuration,
# a port taken); runtime failures exit 1 and are restarted. The error's type decides
# (``SpeeddataError.exit_code``); the systemd units say the same (RestartPreventExitStatus).
USAGE_ERROR = 2


def child_argv(name: str, sections: Sequence[str], flags: Mapping[str, object],
               config: Path | None = None, python: str = sys.executable) -> list[str]:
    """A child's command line: ``speeddata NAME`` with the same config file and those of
    ``flags`` (``up``'s parsed settings, as ``config.add_arguments`` names them:
    ``cfg__<section>__<key>``) that belong to one of its ``sections``."""
    argv = ["--config", str(config)] if config else []
    for dest, value in flags.items():
        if dest.startswith("cfg__"):
            _, section, key = dest.split("__")
            if section in sections:
                argv += [f"--{section}-{key}".replace("_", "-"), str(value)]
    return [python, "-m", "speeddata", name, *argv]


class Supervisor:
    """Runs ``children``; ``later`` (sources: the demo) start once ``ready`` says the
    services they send to are bound, and never when one of those fails to start, so a
    failed ``up`` sends nothing (to a running instance on the same port least of all)."""

    def __init__(self, children: list[Child], later: list[Child] | None = None,
                 ready: Callable[[list[Child]], bool] | None = None) -> None:
        self.children = children
        self.later = later or []
        self.ready = ready or (lambda _: True)
        self._stopping = False

    def install_signal_handlers(self) -> None:
        on_stop_signal(self.stop)

    def stop(self) -> None:
        self._stopping = True

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(child.argv)
        child.started = time.monotonic()
        child.restart_at = None
        log.info("started %s (pid %d)", child.name, child.process.pid)

    def run(self) -> int:
        for child in self.children:
            self._start(child)
        if self.later:
            failed = self._wait_ready()
            if failed is not None or self._stopping:
                self._stop_all()
                return failed or 0
            for child in self.later:
                self._start(child)
            self.children += self.later
        while not self._stopping:
            now = time.monotonic()
            for child in self.children:
                if child.process is not None and child.restart_at is None:
                    code = child.process.poll()
                    if code == USAGE_ERROR:  # bad configuration, port taken: not transient
                        log.error("%s cannot start (exit code %d: its error is above); "
                                  "stopping everything", child.name, code)
                        self._stop_all()
                        return code
                    if code is not None:
                        delay = child.backoff.after_exit(now - child.started)
                        child.restart_at = now + delay
                        log.error("%s exited with code %s; restarting in %.1f s",
                                  child.name, code, delay)
                elif child.restart_at is not None and now >= child.restart_at:
                    child.restarts += 1
                    self._start(child)
            time.sleep(0.1)
        self._stop_all()
        return 0

    def _wait_ready(self) -> int | None:
        """Wait until ``ready``; the exit code to end with if a child ends first."""
        began = time.monotonic()
        said = False
        names = ", ".join(c.name for c in self.later)
        while not self._stopping and not self.ready(self.children):
            for child in self.children:
                code = child.process.poll() if child.process else None
                if code is not None:
                    log.error("%s could not start (exit code %d: its error is above); stopping "
                              "everything, %s not started", child.name, code, names)
                    return code if code > 0 else 1  # 0 or a signal: still a failure
            if not said and time.monotonic() - began > SLOW_START_SECONDS:
                log.warning("still waiting for %s to run; %s starts then",
                            ", ".join(c.name for c in self.children), names)
                said = True
            time.sleep(0.1)
        return None

    def _stop_all(self) -> None:
        running = [c for c in self.children if c.process and c.process.poll() is None]
        for child in reversed(running):  # sources first, the relay last
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in running:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                log.error("%s did not stop in %.0f s; killing it", child.name, STOP_GRACE_SECONDS)
                child.process.kill()  # type: ignore[union-attr]
                child.process.wait()  # type: ignore[union-attr]
            log.info("stopped %s", child.name)
        log.info("all stopped (pid %d)", os.getpid())
