"""Which signals are out of their limits now, and since when (``GET /api/alarms``).

A signal's state is the level of its newest sample; "since" is the time of the first
sample of the run of that level that is still going on. Pure: fed with the samples the
hub keeps, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from speeddata.schemas import Limits, Registry

LEVELS = ("", "warn", "alarm")


@dataclass
class State:
    level: str = ""
    since_ns: int = 0
    value: float = float("nan")


class Alarms:
    def __init__(self, registry: Registry) -> None:
        self.limits: dict[str, Limits] = {
            f"{c.name}.{s.name}": s.limits for c in registry for s in c.signals if s.limits}
        self.states = {name: State() for name in self.limits}

    def update(self, signal: str, times: np.ndarray, values: np.ndarray) -> None:
        """Fold in a batch of one signal's samples (any order)."""
        limits = self.limits.get(signal)
        if limits is None or not len(times):
            return
        order = np.argsort(times, kind="stable")
        times, values = times[order], values[order]
        levels = np.zeros(len(values), dtype=np.int8)
        for code, bounds in ((1, limits.warn), (2, limits.alarm)):
            if bounds is not None:
                outside = (values < bounds[0]) | (values > bounds[1])
                levels[outside] = code
        state = self.states[signal]
        newest = int(levels[-1])
        changed = np.flatnonzero(levels != newest)
        run_start = int(changed[-1]) + 1 if len(changed) else 0
        if run_start > 0 or LEVELS[newest] != state.level:
            state.since_ns = int(times[run_start])
        state.level = LEVELS[newest]
        state.value = float(values[-1])

    def active(self) -> list[dict[str, Any]]:
        """The signals out of limits now, alarms first, the longest-standing first."""
        out = [{"signal": name, "level": state.level, "value": state.value,
                "since_ms": state.since_ns / 1e6, "limits": self.limits[name].as_json()}
               for name, state in self.states.items() if state.level]
        return sorted(out, key=lambda a: (a["level"] != "alarm", a["since_ms"]))
