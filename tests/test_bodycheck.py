"""The body check against fastavro: it accepts every record fastavro writes, and every
body it accepts decodes to exactly one valid record."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import numpy as np
import pytest
from fastavro.utils import generate_many
from hypothesis import given, settings
from hypothesis import strategies as st

from speeddata.bodycheck import BodyCheck
from speeddata.schemas import channel_from_schema, load_file
from tests.avro_strategies import record_schemas
from tests.helpers import SCHEMAS

EVERY_TYPE = fastavro.parse_schema({
    "type": "record", "name": "every", "fields": [
        {"name": "time", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "b", "type": "boolean"},
        {"name": "s", "type": "string"},
        {"name": "raw", "type": "bytes"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
        {"name": "fx", "type": {"type": "fixed", "name": "F", "size": 3}},
        {"name": "maybe", "type": ["null", "double"]},
        {"name": "xs", "type": {"type": "array", "items": "int"}},
        {"name": "m", "type": {"type": "map", "values": "string"}},
        {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [
            {"name": "flag", "type": "boolean"}, {"name": "e2", "type": "E"}]}},
        {"name": "choice", "type": ["null", "Inner", "long"]},
    ]})
SCHEMA_FILES = [load_file(SCHEMAS / f"{name}.avsc").parsed for name in ("motor", "env", "example")]
SCHEMAS_UNDER_TEST = [EVERY_TYPE, *SCHEMA_FILES]


def encode(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def decodes_exactly(schema: Any, body: bytes) -> bool:
    """The oracle: fastavro reads one record that ends on the last byte and is valid."""
    stream = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(stream, schema, None)
    except Exception:
        return False
    return stream.tell() == len(body) and fastavro.validation.validate(
        record, schema, raise_errors=False)


def canonical(schema: Any, body: bytes) -> bool:
    """Decodes exactly and writes back to the same bytes: no room for doubt."""
    if not decodes_exactly(schema, body):
        return False
    return encode(schema, fastavro.schemaless_reader(io.BytesIO(body), schema, None)) == body


@pytest.mark.parametrize("schema", SCHEMAS_UNDER_TEST, ids=lambda s: s["name"])
def test_every_record_fastavro_writes_passes(schema: Any) -> None:
    bodies = [encode(schema, r) for r in generate_many(schema, 300)]
    assert BodyCheck(schema).valid_bodies(bodies).all()


def test_bodies_of_one_size_take_the_matrix_path_and_find_the_bad_row() -> None:
    schema = SCHEMA_FILES[0]  # motor: a varint time and six doubles
    bodies = [encode(schema, {"time": 1_763_000_000_000_000_000 + i, "speed": 1.0,
                              "torque": 2.0, "current": 3.0, "voltage": 4.0,
                              "position": 5.0, "temperature": 6.0}) for i in range(64)]
    rows = np.frombuffer(b"".join(bodies), dtype=np.uint8).reshape(64, -1).copy()
    check = BodyCheck(schema)
    assert check.valid_rows(rows).all()
    rows[17, 3] = 0x05  # the time varint now ends early: the record is 6 bytes short
    rows[40, 8] = 0xFF  # ... or runs into the first double
    assert np.flatnonzero(~check.valid_rows(rows)).tolist() == [17, 40]


def mutate(body: bytes, how: int, at: int, junk: bytes) -> bytes:
    at = at % (len(body) + 1)
    if how == 0:
        return body[:at]  # truncated
    if how == 1:
        return body + junk  # extended
    if how == 2 and body:  # one byte garbled
        i = at % len(body)
        return body[:i] + bytes([(body[i] + 1 + junk[0] % 255) % 256 if junk else 0x80]) + (
            body[i + 1 :])
    return junk  # random bytes


@settings(max_examples=400, deadline=None)
@given(which=st.integers(0, len(SCHEMAS_UNDER_TEST) - 1), seed=st.integers(0, 2**31),
       how=st.integers(0, 3), at=st.integers(0, 10**6), junk=st.binary(max_size=300))
def test_what_the_check_accepts_is_exactly_one_valid_record(
        which: int, seed: int, how: int, at: int, junk: bytes) -> None:
    schema = SCHEMAS_UNDER_TEST[which]
    record = next(iter(generate_many(schema, 1)))
    body = mutate(encode(schema, record), how, at + seed, junk)
    verdict = bool(BodyCheck(schema).valid_bodies([body])[0])
    if verdict:
        assert decodes_exactly(schema, body), body.hex()
    if canonical(schema, body):
        assert verdict, body.hex()


@settings(max_examples=100, deadline=None)
@given(bodies=st.lists(st.binary(max_size=120), min_size=1, max_size=40))
def test_a_batch_is_judged_body_by_body(bodies: list[bytes]) -> None:
    """Neighbours never change a verdict: a body that runs past its end into the next one
    is still rejected."""
    check = BodyCheck(EVERY_TYPE)
    together = check.valid_bodies(bodies).tolist()
    assert together == [bool(check.valid_bodies([b])[0]) for b in bodies]
    for body, verdict in zip(bodies, together, strict=True):
        if verdict:
            assert decodes_exactly(EVERY_TYPE, body)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def varint(n: int) -> bytes:
    """The zig-zag varint of ``n`` (an Avro long)."""
    raw = (n << 1) ^ (n >> 63) if n < 0 else n << 1
    raw &= 2**64 - 1
    out = bytearray()
    while raw >= 0x80:
        out.append(raw & 0x7F | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def one_field(avro_type: Any) -> Any:
    return fastavro.parse_schema({"type": "record", "name": "one", "fields": [
        {"name": "x", "type": avro_type}]})


@pytest.mark.parametrize(("avro_type", "body", "expected"), [
    ("int", b"\xfe\xff\xff\xff\x0f", True),  # 2**31 - 1, zig-zag: the largest int
    ("int", b"\xfe\xff\xff\xff\x1f", False),  # 2**32 - 1 does not fit an int
    ("int", b"\x80\x80\x80\x80\x80\x00", False),  # six bytes
    ("long", b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", True),  # 2**63 - 1
    ("long", b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x02", False),  # past 64 bits
    ("long", b"\x80", False),  # never ends
    ("boolean", b"\x01", True),
    ("boolean", b"\x02", False),
    (["null", "double"], b"\x00", True),
    (["null", "double"], b"\x02" + bytes(8), True),
    (["null", "double"], b"\x04" + bytes(8), False),  # branch 2 of 2
    (["null", "double"], b"\x01" + bytes(8), False),  # branch -1
    (["null", "double"], b"\x04", False),  # branch 2, which would read nothing
    ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, b"\x02", True),
    ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, b"\x04", False),
    ("string", b"\x06h\xc3\xa9", True),  # "hé"
    ("string", b"\x04\xc3\x28", False),  # not UTF-8
    ("string", b"\x03", False),  # length -2
    ("string", b"\x08abc", False),  # 4 bytes announced, 3 there
    ("bytes", b"\x04\xc3\x28", True),  # bytes need not be text
    ({"type": "array", "items": "long"}, b"\x04\x02\x04\x00", True),  # [1, 2]
    ({"type": "array", "items": "long"}, b"\x03\x04\x02\x04\x00", True),  # sized block
    ({"type": "array", "items": "long"}, b"\x04\x02\x04", False),  # no end of blocks
    ({"type": "array", "items": "null"}, b"\xfe\xff\xff\xff\x0f\x00", False),  # 2**31 nulls
    ({"type": "map", "values": "int"}, b"\x02\x02k\x02\x00", True),  # {"k": 1}
    # extreme counts and lengths (issue 19): INT64_MIN's magnitude overflows an int64
    ({"type": "array", "items": "long"}, varint(INT64_MIN) + b"\x00", False),
    ({"type": "map", "values": "int"}, varint(INT64_MIN) + b"\x00", False),
    ({"type": "array", "items": "long"}, varint(INT64_MAX) + b"\x02\x00", False),
    ({"type": "array", "items": "long"}, varint(-INT64_MAX) + b"\x02\x02\x00", False),
    ({"type": "array", "items": "long"}, b"\x01\x02\x02\x00", True),  # [1] in a sized block
    ({"type": "array", "items": "long"}, b"\x01\x04\x02\x00", False),  # its size says 2
    ({"type": "array", "items": "long"}, b"\x01\x01\x02\x00", False),  # its size is -1
    ({"type": "array", "items": "long"}, b"\x01" + varint(INT64_MIN) + b"\x02\x00", False),
    ({"type": "array", "items": "long"}, b"\x01" + b"\xff" * 10 + b"\x02\x02\x00", False),
    ({"type": "array", "items": "null"}, varint(65536) + b"\x00", True),
    ({"type": "array", "items": "null"}, (varint(40000) * 2) + b"\x00", False),  # 80,000
    ({"type": "array", "items": "null"}, varint(-65536) + b"\x00\x00", True),
    ("string", varint(INT64_MIN) + b"ab", False),
    ("bytes", varint(INT64_MAX) + b"ab", False),
    ("bytes", varint(-1) + b"ab", False),
    ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, b"\x82\x80\x80\x80\x80\x00",
     False),  # index 1 in six bytes: an int has five
    (["null", "double"], b"\x82\x80\x80\x80\x80\x00" + bytes(8), False),
    ({"type": "fixed", "name": "F", "size": 2}, b"ab", True),
    # arrays of ints and longs are read in one go: each item still by the int rules
    ({"type": "array", "items": "int"}, b"\x04\x02\xfe\xff\xff\xff\x0f\x00", True),
    ({"type": "array", "items": "int"}, b"\x04\x02\xfe\xff\xff\xff\x1f\x00", False),
    ({"type": "array", "items": "int"}, b"\x04\x02\x80\x80\x80\x80\x80\x00\x00", False),
    ({"type": "array", "items": "int"}, b"\x04\x80\x80\x80\x80\x80\x00\x02\x00", False),
    ({"type": "array", "items": "long"}, b"\x06\x02\x04", False),  # 3 announced, 2 there
    ({"type": "array", "items": "long"}, b"\x06\x02\x04\x00", False),  # the end read as one
    ({"type": "array", "items": "long"}, b"\x04\x02\x84", False),  # the last never ends
])
def test_each_rule_of_the_check(avro_type: Any, body: bytes, expected: bool) -> None:
    schema = one_field(avro_type)
    assert bool(BodyCheck(schema).valid_bodies([body])[0]) is expected
    assert not expected or decodes_exactly(schema, body)  # the oracle agrees on the good
    rows = np.frombuffer(body * 3, dtype=np.uint8).reshape(3, -1)
    assert BodyCheck(schema).valid_rows(rows).tolist() == [expected] * 3


# -- random schemas (issue 19): records, arrays, maps, unions, enums, fixed, logical types

EXTREMES = [varint(n) for n in (INT64_MIN, INT64_MAX, -INT64_MAX, 2**31, -(2**31) - 1, 2**32,
                                -1, 1, 2**20, -(2**20))] + [
    b"\x80" * 9 + b"\x00",  # zero in ten bytes
    b"\x80" * 10 + b"\x01",  # eleven bytes
    b"\xff" * 16,  # never ends
]


@st.composite
def damaged(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` truncated, extended, garbled, or with an extreme varint put in or over it."""
    at = draw(st.integers(0, len(body)))
    how = draw(st.sampled_from(["truncate", "extend", "garble", "insert", "overwrite"]))
    if how == "truncate":
        return body[:at]
    if how == "extend":
        return body + draw(st.binary(min_size=1, max_size=12))
    if how == "garble" and body:
        i = min(at, len(body) - 1)
        return body[:i] + bytes([body[i] ^ draw(st.integers(1, 255))]) + body[i + 1 :]
    extreme = draw(st.sampled_from(EXTREMES))
    if how == "insert":
        return body[:at] + extreme + body[at:]
    return body[:at] + extreme + body[at + len(extreme) :]


