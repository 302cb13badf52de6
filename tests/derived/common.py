"""Channels the derived tests compute from: two sines and a status word, and a slow one."""

from __future__ import annotations

import numpy as np

from speeddata.derived import files, live
from speeddata.schemas import Registry, channel_from_schema

PAIR = {"type": "record", "name": "pair", "fields": [
    {"name": "time", "type": "long"}, {"name": "a", "type": "double", "unit": "bar"},
    {"name": "b", "type": "double", "unit": "bar"}, {"name": "word", "type": "long"},
    {"name": "flag", "type": "boolean"}]}
SLOW = {"type": "record", "name": "slow", "fields": [
    {"name": "time", "type": "long"}, {"name": "x", "type": "double"}]}
REGISTRY = Registry([channel_from_schema(PAIR, limits=True),
                     channel_from_schema(SLOW, limits=True)])
T0 = 1_795_000_000 * 10**9


def sines(n: int, rate: float = 1000.0, t0: int = T0) -> dict[str, np.ndarray]:
    """``n`` samples of two sines (37 Hz and 5 Hz) at ``rate``, a counter word and a flag."""
    times = t0 + (np.arange(n) * (1e9 / rate)).astype(np.int64)
    seconds = (times - T0) / 1e9
    return {"time": times, "a": np.sin(2 * np.pi * 37 * seconds) * 3.0,
            "b": np.cos(2 * np.pi * 5 * seconds), "word": np.arange(n, dtype=np.int64),
            "flag": np.arange(n) % 3 == 0}


def derived(text: str, registry: Registry = REGISTRY) -> live.DerivedSet:
    """A DerivedSet of one derived channel file's text; DerivedError if it is refused."""
    definition = files.parse(text, "<test>")
    return live.DerivedSet([live.compile_channel(definition, registry)])


def toml(name: str, **signals: str) -> str:
    lines = [f'name = "{name}"']
    for key, expression in signals.items():
        lines += [f"[signals.{key}]", f"expression = {expression!r}", 'unit = "bar"']
    return "\n".join(lines) + "\n"
