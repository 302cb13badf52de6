"""Stateful operators of derived signals, free of clocks: each takes a batch of sample
times (int64 ns, the source's) and float64 values and keeps what the next batch needs,
so that one batch or any split of it into several gives bit-identical results.

Why they are exact across splits: window means are the correctly rounded mean of the
window's values (an exact integer sum: order does not matter), min and max are exact
(of equal values, the latest),
deriv and integral are elementwise or a sequential running sum, lowpass a scalar loop.
Windows follow the sample order; a time that goes back counts as the latest time before
it. A window is NaN until it is full (N samples seen, or samples seen from its span
before); integral and lowpass start afresh at each UTC boundary of their reset period
and are NaN until one has passed: a computation that starts later (an export, a
restarted server) agrees with one that started earlier as soon as both are full.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

MAX_WINDOW_SAMPLES = 100_000  # samples one window holds: N, or what a time span holds
SCALE = 1074  # every finite float64 is an integer multiple of 2**-1074
MARGIN_NS = 2 * 10**9  # receive time vs sample time, where an export looks back


class Operator:
    count = 0

    def run(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def warmup_ns(self) -> int:
        return 0

    def warm_from(self, start_ns: int) -> int:
        """Where an export reads from so this is full at ``start_ns`` (count windows
        aside: their samples are counted in the cache)."""
        return start_ns - self.warmup_ns() - MARGIN_NS if self.warmup_ns() else start_ns


class Deriv(Operator):
    """Per second, on the sample times: (x[i] - x[i-1]) / ((t[i] - t[i-1]) / 1e9); NaN at
    the first sample."""

    def __init__(self) -> None:
        self.last: tuple[int, float] | None = None

    def run(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        if not len(values):
            return np.empty(0)
        before_t = np.empty(len(times), dtype=np.int64)
        before_x = np.empty(len(values))
        before_t[1:], before_x[1:] = times[:-1], values[:-1]
        before_t[0], before_x[0] = self.last if self.last else (times[0], math.nan)
        self.last = (int(times[-1]), float(values[-1]))
        return (values - before_x) / ((times - before_t).astype(np.float64) / 1e9)


DEFAULT_RESET_NS = 3600 * 10**9  # integral and lowpass start afresh each UTC hour


class Anchored(Operator):
    """An operator whose state starts afresh at each multiple of ``reset_ns`` since the
    Unix epoch (UTC hours, days...), on the sample times (a time that goes back counts
    as the latest before it). Its values are NaN until the computation has seen a
    boundary pass (a sample of one period after a sample of the one before): from then
    on, any computation that has seen that boundary gives the same bits, live or
    exported (an export reads from before the boundary before its range)."""

    def __init__(self, reset_ns: int = DEFAULT_RESET_NS) -> None:
        self.reset_ns = reset_ns
        self.period: int | None = None  # the period of the last sample
        self.valid = False
        self.latest = -(2**63)

    def warm_from(self, start_ns: int) -> int:
        boundary = (start_ns - MARGIN_NS) // self.reset_ns * self.reset_ns
        return boundary - MARGIN_NS

    def _periods(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each sample starts a period afresh, and whether its value is known."""
        mono = np.maximum.accumulate(np.maximum(times.astype(np.int64), self.latest))
        self.latest = int(mono[-1])
        period = mono // self.reset_ns
        before = np.empty_like(period)
        before[1:] = period[:-1]
        before[0] = period[0] if self.period is None else self.period
        fresh = period != before
        valid = np.logical_or.accumulate(fresh) | self.valid
        self.period, self.valid = int(period[-1]), bool(valid[-1])
        return fresh, valid


