"""Stateful operators of derived signals, free of clocks: each takes a batch of sample
times (int64 ns, the source's) and float64 values and keeps what the next batch needs,
so that one batch or any split of it into several gives bit-identical results.

Why they are exact across splits: window means are the correctly rounded mean of the
window's values (an exact integer sum: order does not matter), min and max are exact,
deriv and integral are elementwise or a sequential running sum, lowpass a scalar loop.
Windows follow the sample order; a time that goes back counts as the latest time before
it. A window is NaN until it is full (N samples seen, or samples seen from its span
before): a computation that starts later (an export, a restarted server) agrees with
one that started earlier as soon as both are full.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

MAX_WINDOW_SAMPLES = 100_000  # samples one window holds: N, or what a time span holds
SCALE = 1074  # every finite float64 is an integer multiple of 2**-1074


class Operator:
    count = 0

    def run(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def warmup_ns(self) -> int:
        return 0


class Window(Operator):
    """mean, min or max over the last ``count`` samples, or over the samples of the last
    ``span_ns`` (times in ``(t - span, t]``)."""

    def __init__(self, kind: str, count: int, span_ns: int) -> None:
        self.kind, self.count, self.span_ns = kind, count, span_ns
        self.held: deque[tuple[int, int, float, int]] = deque()  # (n, time, value, exact)
        self.extreme: deque[tuple[int, float]] = deque()  # min/max candidates (n, value)
        self.n = 0  # samples seen
        self.first_ns: int | None = None
        self.last_ns = -(2**63)
        self.exact = 0  # the held finite values' sum, in units of 2**-1074
        self.nans = self.pos = self.neg = 0
        self.overflowed = 0  # samples a time window dropped for holding too many

    def warmup_ns(self) -> int:
        return self.span_ns

    def _evict(self) -> None:
        _, _, value, exact = self.held.popleft()
        if value != value:
            self.nans -= 1
        elif value == math.inf:
            self.pos -= 1
        elif value == -math.inf:
            self.neg -= 1
        else:
            self.exact -= exact

    def run(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        if self.count and self.kind != "mean":
            return self._count_extreme(values)
        if self.kind == "mean":
            return self._mean(times, values)
        return self._general(times, values)

    def _count_extreme(self, values: np.ndarray) -> np.ndarray:
        """min or max over N samples, in numpy: each window's N values reduced (NaN in
        one: NaN), the last N - 1 held for the next batch."""
        if not hasattr(self, "tail"):
            self.tail = np.empty(0)
        n, tail = self.count, self.tail
        ext = np.concatenate([tail, values])
        out = np.full(len(values), math.nan)
        if len(ext) >= n:
            view = np.lib.stride_tricks.sliding_window_view(ext, n)
            reduced = view.min(axis=1) if self.kind == "min" else view.max(axis=1)
            start = n - 1 - len(tail)  # the first sample whose window is full
            out[max(start, 0):] = reduced[max(start, 0) - start:]
        self.tail = ext[max(len(ext) - (n - 1), 0):] if n > 1 else ext[:0]
        return out

    def _mean(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The exactly rounded mean: the held values' sum as an integer of 2**-1074."""
        out = np.empty(len(values))
        held, count, span = self.held, self.count, self.span_ns
        exact_sum, last, first = self.exact, self.last_ns, self.first_ns
        odd = [self.nans, self.pos, self.neg]  # held NaNs, +inf, -inf
        limit = count or MAX_WINDOW_SAMPLES
        inf, nan = math.inf, math.nan
        for i, (t, x) in enumerate(zip(times.tolist(), values.tolist(), strict=True)):
            if t < last:
                t = last
            last = t
            if first is None:
                first = t
            if x - x == 0.0:  # finite
                top, bottom = x.as_integer_ratio()
                exact = top << (SCALE + 1 - bottom.bit_length())
                exact_sum += exact
                held.append((-1, t, x, exact))
            else:
                kind = 0 if x != x else 1 if x > 0 else 2
                odd[kind] += 1
                held.append((kind, t, x, 0))
            while len(held) > limit or (span and held[0][1] <= t - span):
                if len(held) > limit and span:
                    self.overflowed += 1
                kind, _, _, exact = held.popleft()
                if kind < 0:
                    exact_sum -= exact
                else:
                    odd[kind] -= 1
            full = len(held) == count if count else (first <= t - span and not self.overflowed)
            if not full or odd[0] or (odd[1] and odd[2]):
                out[i] = nan
            elif odd[1] or odd[2]:
                out[i] = inf if odd[1] else -inf
            else:
                out[i] = exact_sum / (len(held) << SCALE)
        self.exact, self.last_ns, self.first_ns = exact_sum, last, first
        self.nans, self.pos, self.neg = odd
        return out

    def _general(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.empty(len(values))
        held, extreme, mean = self.held, self.extreme, self.kind == "mean"
        smaller = self.kind == "min"
        for i, (t, x) in enumerate(zip(times.tolist(), values.tolist(), strict=True)):
            t = self.last_ns = max(t, self.last_ns)
            if self.first_ns is None:
                self.first_ns = t
            self.n += 1
            exact = 0
            if x != x:
                self.nans += 1
            elif x == math.inf:
                self.pos += 1
            elif x == -math.inf:
                self.neg += 1
            elif mean:
                top, bottom = x.as_integer_ratio()
                exact = top << (SCALE + 1 - bottom.bit_length())
                self.exact += exact
            elif not mean:
                while extreme and (extreme[-1][1] >= x if smaller else extreme[-1][1] <= x):
                    extreme.pop()
                extreme.append((self.n, x))
            held.append((self.n, t, x, exact))
            if self.count:
                while len(held) > self.count:
                    self._evict()
                full = len(held) == self.count
            else:
                while held[0][1] <= t - self.span_ns:
                    self._evict()
                while len(held) > MAX_WINDOW_SAMPLES:
                    self._evict()
                    self.overflowed += 1
                full = self.first_ns <= t - self.span_ns and not self.overflowed
            oldest = held[0][0]
            while extreme and extreme[0][0] < oldest:
                extreme.popleft()
            if not full or self.nans:
                out[i] = math.nan
            elif mean:
                out[i] = (math.nan if self.pos and self.neg else math.inf if self.pos else
                          -math.inf if self.neg else self.exact / (len(held) << SCALE))
            elif self.pos or self.neg:
                out[i] = (-math.inf if self.neg else extreme[0][1] if extreme else math.inf
                          ) if smaller else (math.inf if self.pos else
                                             extreme[0][1] if extreme else -math.inf)
            else:
                out[i] = extreme[0][1]
        return out


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


class Integral(Operator):
    """Trapezoid rule, per second, from 0 at the first sample computed; a NaN step (an
    input NaN) adds nothing."""

    def __init__(self) -> None:
        self.last: tuple[int, float] | None = None
        self.total = 0.0

    def run(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        if not len(values):
            return np.empty(0)
        before_t = np.empty(len(times), dtype=np.int64)
        before_x = np.empty(len(values))
        before_t[1:], before_x[1:] = times[:-1], values[:-1]
        before_t[0], before_x[0] = self.last if self.last else (times[0], values[0])
        steps = (values + before_x) * 0.5 * ((times - before_t).astype(np.float64) / 1e9)
        steps[np.isnan(steps)] = 0.0
        sums = np.cumsum(np.concatenate(([self.total], steps)))[1:]  # sequential: exact
        self.total = float(sums[-1])
        self.last = (int(times[-1]), float(values[-1]))
        return sums


class Lowpass(Operator):
    """First order, time constant ``tau`` seconds, on the sample times:
    y += (1 - exp(-dt/tau)) * (x - y), y starting at the first value; a NaN holds y."""

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self.y: float | None = None
        self.last_ns = 0

    def warmup_ns(self) -> int:
        return int(min(self.tau * 20, 3600.0) * 1e9)  # exp(-20): below a float's precision

    def run(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.empty(len(values))
        y, last, tau = self.y, self.last_ns, self.tau
        for i, (t, x) in enumerate(zip(times.tolist(), values.tolist(), strict=True)):
            if x == x:
                if y is None or y != y:
                    y = x
                else:
                    y += -math.expm1(-max(t - last, 0) / 1e9 / tau) * (x - y)
            last = t
            out[i] = math.nan if y is None else y
        self.y, self.last_ns = y, last
        return out


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
