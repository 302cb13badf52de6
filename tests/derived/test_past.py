"""Scroll-back covers derived signals: a paused chart's past beyond the server's memory
computes them from the cached inputs and folds them like any signal, so a one-sample
spike in a derived signal shows in the envelope (in process: CacheView, /api/range)."""

from __future__ import annotations

import numpy as np
import pytest

from speeddata.cache.store import CacheWriter
from speeddata.derived import past
from speeddata.sender import Encoder
from speeddata.stripchart.scrollback import CacheView
from tests.derived.common import REGISTRY, T0, derived, sines, toml

N = 5000
SPIKE = 3217


def cached(tmp, columns) -> None:
    writer = CacheWriter(tmp, 2**30, 600)
    encoder = Encoder(REGISTRY["pair"])
    for lo in range(0, N, 50):
        writer.append(REGISTRY["pair"], [encoder.encode({k: columns[k][i].item() for k in
                                                         ("time", "a", "b", "word", "flag")}
                                                        )[10:] for i in range(lo, lo + 50)],
                      int(columns["time"][lo + 49]) + 10**6)
    writer.close()


def test_a_one_sample_spike_in_a_derived_signal_shows_in_the_scroll_back(tmp_path) -> None:
    columns = sines(N)
    columns["a"][SPIKE] = 40.0  # the difference spikes at one sample
    cached(tmp_path, columns)
    view_registry = derived(toml("d", diff="pair.a - pair.b", m="max(pair.a, 3)")
                            ).view(REGISTRY)
    view = CacheView(tmp_path, REGISTRY)
    start, end = T0 + 10**9, T0 + 4 * 10**9
    got = view.columns("d", "diff", start, end, 100, view_registry)  # 30 samples a column
    diff = columns["a"] - columns["b"]
    inside = (columns["time"] >= start) & (columns["time"] < end)
    assert int(got.count.sum()) == int(inside.sum())
    column = int(np.argmax(got.max))
    assert got.max[column] == diff[SPIKE]
    assert got.start_ns[column] <= columns["time"][SPIKE] < got.start_ns[column] + 30 * 10**6
    edges = start + (np.arange(100) * (end - start) / 100).astype(np.int64)
    keys = np.searchsorted(edges, columns["time"][inside], side="right") - 1
    assert got.min.tolist() == [diff[inside][keys == k].min() for k in range(100)]
    assert got.last.tolist() == [diff[inside][keys == k][-1] for k in range(100)]
    windowed = view.columns("d", "m", start, end, 100, view_registry)  # warmed: no NaN at the start
    assert windowed.max[column] == 40.0 and not np.isnan(windowed.min).any()


def test_a_range_too_long_for_a_derived_scroll_back_is_refused(tmp_path, monkeypatch) -> None:
    cached(tmp_path, sines(N))
    view = CacheView(tmp_path, REGISTRY)
    drawn = derived(toml("d", diff="pair.a - pair.b")).view(REGISTRY)
    monkeypatch.setattr(past, "MAX_RECORDS", 1000)
    with pytest.raises(past.TooLong, match="zoom in"):
        view.columns("d", "diff", T0, T0 + 5 * 10**9, 100, drawn)


def test_the_range_route_answers_the_demo_power_from_the_cache(tmp_path) -> None:
    """/api/range of the demo's derived power (motor.current * motor.voltage), in process:
    the columns of the product, a spike of the current in it."""
    import warnings

    from speeddata import config
    from speeddata.schemas import Registry
    from speeddata.stripchart.app import create_app
    from tests.derived.test_register import PORT, settings
    from tests.helpers import SCHEMAS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    motor = Registry.load_dir(SCHEMAS)[0]["motor"]
    writer = CacheWriter(tmp_path / "c", 2**30, 600)
    encoder = Encoder(motor)
    times = T0 + np.arange(2000, dtype=np.int64) * 1_000_000
    current = np.full(2000, 2.0)
    current[1234] = 50.0
    fields = [f["name"] for f in motor.schema["fields"]]
    for lo in range(0, 2000, 100):
        writer.append(motor, [encoder.encode({k: int(times[i]) if k == "time" else
                                              float(current[i]) if k == "current" else
                                              48.0 if k == "voltage" else 0.0
                                              for k in fields})[10:]
                              for i in range(lo, lo + 100)], int(times[lo + 99]) + 10**6)
    writer.close()
    app = create_app(config.build(settings(tmp_path)))
    http = TestClient(app, base_url=f"http://127.0.0.1:{PORT}")
    answer = http.get("/api/range", params={"signal": "power.power", "start_ms": T0 / 1e6,
                                            "end_ms": T0 / 1e6 + 2000, "columns": 20})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert sum(got["count"]) == 2000 and max(got["max"]) == 50.0 * 48.0
    assert got["max"].index(50.0 * 48.0) == 12 and min(got["min"]) == 2.0 * 48.0
