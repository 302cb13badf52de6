"""The columnar decoder against fastavro, on random records and on bad input."""

from __future__ import annotations

import io

import fastavro
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from speeddata.columns import ColumnDecoder
from speeddata.schemas import channel_from_schema, load_file
from speeddata.sender import Encoder
from tests.helpers import SCHEMAS

ENV = load_file(SCHEMAS / "env.avsc")
MOTOR = load_file(SCHEMAS / "motor.avsc")
EXAMPLE = load_file(SCHEMAS / "example.avsc")

env_records = st.fixed_dictionaries({
    "time": st.integers(-(2**63), 2**63 - 1),
    "humidity": st.floats(allow_nan=False),
    "pressure": st.floats(width=32, allow_nan=False),
    "state": st.sampled_from(["IDLE", "RUNNING", "FAULT"]),
    "message": st.text(max_size=20),
})


def bodies_of(channel, records):
    encoder = Encoder(channel)
    return [encoder.encode(r)[10:] for r in records]


def check(columns, records) -> None:
    for name in records[0]:
        assert list(columns[name]) == [r[name] for r in records], name


@given(st.lists(env_records, min_size=1, max_size=40))
def test_bodies_decode_like_fastavro(records) -> None:
    decoder = ColumnDecoder(ENV)
    check(decoder.decode_bodies(bodies_of(ENV, records)), records)
    assert decoder.fallbacks == 0  # small batches by fastavro, large ones vectorised


@given(st.lists(env_records, min_size=1, max_size=30))
def test_blocks_decode_exactly_whether_or_not_records_share_a_size(records) -> None:
    decoder = ColumnDecoder(ENV)
    check(decoder.decode_block(b"".join(bodies_of(ENV, records)), len(records)), records)


def test_same_size_block_takes_the_vectorised_path() -> None:
    t0 = 1_795_000_000_000_000_000
    records = [{"time": t0 + i * 1000, "speed": float(i), "torque": -1.0, "current": 2.5,
                "voltage": 48.0, "position": i / 3, "temperature": 60.0} for i in range(1000)]
    decoder = ColumnDecoder(MOTOR)
    columns = decoder.decode_block(b"".join(bodies_of(MOTOR, records)), 1000)
    check(columns, records)
    assert columns["time"].dtype == np.int64 and columns["speed"].dtype == np.float64
    assert decoder.fallbacks == 0


def test_a_block_that_only_looks_regular_is_still_exact() -> None:
    # counters of 1 and 2 varint bytes balanced by strings of 2 and 1 bytes: same sizes,
    # different layouts; the vectorised check must notice and fall back.
    records = [{"time": 1, "message": "ab", "counter": 1, "sine_wave": 0.0, "ramp": 0.0,
                "square_wave": 0.0, "noise": 0.0},
               {"time": 1, "message": "a", "counter": 100, "sine_wave": 1.0, "ramp": 2.0,
                "square_wave": 3.0, "noise": 4.0}]
    check(ColumnDecoder(EXAMPLE).decode_block(b"".join(bodies_of(EXAMPLE, records)), 2), records)


def test_unions_fall_back_to_fastavro_with_nan_for_null() -> None:
    channel = channel_from_schema({"type": "record", "name": "u", "fields": [
        {"name": "time", "type": "long"}, {"name": "x", "type": ["null", "double"]}]})
    bodies = []
    for record in ({"time": 1, "x": None}, {"time": 2, "x": 2.5}):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, channel.parsed, record)
        bodies.append(out.getvalue())
    columns = ColumnDecoder(channel).decode_bodies(bodies)
    assert columns["time"].tolist() == [1, 2]
    assert np.isnan(columns["x"][0]) and columns["x"][1] == 2.5


def test_a_body_of_another_schema_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="channel 'env'"):
        ColumnDecoder(ENV).decode_bodies([b"\x02"])


FLAT = channel_from_schema({"type": "record", "name": "flat", "fields": [
    {"name": "time", "type": "long"}, {"name": "a", "type": "double"},
    {"name": "b", "type": "double"}, {"name": "f", "type": "float"},
    {"name": "on", "type": "boolean"}, {"name": "n", "type": "int"},
    {"name": "c", "type": "double"}]})
flat_records = st.fixed_dictionaries({
    "time": st.one_of(st.integers(-(2**63), 2**63 - 1),
                      st.integers(1_700_000_000_000_000_000, 1_800_000_000_000_000_000)),
    "a": st.floats(allow_nan=False), "b": st.floats(allow_nan=False),
    "f": st.floats(width=32, allow_nan=False), "on": st.booleans(),
    "n": st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-63, 63)),
    "c": st.floats(allow_nan=False),
})


@given(st.lists(flat_records, min_size=1, max_size=40))
def test_records_of_one_layout_read_as_rows_like_fastavro(records) -> None:
    """The 2-D path takes a batch only where every varint has one length in all of
    them; any other batch, of whatever sizes, decodes the same by the other paths."""
    decoder = ColumnDecoder(FLAT)
    bodies = bodies_of(FLAT, records)
    check(decoder.decode_bodies(bodies), records)
    check(decoder.decode_block(b"".join(bodies), len(records)), records)


def test_a_few_telemetry_records_take_the_row_path() -> None:
    t0 = 1_795_000_000_000_000_000
    records = [{"time": t0 + i, "a": 1.5 * i, "b": -2.0, "f": 0.25, "on": i % 2 == 0,
                "n": 7, "c": 3.0} for i in range(5)]
    decoder = ColumnDecoder(FLAT)
    bodies = bodies_of(FLAT, records)
    assert decoder._uniform(b"".join(bodies), 5, len(bodies[0])) is not None
    check(decoder.decode_bodies(bodies), records)
    # one size, two layouts: an 8-byte time and a 2-byte n against 9 and 1
    records[3].update(time=10**16, n=1000)
    bodies = bodies_of(FLAT, records)
    assert len({len(b) for b in bodies}) == 1
    assert decoder._uniform(b"".join(bodies), 5, len(bodies[0])) is None
    check(decoder.decode_bodies(bodies), records)
