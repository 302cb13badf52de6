"""The block engine with a fake clock: datagrams in, the function called on batches,
what it returns checked, datagrams out; every kind of trouble counted, none raised."""

from __future__ import annotations

import io
import logging
import math

import fastavro
import numpy as np
import pytest

from speeddata.blocks import block
from speeddata.blocks.core import LOG_SECONDS, BlockEngine
from speeddata.schemas import Registry, channel_from_schema, load_file
from speeddata.sender import Encoder
from tests.helpers import SCHEMAS

MOTOR = load_file(SCHEMAS / "motor.avsc")
ENV = load_file(SCHEMAS / "env.avsc")
T0 = 1_795_000_000_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


MOTOR_OUT, ENV_OUT = Encoder(MOTOR), Encoder(ENV)


def motor(i: int, current: float) -> bytes:
    return MOTOR_OUT.encode({"time": T0 + i * 1_000_000, "speed": 0.0, "torque": 0.0,
                                  "current": current, "voltage": 48.0 + i,
                                  "position": 0.0, "temperature": 20.0})


def env(t: int, humidity: float) -> bytes:
    return ENV_OUT.encode({"time": t, "humidity": humidity, "pressure": 1.0,
                                "state": "RUNNING", "message": ""})


def engine_for(function, clock: Clock | None = None) -> BlockEngine:
    spec = function.__block__
    output = channel_from_schema(spec.schema())
    return BlockEngine(spec, output, Registry([MOTOR, ENV, output]), clock or Clock())


def records(engine: BlockEngine, datagrams: list[bytes]) -> list[dict]:
    out = []
    for datagram in datagrams:
        assert datagram[2:10] == engine.output.fingerprint
        out.append(fastavro.schemaless_reader(io.BytesIO(datagram[10:]),
                                              engine.output.parsed, None))
    return out


@block(inputs=["motor"], output="motor_x2", signals={"current2": "A"})
def double(batch):
    return {"current2": batch["motor"]["current"] * 2}


def test_a_block_doubles_each_sample_at_its_time_in_batches() -> None:
    clock = Clock()
    engine = engine_for(double, clock)
    engine.feed([motor(i, i * 0.5) for i in range(10)], clock.now)
    assert engine.wake_at() == clock.now + double.__block__.max_delay
    assert engine.flush(clock.now) == []  # not due yet: more may come for the batch
    clock.now += 0.05
    got = records(engine, engine.flush(clock.now))
    assert got == [{"time": T0 + i * 1_000_000, "current2": i * 1.0} for i in range(10)]
    stats = engine.statistics()
    assert stats["batches"] == 1 and stats["records_in"] == stats["records_out"] == 10
    assert stats["latency_ms"]["last"] == pytest.approx(50.0)
    assert engine.wake_at() is None


def test_a_full_batch_is_due_at_once_and_batches_hold_at_most_max_records() -> None:
    @block(inputs=["motor"], output="sizes", signals=["n"], max_records=4)
    def sizes(batch):
        return {"n": np.full(len(batch["time"]), len(batch["time"]))}

    engine = engine_for(sizes)
    engine.feed([motor(i, 0.0) for i in range(10)], 100.0)
    assert [r["n"] for r in records(engine, engine.flush(100.0))] == [4.0] * 8
    assert [r["n"] for r in records(engine, engine.flush(100.0, everything=True))] == [2.0] * 2


def test_other_inputs_are_joined_by_hold_last() -> None:
    @block(inputs=["motor", "env"], output="joined", signals=["h"])
    def joined(batch):
        return {"h": batch["env"]["humidity"]}

    engine = engine_for(joined)
    step = 1_000_000
    engine.feed([env(T0 + 2 * step, 40.0), motor(0, 0), motor(1, 0), motor(2, 0),
                 motor(3, 0), env(T0 + 4 * step, 41.0), motor(4, 0), motor(5, 0)], 100.0)
    got = [r["h"] for r in records(engine, engine.flush(200.0))]
    assert math.isnan(got[0]) and math.isnan(got[1])  # before env had a sample
    assert got[2:] == [40.0, 40.0, 41.0, 41.0]
    engine.feed([motor(6, 0)], 200.0)  # the next batch still has the last env sample
    assert [r["h"] for r in records(engine, engine.flush(300.0))] == [41.0]


