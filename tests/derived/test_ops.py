"""Stateful operators: the whole range in one batch and in any split of it give the same
bits; means are the exactly rounded mean of the window; windows are NaN until full."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from speeddata.derived import ops, windows
from speeddata.derived.expr import Batch
from tests.derived.common import derived, sines, toml

EXPRESSIONS = {
    "diff": "pair.a - pair.b",
    "m5": "mean(pair.a, 5)",
    "mt": 'mean(pair.a - pair.b, "7ms")',
    "lo": "min(pair.a, 4)",
    "hi": 'max(pair.b, "3ms")',
    "d": "deriv(pair.a)",
    "i": 'integral(pair.a * pair.b, "1s")',
    "f": 'lowpass(pair.a, 0.005, "1s")',
    "i2": "integral(pair.b)",
    "s": "sin(pair.a) * exp(pair.b) + bit(pair.word, 1)",
    "j": "pair.a + slow.x",
}


def values_of(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    columns = sines(n)
    columns["a"] = columns["a"] + rng.normal(0, 1e-3, n)
    columns["a"][rng.integers(0, n, 3)] = rng.choice([np.nan, 1e300, -5e-324], 3)
    columns["time"] = columns["time"] + rng.integers(-400_000, 400_000, n)  # jitter, back too
    columns["time"] -= 150_000_000  # a whole second (the resets' boundary) 150 samples in
    return columns


def compute(columns: dict[str, np.ndarray], slow: dict[str, np.ndarray],
            splits: list[int]) -> dict[str, np.ndarray]:
    """Feed pair in batches cut at ``splits`` (slow before each), as the hub is fed."""
    from tests.derived.common import REGISTRY

    computed = derived(toml("many", **EXPRESSIONS))
    out: dict[str, list[np.ndarray]] = {k: [] for k in EXPRESSIONS}
    edges = [0, *sorted(set(splits)), len(columns["time"])]
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        part = {k: v[lo:hi] for k, v in columns.items()}
        took = (slow["time"] <= part["time"].max())
        computed.compute(REGISTRY["slow"], {k: v[took] for k, v in slow.items()})
        slow = {k: v[~took] for k, v in slow.items()}
        ((_, result),) = computed.compute(REGISTRY["pair"], part)
        for k in EXPRESSIONS:
            out[k].append(result[k])
    return {k: np.concatenate(v) for k, v in out.items()}


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**32 - 1),
       splits=st.lists(st.integers(0, 300), max_size=12))
def test_any_split_gives_the_bits_of_one_batch(n: int, seed: int, splits: list[int]) -> None:
    columns = values_of(n, seed)
    slow = {"time": columns["time"][::7] - 100, "x": np.arange(len(columns["time"][::7])) * 1.5}
    whole = compute(columns, slow, [])
    split = compute(columns, slow, [s for s in splits if s < n])
    for k in EXPRESSIONS:
        assert whole[k].tobytes() == split[k].tobytes(), k


def exact_mean(window: list[float]) -> float:
    total = sum(Fraction(v) for v in window)
    return float(total / len(window))


def test_a_moving_mean_is_the_exact_mean_and_nan_until_full() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 400) * 10.0 ** rng.integers(-12, 12, 400)
    times = np.arange(400, dtype=np.int64) * 1_000_000
    got = windows.Window("mean", 16, 0).run(times, x)
    assert np.isnan(got[:15]).all()
    assert [exact_mean(x[i - 15: i + 1].tolist()) for i in range(15, 400)] == got[15:].tolist()
    close = np.convolve(x, np.ones(16) / 16, "valid")  # the numpy formula, within rounding
    assert np.allclose(got[15:], close, rtol=1e-9, atol=1e-9 * np.abs(x).max())
    span = windows.Window("mean", 0, 5_000_000).run(times, x)  # (t - 5 ms, t]: 5 samples
    assert np.isnan(span[:5]).all()
    assert [exact_mean(x[i - 4: i + 1].tolist()) for i in range(5, 400)] == span[5:].tolist()


def test_min_max_deriv_integral_lowpass_equal_their_formulas() -> None:
    columns = sines(200)
    t, a = columns["time"], columns["a"]
    seconds = np.diff(t) / 1e9
    lo = windows.Window("min", 0, 3_000_000).run(t, a)
    assert lo[3:].tolist() == [a[i - 2: i + 1].min() for i in range(3, 200)]
    hi = windows.Window("max", 10, 0).run(t, a)
    assert hi[9:].tolist() == [a[i - 9: i + 1].max() for i in range(9, 200)]
    d = ops.Deriv().run(t, a)
    assert np.isnan(d[0]) and d[1:].tobytes() == (np.diff(a) / seconds).tobytes()
    # integral and lowpass start afresh at each boundary of their period (1 s here): NaN
    # until one passes, then from 0 (from the value) at its first sample
    edge = 5  # sines(...)'s T0 is a whole second: the 6th sample of a start 5 ms before
    t = t - edge * 1_000_000
    i = ops.Integral(10**9).run(t, a)
    assert np.isnan(i[:edge]).all() and i[edge] == 0.0
    assert np.allclose(i[edge + 1:], np.cumsum((a[edge + 1:] + a[edge:-1]) / 2
                                               * seconds[edge:]))
    f = ops.Lowpass(0.01, 10**9).run(t, a)
    assert np.isnan(f[:edge]).all()
    y = [a[edge]]
    for k in range(edge + 1, 200):
        y.append(y[-1] + (1 - np.exp(-seconds[k - 1] / 0.01)) * (a[k] - y[-1]))
    f = f[edge:]
    assert np.allclose(f, y, rtol=1e-12)


def test_another_channel_is_its_last_value_at_or_before_each_sample() -> None:
    hold = ops.Hold()
    assert np.isnan(hold.at(np.array([5]))).all()  # before it has a value: NaN
    hold.feed(np.array([10, 20, 30]), np.array([1.0, 2.0, 3.0]))
    got = hold.at(np.array([9, 10, 15, 20, 29, 35]))
    assert got[1:].tolist() == [1.0, 1.0, 2.0, 2.0, 3.0] and np.isnan(got[0])
    program = derived(toml("j", j="pair.a * 0 + slow.x")).compiled[0].programs[0][1]
    batch = Batch(np.array([1, 2]), {"a": np.zeros(2)}, {"slow.x": np.array([7.0, 8.0])})
    assert program.run(batch).tolist() == [7.0, 8.0]


SPECIAL = [0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, -5e-324, 1e308, -1e308, 1.5]


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["mean", "min", "max"]), count=st.integers(0, 12),
       span=st.integers(1, 9), n=st.integers(1, 120), seed=st.integers(0, 2**32 - 1),
       splits=st.lists(st.integers(0, 120), max_size=8), short=st.sampled_from([1, 64]),
       vector=st.sampled_from([1, 10, 10**9]))
def test_the_vectorised_windows_give_the_loops_bits(kind: str, count: int, span: int, n: int,
                                                     seed: int, splits: list[int],
                                                     short: int, vector: int) -> None:
    """The numpy engine (masked matrix or sparse table), and both engines handing over
    to each other as batch sizes change, against the per-sample loop alone: the same
    bits for values with NaN, infinities, signed zeros, subnormals and times that go
    back, however the samples are split into batches."""
    from speeddata.derived.windows import LoopWindow

    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n) * 10.0 ** rng.integers(-300, 300, n)
    odd = rng.random(n) < 0.3
    x[odd] = rng.choice(SPECIAL, int(odd.sum()))
    x[rng.random(n) < 0.2] = 0.0
    times = np.cumsum(rng.integers(-1, 3, n)).astype(np.int64) * 1_000_000
    span_ns = 0 if count else span * 1_000_000
    edges = [0, *sorted({s for s in splits if s < n}), n]
    new, old = windows.Window(kind, count, span_ns), LoopWindow(kind, count, span_ns)
    before = windows.SHORT_WINDOW, windows.VECTOR_MIN
    windows.SHORT_WINDOW, windows.VECTOR_MIN = short, vector  # which engine, which way
    try:
        for lo, hi in itertools.pairwise(edges):
            if hi > lo:
                got = new.run(times[lo:hi], x[lo:hi])
                want = old.run(times[lo:hi], x[lo:hi])
                assert got.tobytes() == want.tobytes(), (lo, hi, got, want)
    finally:
        windows.SHORT_WINDOW, windows.VECTOR_MIN = before
