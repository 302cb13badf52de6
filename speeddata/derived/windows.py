"""Moving mean, min and max of derived signals (``mean(x, N)``, ``max(x, "10ms")``...),
free of clocks, the same bits in any split of the samples into batches: the correctly
rounded mean of the window's values (an exact integer sum), exact min and max (of equal
values, the latest). Two engines give those bits: a per-sample loop whose cost follows
the batch (the hub's batches of a few dozen samples) and a numpy one whose cost follows
batch and window (an export's chunks of thousands); ``Window`` uses the one that fits
each batch, handing its state over when it changes."""

from __future__ import annotations

import itertools
import math
from collections import deque

import numpy as np

from speeddata.derived.ops import MAX_WINDOW_SAMPLES, SCALE, Operator

SHORT_WINDOW = 64  # span windows up to this many samples: a masked matrix, else a table
VECTOR_MIN = 256  # samples a batch needs for the numpy engine
REACH = 8  # and at most this many times its samples held by the window (its cost)


class Window(Operator):
    """mean, min or max over the last ``count`` samples, or over the samples of the last
    ``span_ns`` (times in ``(t - span, t]``)."""

    def __init__(self, kind: str, count: int, span_ns: int) -> None:
        self.kind, self.count, self.span_ns = kind, count, span_ns
        self.engine: LoopWindow | VectorWindow = LoopWindow(kind, count, span_ns)

    def warmup_ns(self) -> int:
        return self.span_ns

    @property
    def overflowed(self) -> int:
        return self.engine.overflowed

    def run(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        n = len(values)  # numpy for a batch that is large, and not small beside its window
        vector = n >= VECTOR_MIN and (self.count or self._reach()) <= REACH * n
        if vector and isinstance(self.engine, LoopWindow):
            self.engine = _to_vector(self.engine)
        elif not vector and isinstance(self.engine, VectorWindow):
            self.engine = _to_loop(self.engine)
        return self.engine.run(times, values)


    def _reach(self) -> int:
        """About how many samples a window holds now."""
        engine = self.engine
        if isinstance(engine, VectorWindow):
            return len(engine.tail_x)
        return len(engine.held) if engine.held else len(getattr(engine, "tail", ()))


def _to_vector(loop: LoopWindow) -> VectorWindow:
    """The loop's state as the numpy engine holds it: what later windows can reach."""
    out = VectorWindow(loop.kind, loop.count, loop.span_ns)
    if loop.count and loop.kind != "mean":
        out.tail_x = getattr(loop, "tail", np.empty(0))
    else:
        held = list(loop.held)[-(loop.count - 1):] if loop.count > 1 else (
            [] if loop.count else list(loop.held))
        out.tail_t = np.array([h[1] for h in held], dtype=np.int64)
        out.tail_x = np.array([h[2] for h in held], dtype=np.float64)
    out.first_ns, out.last_ns, out.overflowed = loop.first_ns, loop.last_ns, loop.overflowed
    return out


def _to_loop(vector: VectorWindow) -> LoopWindow:
    """The numpy engine's held samples fed to a fresh loop (their outputs unused), then
    what the loop cannot learn from them: the first time, the latest, the overflow."""
    out = LoopWindow(vector.kind, vector.count, vector.span_ns)
    if vector.count and vector.kind != "mean":
        out.tail = vector.tail_x
    elif len(vector.tail_x):
        times = vector.tail_t if len(vector.tail_t) == len(vector.tail_x) else np.zeros(
            len(vector.tail_x), dtype=np.int64)
        out.run(times, vector.tail_x)
    out.first_ns, out.last_ns, out.overflowed = vector.first_ns, vector.last_ns, \
        vector.overflowed
    return out


class VectorWindow(Operator):
    """``Window`` vectorised over a batch: the samples a window can still reach are held
    (the last N - 1, or those of the last span) and put before the batch; each sample's
    window is then a slice of that array. Its cost per batch follows the window's
    length too: for large batches."""

    def __init__(self, kind: str, count: int, span_ns: int) -> None:
        self.kind, self.count, self.span_ns = kind, count, span_ns
        self.tail_t = np.empty(0, dtype=np.int64)
        self.tail_x = np.empty(0)
        self.first_ns: int | None = None
        self.last_ns = -(2**63)
        self.overflowed = 0  # samples a time window dropped for holding too many

    def warmup_ns(self) -> int:
        return self.span_ns

    def run(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        n = len(values)
        if not n:
            return np.empty(0)
        values = np.asarray(values, dtype=np.float64)
        x = np.concatenate([self.tail_x, values])
        k = len(self.tail_x)
        end = np.arange(k, k + n)  # each sample's window: x[lo:end + 1]
        if self.count:
            lo = end - (self.count - 1)
            full = lo >= 0
            lo = np.maximum(lo, 0)
            keep = self.count - 1
        else:
            t = np.maximum.accumulate(np.maximum(times.astype(np.int64), self.last_ns))
            if self.first_ns is None:
                self.first_ns = int(t[0])
            self.last_ns = int(t[-1])
            all_t = np.concatenate([self.tail_t, t])
            lo = np.searchsorted(all_t, t - self.span_ns, side="right")
            over = end - lo + 1 > MAX_WINDOW_SAMPLES
            lost = np.maximum.accumulate(over) | (self.overflowed > 0)
            self.overflowed += int(np.maximum(end - lo + 1 - MAX_WINDOW_SAMPLES, 0).sum())
            lo = np.maximum(lo, end - (MAX_WINDOW_SAMPLES - 1))
            full = (t - self.span_ns >= self.first_ns) & ~lost
            keep = min(len(x) - int(lo[-1]), MAX_WINDOW_SAMPLES)
            self.tail_t = all_t[len(all_t) - keep:] if keep else all_t[:0]
        self.tail_x = x[max(len(x) - keep, 0):] if keep else x[:0]
        if self.count and self.kind != "mean":
            out = _count_extreme(x, self.count, self.kind, k, n)
        elif self.kind == "mean":
            out = _mean(x, lo, end)
        else:
            out = _extreme(x, lo, end, self.kind == "min")
        return np.where(full, out, math.nan)


def _count_extreme(x: np.ndarray, count: int, kind: str, k: int, n: int) -> np.ndarray:
    """min or max over N samples: each full window's N values reduced (NaN in one: NaN)."""
    out = np.full(n, math.nan)
    if len(x) >= count:
        view = np.lib.stride_tricks.sliding_window_view(x, count)
        reduced = view.min(axis=1) if kind == "min" else view.max(axis=1)
        start = count - 1 - k  # the first sample whose window is full
        out[max(start, 0):] = reduced[max(start, 0) - start:]
    return out


def _extreme(x: np.ndarray, lo: np.ndarray, end: np.ndarray, smaller: bool) -> np.ndarray:
    """min or max of each ``x[lo:end + 1]`` (short windows: rows of a matrix; long ones:
    a sparse table, a level per power of two), NaN when one is NaN; of equal values (0.0
    and -0.0) the latest, as a queue of candidates gives."""
    fn = np.minimum if smaller else np.maximum
    length = end - lo + 1
    longest = int(length.max())
    if longest <= SHORT_WINDOW:  # each window a row of a matrix, the samples before masked
        neutral = math.inf if smaller else -math.inf
        padded = np.concatenate([np.full(longest - 1, neutral), x])
        rows = np.lib.stride_tricks.sliding_window_view(padded, longest)[end]
        rows = np.where(np.arange(longest) >= (longest - length)[:, None], rows, neutral)
        out = rows.min(axis=1) if smaller else rows.max(axis=1)
    else:
        out = _sparse(fn, x, lo, end, length)
    zero = out == 0.0
    if zero.any():  # the sign of the latest zero of the window
        positions = np.where(x == 0.0, np.arange(len(x)), -1)
        latest = np.maximum.accumulate(positions)[end[zero]]
        out[zero] = x[latest]
    return out


def _sparse(fn: np.ufunc, x: np.ndarray, lo: np.ndarray, end: np.ndarray,
            length: np.ndarray) -> np.ndarray:
    """fn over each ``x[lo:end + 1]``, by a level of pairs per power of two."""
    levels = [x]
    while (1 << len(levels)) <= int(length.max()):
        step = 1 << (len(levels) - 1)
        last = levels[-1]
        levels.append(fn(last[:-step], last[step:]))
    power = np.zeros(len(length), dtype=np.int64)
    for level in range(1, len(levels)):
        power[length >= (1 << level)] = level
    out = np.empty(len(lo))
    for level in np.unique(power).tolist():
        rows = power == level
        table = levels[level]
        out[rows] = fn(table[lo[rows]], table[end[rows] - (1 << level) + 1])
    return out


def _mean(x: np.ndarray, lo: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The exactly rounded mean of each ``x[lo:end + 1]``: its values' exact sum (Python
    integers, in units of the smallest power of two among them) over their count, a
    correctly rounded integer division; NaN with a NaN or both infinities, else an
    infinity's sign."""
    finite = np.isfinite(x)
    odd = not finite.all()
    if odd:  # NaN and infinities counted per window
        prefix = [np.concatenate(([0], np.cumsum(m, dtype=np.int64)))
                  for m in (np.isnan(x), x == math.inf, x == -math.inf)]
        nans, pos, neg = (p[end + 1] - p[lo] for p in prefix)
    mantissa, exponent = np.frexp(np.where(finite, x, 0.0) if odd else x)
    whole = (mantissa * 2.0**53).astype(np.int64)  # x = whole * 2**(exponent - 53)
    nonzero = whole != 0
    base = int((exponent[nonzero] - 53).min()) if nonzero.any() else 0
    shifts = np.where(nonzero, exponent - 53 - base, 0).astype(np.int64)
    # Python integers in plain lists: numpy's object arrays call the same operators,
    # one element at a time, at a higher cost per call
    sums = list(itertools.accumulate(
        (m << k for m, k in zip(whole.tolist(), shifts.tolist(), strict=True)), initial=0))
    pairs = zip(lo.tolist(), (end + 1).tolist(), strict=True)
    if base < 0:
        means = [(sums[e] - sums[b]) / ((e - b) << -base) for b, e in pairs]
    else:
        means = [((sums[e] - sums[b]) << base) / (e - b) for b, e in pairs]
    out = np.asarray(means, dtype=np.float64)
    if not odd:
        return out
    out = np.where(pos > 0, math.inf, out)
    out = np.where(neg > 0, -math.inf, out)
    return np.where((nans > 0) | ((pos > 0) & (neg > 0)), math.nan, out)


class LoopWindow(Operator):
    """``Window`` a sample at a time: a deque of the held samples, one of the min/max
    candidates, an exact integer sum; its cost per batch follows the batch only: for
    small batches (the hub's)."""

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


