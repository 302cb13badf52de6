"""Replay: pacing with a simulated clock, cutting blocks into bodies, and a cached range
replayed into a second relay and onto the groups, compared value by value."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import h5py
import numpy as np
import pytest

from speeddata import multicast, wire
from speeddata.cache.store import CacheWriter
from speeddata.config import build, write_file
from speeddata.pivot import pivot
from speeddata.replay import NOTICE_SECONDS, GroupSink, pace
from speeddata.schemas import Registry
from speeddata.sender import Encoder
from tests.helpers import SCHEMAS, TIMEOUT, relay_settings, start_relay, wait_until

REGISTRY, _ = Registry.load_dir(SCHEMAS)
S = 10**9


def test_pacing_keeps_the_spacing_divided_by_the_speed() -> None:
    now = [100.0]
    slept = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    sent = []
    items = iter([(np.array([5 * S, 6 * S, 6 * S]), [b"a", b"b", b"c"]),
                  (np.array([9 * S]), [b"d"])])
    result = pace(items, 10.0, sent.append, lambda: now[0], sleep)
    assert sent == [b"a", b"b", b"c", b"d"] and result.sent == 4
    assert [round(s, 6) for s in slept] == [0.1, 0.3]  # 1 s and 3 s at 10x
    assert result.percentile(99) == 0.0 and len(result.lateness_s) == 4
    fast = pace(iter([(np.array([0, 10 * S]), [b"a", b"b"])]), None, sent.append,
                lambda: now[0], sleep)
    assert fast.sent == 2 and len(slept) == 2  # --max: no waiting


def fill(cache: Path, start: int, seconds: int) -> list[bytes]:
    """Motor at 100 Hz and env at 1 Hz cached as a relay would; the motor datagrams."""
    writer = CacheWriter(cache, 2**30, 600)
    motor, env = Encoder(REGISTRY["motor"]), Encoder(REGISTRY["env"])
    sent = []
    for s in range(seconds):
        t = start + s * S
        datagrams = [motor.encode({
            "time": t + i * S // 100, "speed": float(s * 100 + i), "torque": -1.0,
            "current": 0.5, "voltage": 48.0, "position": float(i), "temperature": 20.0})
            for i in range(100)]
        sent += datagrams
        writer.append(REGISTRY["motor"], [d[10:] for d in datagrams], t)
        writer.append(REGISTRY["env"], [env.encode({
            "time": t, "humidity": 40.0 + s, "pressure": 1000.0, "state": "IDLE",
            "message": f"second {s} " + "x" * (s % 5)})[10:]], t)  # strings: varied sizes
    writer.close()
    return sent


def values(path: Path) -> dict[str, dict[str, list]]:
    with h5py.File(path) as h5:
        return {c: {n: h5[c][n][()].tolist() for n in h5[c] if n != "receive_time"}
                for c in h5}


class FakeClocks:
    """The monotonic seconds and the wall ns a GroupSink reads, moved by the test."""

    def __init__(self) -> None:
        self.s, self.ns = 10.0, 1_000 * S

    def advance(self, seconds: float) -> None:
        self.s += seconds
        self.ns += int(seconds * S)


FULL, DECIMATED = ("239.1.1.1", 6001), ("239.1.1.2", 6002)


def test_the_group_sink_sends_the_notices_every_datagram_and_the_decimated_share() -> None:
    motor, env = REGISTRY["motor"], REGISTRY["env"]
    clocks, sent = FakeClocks(), []
    sink = GroupSink(lambda data, address: sent.append((data, address)), FULL, DECIMATED,
                     10.0, [motor.fingerprint, env.fingerprint], 2.0,
                     lambda: clocks.s, lambda: clocks.ns)  # 10/s: a burst of 1
    sink.started(5 * S)
    m, e = wire.header(motor.fingerprint) + b"m", wire.header(env.fingerprint) + b"e"
    for datagram in (m, m, m, e):  # one instant: one each of motor and env decimated
        sink(datagram)
    (notice,) = wire.replay_notices([motor.fingerprint, env.fingerprint], 5 * S, 1_000 * S,
                                    2.0)
    assert sent == [(notice, FULL), (notice, DECIMATED), (m, FULL), (m, DECIMATED), (m, FULL),
                    (m, FULL), (e, FULL), (e, DECIMATED)]
    parsed = wire.parse_replay_notice(notice)
    assert (parsed.first_ns, parsed.wall_ns, parsed.speed) == (5 * S, 1_000 * S, 2.0)
    sent.clear()
    clocks.advance(0.1)  # one token more for motor; the notices wait for NOTICE_SECONDS
    sink(m)
    sink(m)
    assert sent == [(m, FULL), (m, DECIMATED), (m, FULL)]
    sent.clear()
    clocks.advance(NOTICE_SECONDS - 0.1)
    sink(m)
    assert sent == [(notice, FULL), (notice, DECIMATED), (m, FULL), (m, DECIMATED)]
    assert sink.statistics() == {"full": 7, "decimated": 4, "notices": 4}


def test_a_group_sink_with_the_decimated_group_off_and_a_loop_notices_again_at_once() -> None:
    motor = REGISTRY["motor"]
    clocks, sent = FakeClocks(), []
    sink = GroupSink(lambda data, address: sent.append((data, address)), FULL, None, 10.0,
                     [motor.fingerprint], None, lambda: clocks.s, lambda: clocks.ns)
    m = wire.header(motor.fingerprint) + b"m"
    sink.started(5 * S)
    sink(m)
    clocks.advance(0.01)
    sink.started(5 * S)  # --loop: the next pass starts, its notice says so at once
    sink(m)
    first, again = (wire.replay_notices([motor.fingerprint], 5 * S, ns, None)[0]
                    for ns in (1_000 * S, 1_000 * S + S // 100))
    assert sent == [(first, FULL), (m, FULL), (again, FULL), (m, FULL)]
    assert sink.statistics() == {"full": 2, "decimated": 0, "notices": 2}


@pytest.mark.e2e
def test_a_range_replayed_into_a_second_relay_is_the_same_data(tmp_path: Path) -> None:
    start = time.time_ns() - 60 * S
    original = tmp_path / "a"
    fill(original / "cache", start, 20)
    config_a = write_file(tmp_path / "a.toml", relay_settings(original))
    (tmp_path / "b").mkdir()
    second = start_relay(tmp_path / "b", relay_settings(tmp_path / "b"))
    command = [sys.executable, "-m", "speeddata", "replay", "--start", "-2m", "--config",
               str(config_a)]
    try:
        done = subprocess.run([*command, "--max", "--to", "relay", "--target",
                               f"127.0.0.1:{second.port}"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("replayed 2020 datagrams")
        wait_until(lambda: second.snapshot().get("datagrams", 0) == 2020,
                   what="the second relay caching every replayed datagram")
    finally:
        second.stop()
    pivot(original / "cache", tmp_path / "a.h5", 0, time.time_ns())
    pivot(second.cache_dir, tmp_path / "b.h5", 0, time.time_ns())
    assert values(tmp_path / "a.h5") == values(tmp_path / "b.h5")
    # the relay that recorded it is refused unless asked
    own = subprocess.run([*command, "--max", "--to", "relay", "--target",
                          f"127.0.0.1:{build(config_a).relay.port}"], capture_output=True,
                         text=True, timeout=60)
    assert own.returncode == 2 and "--recache" in own.stderr


@pytest.mark.e2e
def test_replay_on_the_groups_in_time_order_at_a_speed(tmp_path: Path) -> None:
    start = time.time_ns() - 60 * S
    sent = fill(tmp_path / "cache", start, 3)
    settings = relay_settings(tmp_path)
    config = write_file(tmp_path / "a.toml", settings)
    cfg = build(config)
    listener = multicast.listener(cfg.multicast.full, "127.0.0.1")
    listener.settimeout(TIMEOUT)
    done = subprocess.run(
        [sys.executable, "-m", "speeddata", "replay", "--start", "-2m", "--speed", "20",
         "--channels", "motor", "--config", str(config)], capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 0, done.stderr
    assert "replayed 300 datagrams" in done.stdout and "lateness p50" in done.stdout
    got, notices = [], []
    while len(got) < 300:
        datagram = listener.recv(65535)
        (notices if datagram.startswith(wire.REPLAY_MARKER) else got).append(datagram)
    listener.close()
    assert got == sent  # byte for byte the datagrams the source sent, in their order
    notice = wire.parse_replay_notice(notices[0])  # and beside them: this is a replay
    assert notice.speed == 20.0 and notice.first_ns == start
    assert notice.channels == (REGISTRY["motor"].fingerprint,)
    times = [fastavro.schemaless_reader(io.BytesIO(d[10:]), REGISTRY["motor"].parsed, None)[
        "time"] for d in got]
    assert times == sorted(times)


def test_the_hub_draws_a_replay_at_its_replayed_spacing() -> None:
    """A notice on the group puts a channel in replay: samples land at the time their
    replay sends them, not where a clock estimate (moving with every batch) would."""
    from speeddata.stripchart.hub import Hub

    motor = REGISTRY["motor"]
    hub = Hub(REGISTRY)
    first, wall = 1_000 * S, 5_000 * S
    (notice,) = wire.replay_notices([motor.fingerprint], first, wall, 10.0)
    assert wire.parse_replay_notice(notice).speed == 10.0
    encoder = Encoder(motor)
    sample = {"torque": 0.0, "current": 0.0, "voltage": 0.0, "position": 0.0,
              "temperature": 0.0}
    hub.ingest([notice] + [encoder.encode({**sample, "time": first + i * S, "speed": i})
                           for i in range(3)], now=1.0, now_ns=wall + S)
    history, _column = hub.numeric["motor.speed"]
    starts = history.rings[0].since_time(0).start_ms.tolist()
    assert starts == [wall / 1e6, wall / 1e6 + 100, wall / 1e6 + 200]  # 1 s apart / 10
    (described,) = [c for c in hub.describe(wall + S) if c["name"] == "motor"]
    assert described["replay"] == {"speed": 10.0, "at_ms": (first + 2 * S) / 1e6}
    assert hub.rejected == 0
    assert next(c for c in hub.describe(wall + 10 * S) if c["name"] == "motor")[
        "replay"] is None  # notices stopped: live again


def test_notices_are_split_and_a_notice_far_from_its_samples_draws_nothing() -> None:
    """A replay of many channels sends several notices, each within the bounds the
    server checks; a notice whose times do not fit its samples (forged, or extreme)
    places nothing far off the axis (the ring would lose its history) and raises
    nothing: those samples are counted as dropped times."""
    from speeddata.stripchart.hub import Hub

    many = [i.to_bytes(8, "little") for i in range(2 * wire.MAX_NOTICE_CHANNELS + 1)]
    notices = wire.replay_notices(many, 0, 0, None)
    assert [len(wire.parse_replay_notice(n).channels) for n in notices] == [
        wire.MAX_NOTICE_CHANNELS, wire.MAX_NOTICE_CHANNELS, 1]
    motor = REGISTRY["motor"]
    encoder = Encoder(motor)
    sample = {"speed": 1.0, "torque": 0.0, "current": 0.0, "voltage": 0.0, "position": 0.0,
              "temperature": 0.0}
    hub = Hub(REGISTRY)
    now = 5_000 * S
    (extreme,) = wire.replay_notices([motor.fingerprint], -(2**63), 2**63 - 1, wire.MIN_SPEED)
    hub.ingest([extreme] + [encoder.encode({**sample, "time": now + i}) for i in range(3)],
               now=1.0, now_ns=now)
    assert hub.clocks["motor"].dropped == 3
    assert not len(hub.numeric["motor.speed"][0].rings[0].since_time(0))
