"""/api/spectrum, /api/spectrogram and /api/xy in process over a cache a fixture writes:
8 s of motor at 1 kHz, speed a 37 Hz sine of amplitude 2.5, torque its cosine; hostile
parameters are 4xx with a reason."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from speeddata import config as configuration
from speeddata.cache.store import CacheWriter
from speeddata.config import Config, write_file
from speeddata.schemas import Registry
from speeddata.sender import Encoder
from speeddata.stripchart.app import create_app
from tests.helpers import SCHEMAS, relay_settings

S = 10**9
T0 = 1_795_000_000 * S
RATE = 1000
SECONDS = 8
MOTOR = Registry.load_dir(SCHEMAS)[0]["motor"]


def write_motor(cache: Path, start: int, seconds: float, gap_at: float | None = None) -> None:
    """Blocks of 100 samples received at their first sample's time."""
    writer = CacheWriter(cache, 2**30, 600)
    encoder = Encoder(MOTOR)
    count = int(seconds * RATE)
    for first in range(0, count, 100):
        block = []
        for i in range(first, first + 100):
            t = start + i * S // RATE + (S if gap_at is not None and i >= gap_at * RATE else 0)
            phase = 2 * math.pi * 37 * i / RATE
            block.append(encoder.encode({
                "time": t, "speed": 2.5 * math.sin(phase), "torque": 2.5 * math.cos(phase),
                "current": 0.0, "voltage": 48.0, "position": float(i),
                "temperature": 20.0})[10:])
        writer.append(MOTOR, block, start + first * S // RATE)
    writer.close()


def config_for(cache: Path, tmp: Path) -> Config:
    """A sealed config (its own groups: a tag made here is announced on none of
    ./start's) over ``cache``."""
    settings = relay_settings(tmp, cache={"dir": str(cache)})
    return configuration.build(write_file(tmp / "serve.toml", settings))


def client_for(cache: Path, tmp: Path) -> TestClient:
    """The app without its lifespan: no group joined, no status written."""
    return TestClient(create_app(config_for(cache, tmp)), base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("spectra")
    write_motor(tmp / "cache", T0, SECONDS)
    write_motor(tmp / "cache", T0 + 100 * S, 4, gap_at=2.0)  # a second missing in it
    yield client_for(tmp / "cache", tmp)


WHOLE = {"start": str(T0 // 10**6), "end": str((T0 + SECONDS * S) // 10**6)}


def test_the_welch_psd_of_a_37_hz_sine_peaks_at_37_hz(api: TestClient) -> None:
    got = api.get("/api/spectrum", params={"signal": "motor.speed", **WHOLE})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["samples"] == SECONDS * RATE and body["rate_hz"] == pytest.approx(RATE)
    assert body["irregular"] is False and body["reason"] is None
    assert body["unit"] == "rpm²/Hz" and body["segment"] == 1024 and body["segments"] == 14
    peak = body["frequency_hz"][int(np.argmax(body["value"]))]
    assert abs(peak - 37) <= body["resolution_hz"]
    # Parseval: the PSD integrates to the variance of the sine, A²/2
    total = sum(body["value"]) * body["resolution_hz"]
    assert total == pytest.approx(2.5**2 / 2, rel=0.02)


@pytest.mark.parametrize("window", ["hann", "hamming", "blackman", "rect"])
def test_the_fft_of_a_sine_of_amplitude_2_5_reads_2_5(api: TestClient, window: str) -> None:
    body = api.get("/api/spectrum", params={"signal": "motor.speed", **WHOLE, "method": "fft",
                                            "window": window}).json()
    peak = int(np.argmax(body["value"]))
    assert body["unit"] == "rpm" and body["frequency_hz"][peak] == pytest.approx(37.0)
    assert body["value"][peak] == pytest.approx(2.5, rel=0.01)


def test_a_range_with_a_gap_is_said_irregular(api: TestClient) -> None:
    body = api.get("/api/spectrum", params={
        "signal": "motor.speed", "start": str((T0 + 99 * S) // 10**6),
        "end": str((T0 + 106 * S) // 10**6)}).json()
    assert body["irregular"] is True and "gaps" in body["reason"]
    assert body["samples"] == 4 * RATE


def test_the_spectrogram_is_bounded_and_on_the_charts_axis(api: TestClient) -> None:
    body = api.get("/api/spectrogram", params={"signal": "motor.speed", **WHOLE,
                                               "segment": 128, "columns": 20}).json()
    assert len(body["psd"]) <= 20 and len(body["psd"][0]) == 65
    assert len(body["start_ms"]) == len(body["psd"])
    assert body["start_ms"][0] == T0 / 10**6
    for row in body["psd"]:
        assert abs(body["frequency_hz"][int(np.argmax(row))] - 37) <= RATE / 128


def test_xy_of_sin_against_cos_is_a_circle_of_radius_2_5(api: TestClient) -> None:
    body = api.get("/api/xy", params={"x": "motor.speed", "y": "motor.torque", **WHOLE,
                                      "points": 1000}).json()
    assert body["pairs"] == SECONDS * RATE and body["drawn"] <= 1000
    radius = np.hypot(body["xs"], body["ys"])
    np.testing.assert_allclose(radius, 2.5, rtol=1e-9)
    assert body["x_unit"] == "rpm" and body["y_unit"] == "N.m"


def test_a_range_over_the_limit_is_refused_with_413(api: TestClient,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from speeddata.stripchart import fullrate

    monkeypatch.setattr(fullrate, "MAX_SAMPLES", 5000)  # 8000 in the range
    got = api.get("/api/spectrum", params={"signal": "motor.speed", **WHOLE})
    assert got.status_code == 413 and "at most 5000" in got.json()["detail"]


@pytest.mark.parametrize(("path", "params", "expected", "says"), [
    ("/api/spectrum", {"signal": "motor.nosuch"}, 404, "not a numeric signal"),
    ("/api/spectrum", {"signal": "nosuch.speed"}, 404, "no channel"),
    ("/api/spectrum", {"start": "nan", "end": "5"}, 400, "finite"),
    ("/api/spectrum", {"start": "inf", "end": "5"}, 400, "finite"),
    ("/api/spectrum", {"start": "0", "end": "1e300"}, 400, "outside"),
    ("/api/spectrum", {"start": str(T0 // 10**6 + 5000), "end": str(T0 // 10**6)}, 400,
     "end after it starts"),
    ("/api/spectrum", {"start": "-1m", "end": "-2m"}, 400, "before it starts"),
    ("/api/spectrum", {"segment": "-5"}, 422, "greater than or equal"),
    ("/api/spectrum", {"segment": "nan"}, 422, "integer"),
    ("/api/spectrum", {"segment": str(2**40)}, 422, "less than or equal"),
    ("/api/spectrum", {"window": "kaiser"}, 422, "hann"),
    ("/api/spectrum", {"method": "wavelet"}, 422, "welch"),
    ("/api/spectrum", {"bins": "0"}, 422, "greater than or equal"),
    ("/api/spectrum", {"tag": "nosuch", "start": None, "end": None}, 404, "nosuch"),
    ("/api/spectrum", {"start": "1", "end": None}, 400, "both in ms"),
    ("/api/spectrum", {"start": "yesterday-ish", "end": "now"}, 400, "cannot read time"),
    ("/api/spectrum", {"start": str(T0 // 10**6 - 60_000), "end": str(T0 // 10**6 - 1000)},
     400, "samples in the range"),
    ("/api/spectrogram", {"columns": "100000"}, 422, "less than or equal"),
    ("/api/xy", {"x": "motor.speed", "y": "motor.nosuch", "signal": None}, 404, "nosuch"),
    ("/api/xy", {"x": "motor.speed", "y": "motor.torque", "signal": None, "points": "-1"},
     422, "greater than or equal"),
])
def test_hostile_parameters_get_a_4xx_with_a_reason(api: TestClient, path: str, params: dict,
                                                    expected: int, says: str) -> None:
    query = {"signal": "motor.speed", **WHOLE, **params}
    got = api.get(path, params={k: v for k, v in query.items() if v is not None})
    assert got.status_code == expected, got.text
    assert says in got.text


def test_the_routes_are_behind_the_token(tmp_path: Path) -> None:
    write_motor(tmp_path / "cache", T0, 1)
    token = "t" * 43
    client = TestClient(create_app(config_for(tmp_path / "cache", tmp_path), token),
                        base_url="http://127.0.0.1")
    params = {"start": str(T0 // 10**6), "end": str(T0 // 10**6 + 1000)}
    for path, query in (("/api/spectrum", {"signal": "motor.speed"}),
                        ("/api/spectrogram", {"signal": "motor.speed"}),
                        ("/api/xy", {"x": "motor.speed", "y": "motor.torque"})):
        assert client.get(path, params={**query, **params}).status_code == 401
        got = client.get(path, params={**query, **params},
                         headers={"Authorization": f"Bearer {token}"})
        assert got.status_code == 200, got.text


def test_a_damaged_cache_is_answered_with_what_was_left_out(tmp_path: Path) -> None:
    from tests.damage import SECONDS as DAMAGED_SECONDS
    from tests.damage import T0 as DAMAGED_T0
    from tests.damage import make

    damaged = make(tmp_path)
    client = client_for(damaged.cache, tmp_path)
    got = client.get("/api/spectrum", params={
        "signal": "motor.speed", "start": str(DAMAGED_T0 // 10**6),
        "end": str((DAMAGED_T0 + DAMAGED_SECONDS * S) // 10**6), "segment": 64})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["samples"] == len(damaged.expected_speeds())
    assert body["skipped"] and body["irregular"] is True and "gaps" in body["reason"]


def test_nullable_columns_read_as_nan() -> None:
    from speeddata.stripchart.fullrate import _floats

    column = np.array([1.0, None, 3.0], dtype=object)
    assert np.isnan(_floats(column)[1]) and _floats(column)[2] == 3.0


def test_a_tag_is_a_range(api: TestClient) -> None:
    from speeddata.times import format_time

    made = api.post("/api/tags", json={"name": "sines", "start": format_time(T0 + 2 * S),
                                       "end": format_time(T0 + 6 * S)})
    assert made.status_code == 201, made.text
    body = api.get("/api/spectrum", params={"signal": "motor.speed", "tag": "sines",
                                            "method": "fft"}).json()
    assert body["samples"] == 4 * RATE
    assert max(body["value"]) == pytest.approx(2.5, rel=0.01)
    both = api.get("/api/spectrum", params={"signal": "motor.speed", "tag": "sines", **WHOLE})
    assert both.status_code == 400 and "tag" in both.json()["detail"]


def test_xy_across_channels_joins_the_last_value_at_or_before(tmp_path: Path) -> None:
    """motor at 1 kHz against env at 1 Hz: each motor sample takes the humidity of the
    last env sample at or before it; motor samples before the first env one are left out."""
    write_motor(tmp_path / "cache", T0, 4)
    env = Registry.load_dir(SCHEMAS)[0]["env"]
    writer = CacheWriter(tmp_path / "cache", 2**30, 600)
    encoder = Encoder(env)
    for second in range(4):  # 500 ms into each second
        t = T0 + second * S + S // 2
        writer.append(env, [encoder.encode({
            "time": t, "humidity": float(second), "pressure": 1000.0, "state": "IDLE",
            "message": ""})[10:]], t)
    writer.close()
    client = client_for(tmp_path / "cache", tmp_path)
    body = client.get("/api/xy", params={
        "x": "env.humidity", "y": "motor.position", "start": str(T0 // 10**6),
        "end": str((T0 + 4 * S) // 10**6)}).json()
    assert body["pairs"] == 4  # an env sample each: y the motor sample at its time
    assert body["xs"] == [0.0, 1.0, 2.0, 3.0] and body["ys"] == [500.0, 1500.0, 2500.0, 3500.0]
    body = client.get("/api/xy", params={
        "x": "motor.position", "y": "env.humidity", "start": str(T0 // 10**6),
        "end": str((T0 + 4 * S) // 10**6), "points": 100_000}).json()
    assert body["pairs"] == 3500 and body["xs"][0] == 500.0
    assert body["ys"][:1001] == [0.0] * 1000 + [1.0]  # 1.0 from 1.5 s on
