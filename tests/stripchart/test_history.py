"""Envelope ring buffers and the hub, driven directly with literal values."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- the coarse level folded from the fine one: exact ------------------------------------
FINE, COARSE = 10 * MS, 250 * MS


def reference(batches: list[tuple[np.ndarray, np.ndarray]], width: int) -> dict[int, tuple]:
    """Every sample folded into buckets of ``width`` one by one, in Python: the minimum
    and maximum of the values that are not NaN (NaN when none is), and the value of the
    latest sample (of equal times, the one that came last)."""
    out: dict[int, list] = {}
    for times, values in batches:
        for t, row in zip(times.tolist(), values.tolist(), strict=True):
            low, high, _, last_ns = out.setdefault(t // width, [
                [np.nan] * len(row), [np.nan] * len(row), row, t])
            for j, v in enumerate(row):
                if not np.isnan(v):
                    low[j] = v if np.isnan(low[j]) else min(low[j], v)
                    high[j] = v if np.isnan(high[j]) else max(high[j], v)
            if t >= last_ns:
                out[t // width][2:] = [row, t]
    return {b: tuple(v) for b, v in out.items()}


def held(ring: EnvelopeRing) -> dict[int, tuple]:
    pos = ring.positions_since(0)
    return {int(ring.index[p]): (ring.low[p].tolist(), ring.high[p].tolist(),
                                 ring.last[p].tolist(), int(ring.last_ns[p])) for p in pos}


def assert_same(got: dict[int, tuple], want: dict[int, tuple]) -> None:
    assert sorted(got) == sorted(want)
    for bucket, (low, high, last, last_ns) in want.items():
        g = got[bucket]
        np.testing.assert_array_equal(g[0], low)  # NaN equals NaN here
        np.testing.assert_array_equal(g[1], high)
        np.testing.assert_array_equal(g[2], last)
        assert g[3] == last_ns


# times near the edges of coarse buckets: a sample 1 ns before one and one right on it
_EDGE = st.builds(lambda edge, d: T0 - T0 % COARSE + edge * COARSE + d,
                  st.integers(0, 7), st.sampled_from([-FINE, -1, 0, 1, FINE - 1]))
_ANY = st.integers(T0 - T0 % COARSE, T0 - T0 % COARSE + 2 * 10**9)
_VALUE = st.one_of(st.floats(-1e6, 1e6), st.just(np.nan), st.just(1e300), st.just(-1e300))


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[np.ndarray, np.ndarray]]:
    signals = draw(st.integers(1, 3))
    out = []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 40))
        times = draw(st.lists(st.one_of(_EDGE, _ANY), min_size=n, max_size=n))
        if draw(st.booleans()):  # in order, as a live source sends them, or late ones too
            times.sort()
        values = draw(st.lists(st.lists(_VALUE, min_size=signals, max_size=signals),
                               min_size=n, max_size=n))
        out.append((np.array(times, dtype=np.int64), np.array(values, dtype=np.float64)))
    return out


@settings(max_examples=300)
@given(batches())
def test_the_coarse_level_folded_from_the_fine_one_equals_folding_the_samples(
        given_batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """The 250 ms level is folded from the batch's 10 ms buckets, not from the samples:
    min of mins, max of maxes, last of lasts. It holds exactly what folding every sample
    directly gives, NaN (ignored; NaN only where a bucket has nothing else) and a lone
    spike on either side of a bucket edge included, batch after batch, late ones too."""
    signals = given_batches[0][1].shape[1]
    levels = [Level(FINE, 1000), Level(COARSE, 40)]  # spans (10 s) hold every sample
    history = ChannelHistory(levels, [f"s{i}" for i in range(signals)])
    direct = EnvelopeRing(levels[1], signals)
    for seq, (times, values) in enumerate(given_batches, 1):
        history.add(times, values, seq)
        direct.add(times, values, seq)
    assert_same(held(history.rings[1]), reference(given_batches, COARSE))
    assert_same(held(history.rings[0]), reference(given_batches, FINE))
    assert_same(held(direct), reference(given_batches, COARSE))
    assert history.rings[1].seq.tolist() == direct.seq.tolist()


def test_a_spike_one_ns_before_a_coarse_edge_stays_in_its_bucket() -> None:
    edge = T0 - T0 % COARSE + COARSE
    times = edge + np.array([-2 * MS, -1, 0, 3 * MS])
    values = np.array([[0.0], [99.0], [np.nan], [-1.0]])
    history = ChannelHistory([Level(FINE, 100), Level(COARSE, 10)], ["s"])
    history.add(times, values, 1)
    coarse = history.rings[1].since_time(0).signal(0)
    assert coarse.start_ms.tolist() == [(edge - COARSE) / MS, edge / MS]
    assert coarse.high.tolist() == [99.0, -1.0] and coarse.low.tolist() == [0.0, -1.0]
    assert coarse.last.tolist() == [99.0, -1.0]
    fine = history.rings[0].since_time(0).signal(0)
    assert fine.high.tolist() == [99.0, -1.0]  # the NaN at the edge is no value


def test_the_hubs_header_is_what_json_dumps_writes_byte_for_byte() -> None:
    """``Hub.frame`` writes its header's JSON itself: each frame, history and data, text
    with quotes and non-ASCII, a page with drops, equals ``frames.encode`` of the header
    it decodes to (json.loads keeps the keys' order; a float's repr reads back the same)."""
    registry, _ = Registry.load_dir(SCHEMAS)
    hub = Hub(registry)
    env = Encoder(registry["env"])
    client = Client(frames_dropped=3)
    hub.subscribe(client, {"signals": ["motor.speed", "motor.torque", "env.humidity",
                                       "env.message"], "window": 10})
    made = []
    for step in range(4):
        text = env.encode({"time": T0 + 30 * step * MS, "humidity": 0.5, "pressure": 1.0,
                           "state": "IDLE", "message": f'"quoted" \\ été ✓ {step}'})
        hub.ingest([*_datagrams(30, start=30 * step), text], now_ns=T0 + 30 * (step + 1) * MS)
        made.append(hub.frame(client, T0 + 30 * (step + 1) * MS + 7))
    assert all(made)
    for frame in made:
        header, _ = frames.decode(frame)
        length = int.from_bytes(frame[:4], "little")
        arrays = np.frombuffer(frame, dtype="<f8", offset=4 + length + (-(4 + length)) % 8)
        assert frames.encode(header, [arrays]) == frame
    assert frames.decode(made[0])[0]["type"] == "history"
    assert frames.decode(made[-1])[0]["text"]["env.message"][-1][1] == '"quoted" \\ été ✓ 3'
