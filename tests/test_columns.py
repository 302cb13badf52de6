"""The columnar decoder against fastavro, on random records and on bad input."""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speeddata.columns import ColumnDecoder, plain
from speeddata.schemas import channel_from_schema, load_file
from speeddata.sender import Encoder
from tests.avro_strategies import record_schemas
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


def same(decoded: Any, expected: Any) -> bool:
    """Equal, NaN equal to NaN (a float from fastavro against a numpy float64)."""
    if isinstance(expected, float) and expected != expected:
        return isinstance(decoded, float) and decoded != decoded
    return decoded == expected


def encode_with(schema: Any, records: list[dict[str, Any]]) -> bytes:
    out = io.BytesIO()
    for record in records:
        fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def check_against_fastavro(channel: Any, data: bytes, count: int) -> None:
    schema = fastavro.parse_schema(plain(channel.schema))  # stored values, not dates
    expected = [fastavro.schemaless_reader(stream, schema, None)
                for stream in [io.BytesIO(data)] for _ in range(count)]
    columns = ColumnDecoder(channel).decode_block(data, count)
    kinds = {s.name: s.kind for s in channel.signals}
    for name in expected[0]:
        if name == channel.time_field or kinds.get(name) in ("number", "text"):
            got = columns[name].tolist()
            want = [r[name] for r in expected]
            if columns[name].dtype == np.float64:  # a union's long is a float64 column (its
                want = [float(w) if isinstance(w, int) else w for w in want]  # null is NaN)
            assert all(same(g, e) for g, e in zip(got, want, strict=True)), name


@settings(max_examples=60, deadline=None)
@given(record_schemas(max_depth=2), st.integers(1, 30), st.randoms(use_true_random=False))
def test_every_schema_decodes_like_fastavro(schema, count, rng) -> None:
    """Random schemas of every kind of type and fastavro's random records: each signal
    column the decoder gives is what fastavro reads, whichever path it takes."""
    from fastavro.utils import generate_many

    channel = channel_from_schema(schema)
    random_state = random.getstate()
    random.seed(rng.random())
    try:
        records = list(generate_many(channel.parsed, count))
    finally:
        random.setstate(random_state)
    check_against_fastavro(channel, encode_with(channel.parsed, records), count)


FIXED_TYPES = ["double", "float", "long", "int", "boolean"]
fixed_values = {
    "double": st.floats(width=64), "float": st.floats(width=32),
    "boolean": st.booleans(),
    # one width of varint in every record (the strided path), or any (the others)
    "long": st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(2**56, 2**57),
                      st.integers(-(2**62), -(2**61))),
    "int": st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(64, 8000)),
}


@st.composite
def flat_blocks(draw: st.DrawFn) -> tuple[Any, list[dict[str, Any]]]:
    """A flat schema of numbers in any order and a block of its records, their varints
    often of one width in every record (so the whole block is one strided view)."""
    kinds = draw(st.lists(st.sampled_from(FIXED_TYPES), min_size=1, max_size=12))
    fields = [{"name": "time", "type": "long"}] + [
        {"name": f"x{i}", "type": kind} for i, kind in enumerate(kinds)]
    channel = channel_from_schema({"type": "record", "name": "flat", "fields": fields})
    narrow = draw(st.booleans())
    count = draw(st.integers(1, 50))
    records = []
    for _ in range(count):
        record = {"time": draw(st.integers(1_700_000_000 * 10**9, 1_800_000_000 * 10**9)
                               if narrow else st.integers(-(2**63), 2**63 - 1))}
        for i, kind in enumerate(kinds):
            record[f"x{i}"] = draw(fixed_values[kind])
        records.append(record)
    return channel, records


@settings(max_examples=150, deadline=None)
@given(flat_blocks())
def test_fixed_layouts_decode_like_fastavro(block) -> None:
    channel, records = block
    check_against_fastavro(channel, encode_with(channel.parsed, records), len(records))


def test_a_block_of_telemetry_records_is_one_strided_view() -> None:
    t0 = 1_795_000_000_000_000_000
    records = [{"time": t0 + i * 1000, "speed": float(i), "torque": -1.0, "current": 2.5,
                "voltage": 48.0, "position": i / 3, "temperature": 60.0} for i in range(500)]
    data = b"".join(bodies_of(MOTOR, records))
    columns = ColumnDecoder(MOTOR).decode_block(data, 500)
    check(columns, records)
    assert columns["speed"].base is not None and columns["speed"].strides == (len(data) // 500,)