@settings(max_examples=40, deadline=None)  # a few seconds: nested arrays make long bodies
@given(schema=record_schemas(max_depth=2), data=st.data())
def test_random_schemas_take_their_records_and_refuse_what_fastavro_cannot_read(
        schema: dict, data: st.DataObject) -> None:
    """The contract: every record fastavro writes passes; a body that passes is exactly
    one valid record to fastavro (read to its last byte); a body fastavro writes back
    byte for byte passes. Damage of any kind is judged by that, never raised."""
    parsed = channel_from_schema(schema, limits=True).parsed  # within the limits too
    check = BodyCheck(parsed)
    bodies = [encode(parsed, r) for r in generate_many(parsed, 4)]
    assert check.valid_bodies(bodies).all(), [b.hex() for b in bodies]
    assert check.valid_bodies(bodies[:1] * 3).all()  # one size: the matrix path
    bad = [data.draw(damaged(body)) for body in bodies for _ in range(3)]
    verdicts = check.valid_bodies(bad).tolist()
    assert verdicts == [bool(check.valid_bodies([b])[0]) for b in bad]  # neighbours no matter
    for body, verdict in zip(bad, verdicts, strict=True):
        if verdict:
            assert decodes_exactly(parsed, body), body.hex()
        elif canonical(parsed, body):
            pytest.fail(f"refused a body fastavro writes: {body.hex()}")


