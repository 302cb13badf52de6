"""fullrate.read over a written cache: samples by their own time, blocks by receive time,
a source whose clock is hours off found through its offset, the limit counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speeddata.cache.store import CacheWriter
from speeddata.errors import NotFoundError, TooLargeError
from speeddata.schemas import Registry
from speeddata.sender import Encoder
from speeddata.stripchart import fullrate
from tests.helpers import SCHEMAS

S = 10**9
T0 = 1_795_000_000 * S
AHEAD = 3 * 3600 * S  # the source's clock, ahead of the relay's
REGISTRY, _ = Registry.load_dir(SCHEMAS)


def write(cache: Path, seconds: int, ahead: int = 0, received: int | None = None) -> None:
    """motor at 100 Hz, position = the sample's index; a block a second, received
    ``ahead`` before the time its samples carry (or all at ``received``)."""
    motor = REGISTRY["motor"]
    encoder = Encoder(motor)
    writer = CacheWriter(cache, 2**30, 10**6)
    for second in range(seconds):
        writer.append(motor, [encoder.encode({
            "time": T0 + second * S + i * S // 100, "speed": 0.0, "torque": 0.0,
            "current": 0.0, "voltage": 0.0, "position": float(second * 100 + i),
            "temperature": 0.0})[10:] for i in range(100)],
            T0 + second * S - ahead if received is None else received)
    writer.close()


def test_samples_are_kept_by_their_own_time(tmp_path: Path) -> None:
    write(tmp_path, 10)
    got = fullrate.read(tmp_path, REGISTRY, "motor.position", T0 + 2 * S + S // 2,
                        T0 + 4 * S, 10 * S)
    assert got.unit == "deg" and got.skipped == []
    assert got.values.tolist() == [float(v) for v in range(250, 400)]
    assert np.all(np.diff(got.times) == S // 100)


def test_a_source_hours_ahead_is_found_through_its_offset(tmp_path: Path) -> None:
    write(tmp_path, 10, AHEAD)
    start, end = T0 + 2 * S, T0 + 3 * S
    assert len(fullrate.read(tmp_path, REGISTRY, "motor.position", start, end, 10 * S)
               .values) == 0  # looked for at the wrong receive times
    got = fullrate.read(tmp_path, REGISTRY, "motor.position", start, end, 10 * S,
                        offset_ns=AHEAD)
    assert got.values.tolist() == [float(v) for v in range(200, 300)]


def test_the_limit_is_counted_before_and_after_decoding(tmp_path: Path) -> None:
    write(tmp_path, 10)
    with pytest.raises(TooLargeError, match="about 1000 samples"):  # from the index
        fullrate.read(tmp_path, REGISTRY, "motor.position", T0, T0 + 10 * S, S, limit=999)


def test_samples_received_late_are_counted_as_they_are_decoded(tmp_path: Path) -> None:
    write(tmp_path, 10, received=T0 + 20 * S)  # a backlog sent at once, 20 s late
    with pytest.raises(TooLargeError, match="over 500 samples"):
        fullrate.read(tmp_path, REGISTRY, "motor.position", T0, T0 + 10 * S, 30 * S,
                      limit=500)
    got = fullrate.read(tmp_path, REGISTRY, "motor.position", T0, T0 + 10 * S, 30 * S)
    assert len(got.values) == 1000


@pytest.mark.parametrize(("name", "says"), [
    ("motor.nosuch", "not a numeric signal"), ("nosuch.x", "no channel"),
    ("env.message", "not a numeric signal"), ("motor", "not a numeric signal")])
def test_what_is_not_a_numeric_signal_is_not_found(tmp_path: Path, name: str,
                                                   says: str) -> None:
    with pytest.raises(NotFoundError, match=says):
        fullrate.read(tmp_path, REGISTRY, name, T0, T0 + S, S)
