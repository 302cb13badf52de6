"""The wire format, including interoperability both ways with Apache Avro for Python."""

from __future__ import annotations

import io
import json

import avro.io
import avro.schema
import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from speeddata import wire
from speeddata.errors import WireError
from speeddata.relay.core import Router
from speeddata.schemas import Registry, load_file
from speeddata.sender import Encoder
from tests.helpers import SCHEMAS

MOTOR = load_file(SCHEMAS / "motor.avsc")
RECORD = {"time": 1_795_000_000_123_456_789, "speed": 1500.5, "torque": -3.25, "current": 0.0,
          "voltage": 48.0, "position": 359.9, "temperature": 61.5}


EXAMPLE = load_file(SCHEMAS / "example.avsc")


def test_fingerprint_matches_fastavro_and_apache_avro() -> None:
    apache = avro.schema.parse(json.dumps(EXAMPLE.schema)).fingerprint("CRC-64-AVRO")
    assert EXAMPLE.fingerprint == bytes(apache)
    for channel in (EXAMPLE, MOTOR):
        canonical = fastavro.schema.to_parsing_canonical_form(channel.schema)
        assert channel.fingerprint.hex() == fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")


@pytest.mark.filterwarnings("ignore::avro.errors.IgnoredLogicalType")
def test_apache_avro_python_fingerprint_of_timestamp_nanos_is_an_accepted_alias() -> None:
    # Apache Avro for Python keeps {"type":"long"} for a logical type it does not know,
    # unlike the specification: the registry routes its fingerprint to the same channel.
    apache = bytes(avro.schema.parse(json.dumps(MOTOR.schema)).fingerprint("CRC-64-AVRO"))
    assert apache != MOTOR.fingerprint
    assert MOTOR.aliases == (apache,)
    assert Registry([MOTOR]).by_fingerprint(apache) is MOTOR


def test_crc64_of_empty_input_is_the_specification_seed() -> None:
    assert wire.crc64_avro(b"") == 0xC15D213AA4D7A795


def test_header_layout_is_marker_then_little_endian_fingerprint() -> None:
    datagram = Encoder(MOTOR).encode(RECORD)
    assert datagram[:2] == b"\xc3\x01"
    assert datagram[2:10] == MOTOR.fingerprint
    assert len(wire.header(MOTOR.fingerprint)) == wire.HEADER_SIZE == 10


@pytest.mark.filterwarnings("ignore::avro.errors.IgnoredLogicalType")
def test_datagram_encoded_by_apache_avro_is_accepted_and_decodes_the_same() -> None:
    schema = avro.schema.parse(json.dumps(MOTOR.schema))
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(RECORD, avro.io.BinaryEncoder(body))
    datagram = b"\xc3\x01" + bytes(schema.fingerprint("CRC-64-AVRO")) + body.getvalue()

    routed = Router(Registry([MOTOR])).route([memoryview(datagram)], 26000, 0)
    assert routed.rejected == 0
    [(channel, bodies)] = routed.bodies.items()
    assert channel is MOTOR
    decoded = fastavro.schemaless_reader(io.BytesIO(bytes(bodies[0])), MOTOR.parsed, None)
    assert decoded == RECORD


def test_datagram_we_encode_decodes_with_apache_avro() -> None:
    record = {"time": 123, "message": "héllo", "counter": -7, "sine_wave": 0.5, "ramp": 1.0,
              "square_wave": -1.0, "noise": 0.25}
    schema = avro.schema.parse(json.dumps(EXAMPLE.schema))
    datagram = Encoder(EXAMPLE).encode(record)
    assert datagram[:2] == b"\xc3\x01"
    assert datagram[2:10] == bytes(schema.fingerprint("CRC-64-AVRO"))
    decoded = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(datagram[10:])))
    assert decoded == record


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [(b"", "too_short"), (b"\xc3\x01\x00", "too_short"), (b"Obj\x01" + bytes(20), "bad_marker")],
)
def test_split_rejects_with_a_reason(datagram: bytes, reason: str) -> None:
    with pytest.raises(WireError) as info:
        wire.split(datagram)
    assert info.value.reason == reason


def test_split_returns_fingerprint_and_body() -> None:
    fp, body = wire.split(b"\xc3\x01" + bytes(range(8)) + b"body")
    assert fp == bytes(range(8))
    assert bytes(body) == b"body"


@given(st.binary(max_size=64))
def test_router_never_crashes_and_accepts_only_known_fingerprints(data: bytes) -> None:
    router = Router(Registry([MOTOR]))
    routed = router.route([memoryview(data)], 26000, 0)
    if routed.bodies:
        assert data[:10] == wire.header(MOTOR.fingerprint)
    else:
        assert routed.rejected == 1