@pytest.mark.parametrize(("avro_type", "logical"), [
    ("int", "date"), ("int", "time-millis"), ("long", "time-micros"),
    ("long", "timestamp-millis"), ("long", "timestamp-micros"),
    ("long", "local-timestamp-millis"), ("long", "local-timestamp-micros")])
def test_logical_values_pass_exactly_where_fastavro_converts_them(avro_type: str,
                                                                  logical: str) -> None:
    """At each end of the range the check takes, fastavro reads; one past, it raises."""
    from speeddata.bodycheck import _LOGICAL_RANGES

    schema = one_field({"type": avro_type, "logicalType": logical})
    low, high = _LOGICAL_RANGES[(avro_type, logical)]
    for value, inside in ((low, True), (high, True), (low - 1, False), (high + 1, False),
                          (INT64_MIN, False)):
        body = varint(value)
        verdict = bool(BodyCheck(schema).valid_bodies([body])[0])
        assert verdict is decodes_exactly(schema, body) is inside, value


def test_uuid_strings_pass_when_they_are_uuids() -> None:
    schema = one_field({"type": "string", "logicalType": "uuid"})
    good = b"12345678-1234-5678-1234-567812345678"
    bodies = [varint(len(good)) + good, varint(3) + b"abc", varint(0)]
    assert BodyCheck(schema).valid_bodies(bodies).tolist() == [True, False, False]
    assert [decodes_exactly(schema, b) for b in bodies] == [True, False, False]
