"""Stopping on SIGTERM (systemd, ``speeddata up``, ``./stop``) and SIGINT (Ctrl-C): the
same two signals for every long-running command, set up in one place."""

from __future__ import annotations

import signal
from collections.abc import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signal(stop: Callable[[], None]) -> None:
    """Call ``stop()`` on SIGTERM or SIGINT (from the signal handler: it must be quick)."""
    for sig in SIGNALS:
        signal.signal(sig, lambda *_: stop())


class StopFlag:
    """Whether a stop was asked: call it. Set by ``set()``, or by a signal once
    ``install()``-ed; a loop polls it between two pieces of work."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def __call__(self) -> bool:
        return self._set

    def install(self) -> StopFlag:
        on_stop_signal(self.set)
        return self


def stop_flag() -> StopFlag:
    """A flag that SIGTERM and SIGINT set."""
    return StopFlag().install()