def test_an_exception_is_counted_by_type_logged_with_its_traceback_at_a_bounded_rate(
        caplog) -> None:
    calls = []

    @block(inputs=["motor"], output="flaky", signals=["x"])
    def flaky(batch):
        calls.append(len(batch["time"]))
        if len(calls) % 2:
            raise ZeroDivisionError("odd batch")
        return {"x": batch["motor"]["current"]}

    clock = Clock()
    engine = engine_for(flaky, clock)
    sent = 0
    with caplog.at_level(logging.ERROR, "speeddata.blocks"):
        for n in range(6):
            engine.feed([motor(n, 1.0)], clock.now)
            sent += len(engine.flush(clock.now, everything=True))
            clock.now += 1.0
    stats = engine.statistics()
    assert stats["errors"] == {"exception ZeroDivisionError": 3} and sent == 3
    assert stats["batches"] == 6 and stats["records_out"] == 3
    logged = [r for r in caplog.records if "raised" in r.getMessage()]
    assert len(logged) == 1  # 6 s < LOG_SECONDS: the others are counted, not logged
    assert "Traceback" in logged[0].getMessage() and "odd batch" in logged[0].getMessage()
    clock.now += LOG_SECONDS
    engine.feed([motor(7, 1.0)], clock.now)
    with caplog.at_level(logging.ERROR, "speeddata.blocks"):
        engine.flush(clock.now, everything=True)
    assert "[2 more not logged" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(("result", "reason", "says"), [
    ([1.0], "not_a_dict", "returned a list"),
    ({}, "missing_signal", "returned no x"),
    ({"x": [1.0], "y": [2.0]}, "unknown_signal", "returned y, not declared"),
    ({"x": ["a"]}, "not_numbers", "not numbers"),
    ({"x": [[1.0, 1.0]]}, "wrong_shape", "shape (1, 2)"),
    ({"x": 1.0}, "wrong_shape", "shape ()"),
    ({"x": [1.0, 2.0]}, "wrong_length", "2 values for 1 input samples"),
    ({"x": [1j]}, "not_numbers", "complex"),
])
def test_a_bad_return_is_refused_per_batch_with_a_clear_log(result, reason, says,
                                                            caplog) -> None:
    @block(inputs=["motor"], output="bad", signals=["x"])
    def bad(batch):
        return result

    engine = engine_for(bad)
    engine.feed([motor(0, 1.0)], 100.0)
    with caplog.at_level(logging.WARNING, "speeddata.blocks"):
        assert engine.flush(100.0, everything=True) == []
    assert engine.statistics()["errors"] == {f"return {reason}": 1}
    assert "block bad: batch of 1 records refused" in caplog.text and says in caplog.text


def test_none_sends_nothing_and_nan_rows_are_kept_or_dropped_as_declared() -> None:
    def holes(batch):
        x = batch["motor"]["current"].copy()
        x[1] = np.nan
        return None if len(x) == 1 else {"x": x}

    keep = engine_for(block(inputs=["motor"], output="keep", signals=["x"])(holes))
    drop = engine_for(block(inputs=["motor"], output="drop", signals=["x"], nan="drop")(holes))
    for engine in (keep, drop):
        engine.feed([motor(0, 1.0)], 100.0)
        assert engine.flush(100.0, everything=True) == []  # None: nothing this batch
        engine.feed([motor(i, 1.0) for i in range(3)], 100.0)
    assert len(keep.flush(100.0, everything=True)) == 3
    assert [r["time"] for r in records(drop, drop.flush(100.0, everything=True))] == [
        T0, T0 + 2_000_000]
    assert keep.statistics()["nan_records"] == 1 and drop.statistics()["dropped_nan"] == 1


def test_hostile_datagrams_are_counted_by_reason_and_other_channels_passed_over() -> None:
    engine = engine_for(double)
    good = motor(0, 1.0)
    engine.feed([b"\x00", b"xx" + bytes(20), env(T0, 1.0), good[:-3], good], 100.0)
    assert len(engine.flush(100.0, everything=True)) == 1
    stats = engine.statistics()
    assert stats["refused"] == {"too_short": 1, "bad_marker": 1, "bad_body": 1}
    assert stats["other_datagrams"] == 1 and stats["received"] == {"motor": 2}


def test_an_input_registered_later_is_routed_from_then_on() -> None:
    spec = double.__block__
    output = channel_from_schema(spec.schema())
    engine = BlockEngine(spec, output, Registry([output]), Clock())
    assert engine.set_registry(Registry([output])) == ["motor"]
    engine.feed([motor(0, 1.0)], 100.0)
    assert engine.statistics()["other_datagrams"] == 1
    assert engine.set_registry(Registry([MOTOR, output])) == []
    engine.feed([motor(1, 1.0)], 100.0)
    assert len(engine.flush(100.0, everything=True)) == 1


def test_a_joined_input_without_primary_samples_stays_bounded() -> None:
    @block(inputs=["motor", "env"], output="j", signals=["h"])
    def j(batch):
        return {"h": batch["env"]["humidity"]}

    engine = engine_for(j)
    engine.feed([env(T0 + i, float(i)) for i in range(70_000)], 100.0)
    assert engine.statistics()["pending"] < 5000
    assert engine.statistics()["held_dropped"] == 70_000 - 65_536


@pytest.mark.parametrize("times", [[T0, T0 + 1], [0, 1, -1, 63, 64, -65, 2**62, -2**63],
                                   [2**63 - 1, T0]])
def test_output_datagrams_are_the_senders_bytes_for_any_time(times) -> None:
    from speeddata.blocks.results import Rows, encode

    output = channel_from_schema(double.__block__.schema())
    values = np.array([[float(i) * 1.5] for i in range(len(times))])
    got = encode(output.fingerprint, Rows(np.array(times, dtype=np.int64), values))
    encoder = Encoder(output)
    assert got == [encoder.encode({"time": t, "current2": v}) for t, v in
                   zip(times, values[:, 0].tolist(), strict=True)]


def test_sys_exit_in_the_function_is_one_more_exception_type() -> None:
    import sys

    @block(inputs=["motor"], output="quits", signals=["x"])
    def quits(batch):
        sys.exit(3)

    engine = engine_for(quits)
    engine.feed([motor(0, 1.0)], 100.0)
    assert engine.flush(100.0, everything=True) == []
    assert engine.statistics()["errors"] == {"exception SystemExit": 1}
