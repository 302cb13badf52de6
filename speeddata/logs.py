"""Logging set-up shared by every command, and a throttle for logging bad input."""

from __future__ import annotations

import logging
import sys


def setup(verbosity: int = 0, quiet: bool = False) -> None:
    """INFO by default (what started, opened, closed, was repaired or deleted);
    ``-v`` adds DEBUG; ``-q`` shows warnings and errors only."""
    level = logging.WARNING if quiet else logging.DEBUG if verbosity > 0 else logging.INFO
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        force=True,
    )


class Throttle:
    """Allows one event per ``interval`` seconds of the clock passed in."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = float("-inf")

    def ready(self, now: float) -> bool:
        if now >= self._next:
            self._next = now + self.interval
            return True
        return False
