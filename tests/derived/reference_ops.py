"""The windows of speeddata/derived/ops.py as they were first written (a Python loop a
sample, a deque of candidates, an exact integer sum): the reference the vectorised ones
are compared with, bit for bit (tests/derived/test_ops.py)."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from speeddata.derived.ops import MAX_WINDOW_SAMPLES, SCALE, Operator


class LoopWindow(Operator):
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