class Integral(Anchored):
    """Trapezoid rule, per second, from 0 at the first sample of each period (a UTC
    hour by default); a NaN step (an input NaN) adds nothing."""

    def __init__(self, reset_ns: int = DEFAULT_RESET_NS) -> None:
        super().__init__(reset_ns)
        self.last: tuple[int, float] | None = None
        self.total = 0.0

    def run(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        if not len(values):
            return np.empty(0)
        fresh, valid = self._periods(times)
        before_t = np.empty(len(times), dtype=np.int64)
        before_x = np.empty(len(values))
        before_t[1:], before_x[1:] = times[:-1], values[:-1]
        before_t[0], before_x[0] = self.last if self.last else (times[0], values[0])
        steps = (values + before_x) * 0.5 * ((times - before_t).astype(np.float64) / 1e9)
        steps[np.isnan(steps) | fresh] = 0.0
        sums = np.empty(len(values))
        starts = [0, *np.flatnonzero(fresh).tolist(), len(values)]
        total = self.total
        for lo, hi in itertools.pairwise(starts):
            if hi > lo:  # sequential running sums: the same bits in any split
                if fresh[lo]:
                    total = 0.0
                sums[lo:hi] = np.cumsum(np.concatenate(([total], steps[lo:hi])))[1:]
                total = float(sums[hi - 1])
        self.total = total
        self.last = (int(times[-1]), float(values[-1]))
        return np.where(valid, sums, math.nan)


class Lowpass(Anchored):
    """First order, time constant ``tau`` seconds, on the sample times:
    y += (1 - exp(-dt/tau)) * (x - y), y starting at the first value of each period (a
    UTC hour by default); a NaN holds y."""

    def __init__(self, tau: float, reset_ns: int = DEFAULT_RESET_NS) -> None:
        super().__init__(reset_ns)
        self.tau = tau
        self.y: float | None = None
        self.last_ns: int | None = None

    def run(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        if not len(values):
            return np.empty(0)
        fresh, valid = self._periods(times)
        before = np.empty(len(times), dtype=np.int64)
        before[1:] = times[:-1]
        before[0] = times[0] if self.last_ns is None else self.last_ns
        gain = -np.expm1(-np.maximum(times - before, 0).astype(np.float64) / 1e9 / self.tau)
        out = np.empty(len(values))
        y = self.y
        for i, (x, k, new) in enumerate(zip(values.tolist(), gain.tolist(), fresh.tolist(),
                                            strict=True)):
            if new:
                y = None
            if x == x:
                y = x if y is None else y + k * (x - y)
            out[i] = math.nan if y is None else y
        self.y, self.last_ns = y, int(times[-1])
        return np.where(valid, out, math.nan)


class Hold:
    """Another channel's signal at a driving channel's samples: its last value at or
    before each sample's time (NaN before it has one). Fed that channel's samples as
    they come; holds those after the last driving sample (bounded, oldest dropped)."""

    LIMIT = MAX_WINDOW_SAMPLES

    def __init__(self) -> None:
        self.times = np.empty(0, dtype=np.int64)  # non-decreasing (a time back: the latest)
        self.values = np.empty(0)
        self.latest = -(2**63)
        self.dropped = 0

    def feed(self, times: np.ndarray, values: np.ndarray) -> None:
        if not len(times):
            return
        mono = np.maximum.accumulate(np.maximum(times.astype(np.int64), self.latest))
        self.latest = int(mono[-1])
        self.times = np.concatenate([self.times, mono])
        self.values = np.concatenate([self.values, values.astype(np.float64)])
        if len(self.times) > self.LIMIT:
            self.dropped += len(self.times) - self.LIMIT
            self.times, self.values = self.times[-self.LIMIT:], self.values[-self.LIMIT:]

    def at(self, times: np.ndarray) -> np.ndarray:
        index = np.searchsorted(self.times, times, side="right") - 1
        out = np.where(index >= 0, self.values[np.maximum(index, 0)] if len(self.values)
                       else math.nan, math.nan)
        if len(index) and len(self.times):  # what later samples need: from the last used
            keep = max(int(np.maximum.accumulate(index)[-1]), 0)
            self.times, self.values = self.times[keep:], self.values[keep:]
        return out
