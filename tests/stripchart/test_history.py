"""Envelope ring buffers and the hub, driven directly with literal values."""

from __future__ import annotations

import numpy as np

from speeddata.schemas import Registry, load_file
from speeddata.sender import Encoder
from speeddata.stripchart import frames
from speeddata.stripchart.history import MS, ChannelHistory, EnvelopeRing, Level, default_levels
from speeddata.stripchart.hub import Client, Hub
from tests.helpers import SCHEMAS

T0 = 1_795_000_000_000_000_000


def test_a_one_sample_spike_survives_in_the_envelope() -> None:
    ring = EnvelopeRing(Level(10 * MS, 100))
    times = T0 + np.arange(1000) * MS  # 1 kHz for 1 s: 10 samples per bucket
    values = np.zeros(1000)
    values[555] = 99.0
    ring.add(times, values, seq=1)
    buckets = ring.since_time(0).signal(0)
    assert len(buckets) == 100
    assert buckets.high.max() == 99.0
    assert np.count_nonzero(buckets.high) == 1
    assert buckets.last[-1] == 0.0


def test_ring_keeps_only_its_span_and_updates_partial_buckets() -> None:
    ring = EnvelopeRing(Level(10 * MS, 10))
    ring.add(np.array([T0, T0 + 1 * MS]), np.array([1.0, 2.0]), seq=1)
    ring.add(np.array([T0 + 2 * MS]), np.array([-5.0]), seq=2)
    b = ring.changed_since(1).signal(0)
    assert (b.low.tolist(), b.high.tolist(), b.last.tolist()) == ([-5.0], [2.0], [-5.0])
    ring.add(T0 + np.arange(1, 30) * 10 * MS, np.arange(1.0, 30.0), seq=3)
    kept = ring.since_time(0)
    assert len(kept) == 10  # bounded: the oldest buckets were overwritten
    assert kept.start_ms[0] == (T0 // (10 * MS) + 20) * 10


def test_memory_is_fixed_and_stated() -> None:
    # 100 signals as 10 channels of 10: the README states this figure
    history = ChannelHistory(default_levels(), [f"s{i}" for i in range(10)])
    assert history.memory_bytes() * 10 < 25 * 2**20  # 21.1 MiB


def test_signals_of_a_channel_keep_their_own_envelopes() -> None:
    ring = EnvelopeRing(Level(10 * MS, 10), signals=2)
    ring.add(T0 + np.arange(4) * MS, np.array([[1.0, -1.0], [5.0, -5.0], [2.0, 3.0],
                                               [0.0, 9.0]]), seq=1)
    both = ring.since_time(0)
    assert both.low.tolist() == [[0.0, -5.0]] and both.high.tolist() == [[5.0, 9.0]]
    assert both.signal(1).last.tolist() == [9.0]


def _datagrams(n: int, start: int = 0) -> list[bytes]:
    motor = load_file(SCHEMAS / "motor.avsc")
    encoder = Encoder(motor)
    return [encoder.encode({"time": T0 + i * MS, "speed": float(i), "torque": 1.0,
                            "current": 0.0, "voltage": 48.0, "position": 0.0,
                            "temperature": 20.0}) for i in range(start, start + n)]


def test_hub_sends_history_then_only_changes() -> None:
    registry, _ = Registry.load_dir(SCHEMAS)
    hub = Hub(registry)
    hub.ingest(_datagrams(100), now_ns=T0 + 100 * MS)
    client = Client()
    assert hub.subscribe(client, {"signals": ["motor.speed", "nope.x"], "window": 10}) == ["nope.x"]
    header, series = frames.decode(hub.frame(client, T0 + 100 * MS))
    assert header["type"] == "history"
    fine = series[("motor.speed", 0)]
    assert fine["high"].max() == 99.0 and len(fine["start_ms"]) == 10
    assert hub.frame(client, T0 + 100 * MS) is None  # nothing new
    hub.ingest(_datagrams(5, start=100), now_ns=T0 + 105 * MS)
    header, series = frames.decode(hub.frame(client, T0 + 105 * MS))
    assert header["type"] == "data"
    assert series[("motor.speed", 0)]["last"].tolist() == [104.0]


def test_hub_text_signals_and_bad_datagrams() -> None:
    registry, _ = Registry.load_dir(SCHEMAS)
    hub = Hub(registry)
    env = Encoder(registry["env"])
    hub.ingest([env.encode({"time": T0, "humidity": 1.0, "pressure": 2.0, "state": "FAULT",
                            "message": "overheat"}), b"garbage", b"\xc3\x01" + bytes(8)],
               now_ns=T0)
    assert hub.rejected == 2
    client = Client()
    hub.subscribe(client, {"signals": ["env.state", "env.message"]})
    header, _ = frames.decode(hub.frame(client, T0))
    assert header["text"] == {"env.state": [[T0 / 1e6, "FAULT"]],
                              "env.message": [[T0 / 1e6, "overheat"]]}


def test_a_source_with_a_wrong_clock_stays_on_screen_and_is_flagged() -> None:
    registry, _ = Registry.load_dir(SCHEMAS)
    hub = Hub(registry)
    hours = 3 * 3600 * 10**9
    for batch in range(5):  # stamped 3 h behind the server's clock
        hub.ingest(_datagrams(10, start=batch * 10), now_ns=T0 + hours + (batch * 10 + 9) * MS)
    [motor] = [c for c in hub.describe(T0 + hours + 50 * MS) if c["name"] == "motor"]
    assert motor["clock_shifted"] and -3 * 3600e3 - 100 < motor["clock_offset_ms"] < -3 * 3600e3
    assert not motor["stale"]  # plotted on receive time: live, not 3 h old
    client = Client()
    hub.subscribe(client, {"signals": ["motor.speed"], "window": 10})
    _, series = frames.decode(hub.frame(client, T0 + hours + 50 * MS))
    starts = series[("motor.speed", 0)]["start_ms"]
    assert abs(starts[-1] - (T0 + hours) / 1e6) < 100  # on the receive clock


def test_one_sample_a_day_ahead_does_not_blank_its_channel() -> None:
    registry, _ = Registry.load_dir(SCHEMAS)
    hub = Hub(registry)
    hub.ingest(_datagrams(50), now_ns=T0 + 50 * MS)
    day_ahead = Encoder(registry["motor"]).encode({
        "time": T0 + 86400 * 10**9, "speed": 1e9, "torque": 1.0, "current": 0.0,
        "voltage": 48.0, "position": 0.0, "temperature": 20.0})
    hub.ingest([day_ahead], now_ns=T0 + 51 * MS)
    hub.ingest(_datagrams(50, start=50), now_ns=T0 + 100 * MS)
    client = Client()
    hub.subscribe(client, {"signals": ["motor.speed"], "window": 10})
    _, series = frames.decode(hub.frame(client, T0 + 100 * MS))
    fine = series[("motor.speed", 0)]
    assert fine["high"].max() == 99.0  # the later samples are there, the outlier is not
    [motor] = [c for c in hub.describe(T0 + 100 * MS) if c["name"] == "motor"]
    assert motor["dropped_times"] == 1 and not motor["clock_shifted"]


def test_a_sample_beyond_the_tolerance_ahead_of_now_is_refused_not_made_newest() -> None:
    """A source 9 s ahead (within the 10 s tolerance: drawn on its own clock) sends one
    sample 18.9 s ahead: within the tolerance of its clock, but it would be the ring's
    newest bucket, which never goes back, and a ring of a second would lose every later
    sample. It is refused and counted."""
    registry, _ = Registry.load_dir(SCHEMAS)
    hub = Hub(registry, levels=[Level(10 * MS, 100)])
    ahead = 9000 * MS
    hub.ingest(_datagrams(50), now_ns=T0 + 50 * MS - ahead)
    hub.ingest([Encoder(registry["motor"]).encode({
        "time": T0 + 60 * MS + 9900 * MS, "speed": 1e9, "torque": 1.0, "current": 0.0,
        "voltage": 48.0, "position": 0.0, "temperature": 20.0})], now_ns=T0 + 60 * MS - ahead)
    hub.ingest(_datagrams(50, start=50), now_ns=T0 + 100 * MS - ahead)
    client = Client()
    hub.subscribe(client, {"signals": ["motor.speed"], "window": 1})
    _, series = frames.decode(hub.frame(client, T0 + 100 * MS))
    assert series[("motor.speed", 0)]["last"][-1] == 99.0  # the later samples are drawn
    [motor] = [c for c in hub.describe(T0 + 100 * MS - ahead) if c["name"] == "motor"]
    assert (motor["dropped_times"], motor["ahead_times"]) == (1, 1)
    assert not motor["clock_shifted"]


def test_changed_since_matches_a_full_scan_whatever_the_client_missed() -> None:
    ring = EnvelopeRing(Level(10 * MS, 50))
    rng = np.random.default_rng(1)
    for seq in range(1, 400):
        start = T0 + seq * 7 * MS + int(rng.integers(-30, 5)) * MS  # some late samples
        times = start + np.sort(rng.integers(0, 20 * MS, size=5))
        ring.add(times, rng.normal(size=5), seq)
        for since in (seq - 1, seq - 3, seq - 300, 0):
            fast = ring.changed_since(since)
            full = ring.select((ring.seq > since) & (ring.index >= 0))
            assert fast.start_ms.tolist() == full.start_ms.tolist()
            assert fast.last.tolist() == full.last.tolist()
