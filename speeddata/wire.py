"""The wire format: Avro single-object encoding, one record per UDP datagram.

A datagram is ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the
schema's Parsing Canonical Form, then the Avro binary body (Avro specification,
"Single-object encoding"). Nothing here touches a socket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from speeddata.errors import WireError

MARKER = b"\xc3\x01"
FINGERPRINT_SIZE = 8
HEADER_SIZE = len(MARKER) + FINGERPRINT_SIZE  # 10 bytes before the body

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Avro specification's 64-bit Rabin fingerprint (CRC-64-AVRO) of ``data``."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


def canonical_form(schema: dict[str, Any]) -> str:
    """The Parsing Canonical Form of a schema, as the Avro specification defines it."""
    from fastavro.schema import to_parsing_canonical_form

    return to_parsing_canonical_form(schema)


def fingerprint(schema: dict[str, Any]) -> bytes:
    """The 8 fingerprint bytes exactly as they appear in a datagram header."""
    value = crc64_avro(canonical_form(schema).encode("utf-8"))
    return value.to_bytes(FINGERPRINT_SIZE, "little")


PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _keep_logical_primitives(original: Any, canonical: Any) -> Any:
    """Re-wrap primitives that carry a logicalType as ``{"type": X}`` in a canonical form."""
    if isinstance(original, dict):
        kind = original.get("type")
        if kind in PRIMITIVES and "logicalType" in original and canonical == kind:
            return {"type": kind}
        if kind == "record":
            canonical["fields"] = [
                {**cf, "type": _keep_logical_primitives(of["type"], cf["type"])}
                for of, cf in zip(original["fields"], canonical["fields"], strict=True)
            ]
        elif kind == "array":
            canonical["items"] = _keep_logical_primitives(original["items"], canonical["items"])
        elif kind == "map":
            canonical["values"] = _keep_logical_primitives(original["values"], canonical["values"])
        elif isinstance(kind, dict | list):
            return _keep_logical_primitives(kind, canonical)
    elif isinstance(original, list):
        return [_keep_logical_primitives(o, c) for o, c in zip(original, canonical, strict=True)]
    return canonical


def alias_fingerprints(schema: dict[str, Any]) -> list[bytes]:
    """Other fingerprints that well-known Avro libraries compute for this schema.

    Apache Avro for Python (1.12) keeps ``{"type": "long"}`` in the canonical form for a
    logical type it does not know, such as ``timestamp-nanos``, where the specification
    (and Java, fastavro) writes ``"long"``. Its senders then put that fingerprint on the
    wire; the relay accepts it as the same channel.
    """
    canonical = canonical_form(schema)
    quirk = _keep_logical_primitives(schema, json.loads(canonical))
    text = json.dumps(quirk, separators=(",", ":"), ensure_ascii=False)
    if text == canonical:
        return []
    return [crc64_avro(text.encode("utf-8")).to_bytes(FINGERPRINT_SIZE, "little")]


def header(fp: bytes) -> bytes:
    """The 10-byte single-object header for a schema fingerprint."""
    if len(fp) != FINGERPRINT_SIZE:
        raise ValueError(f"a fingerprint is {FINGERPRINT_SIZE} bytes, got {len(fp)}")
    return MARKER + fp


def split(datagram: bytes | memoryview) -> tuple[bytes, memoryview]:
    """Return ``(fingerprint, body)`` of a single-object datagram, or raise WireError.

    The checks are the ones the relay makes before it accepts a datagram: the marker,
    and a header long enough to hold a fingerprint.
    """
    view = memoryview(datagram)
    if len(view) < HEADER_SIZE:
        raise WireError("too_short", f"datagram of {len(view)} bytes is shorter than a header")
    if view[:2] != MARKER:
        raise WireError("bad_marker", f"datagram starts with {bytes(view[:2]).hex()}, not c301")
    return bytes(view[2:HEADER_SIZE]), view[HEADER_SIZE:]


def describe(fp: bytes) -> str:
    """A fingerprint as people read it in logs and errors (hex, wire byte order)."""
    return fp.hex()


def schema_json(schema: dict[str, Any]) -> str:
    """Compact JSON of a schema, as stored in cache file headers."""
    return json.dumps(schema, separators=(",", ":"))


REPLAY_MARKER = b"SDREPLAY"  # not C3 01: a replay's notices never pass for data
MAX_NOTICE_CHANNELS = 200  # fingerprints per notice (about 4 kB); more go in more notices
MAX_NOTICE_BYTES = 8192
MIN_SPEED, MAX_SPEED = 1e-3, 1e6  # times real time; ``speeddata replay --speed`` too
_INT64 = range(-(2**63), 2**63)


@dataclass(frozen=True)
class ReplayNotice:
    """A checked notice: these channels are a replay, their sample ``first_ns`` was sent
    at ``wall_ns``, at ``speed`` times real time (None: as fast as possible)."""

    channels: tuple[bytes, ...]
    first_ns: int
    wall_ns: int
    speed: float | None


def replay_notices(fingerprints: list[bytes], first_ns: int, wall_ns: int,
                   speed: float | None) -> list[bytes]:
    """What ``speeddata replay`` sends beside the replayed datagrams (which stay byte for
    byte the originals), ``MAX_NOTICE_CHANNELS`` channels a datagram."""
    return [REPLAY_MARKER + json.dumps({
        "channels": [fp.hex() for fp in fingerprints[i : i + MAX_NOTICE_CHANNELS]],
        "first_ns": first_ns, "wall_ns": wall_ns, "speed": speed}).encode()
        for i in range(0, max(len(fingerprints), 1), MAX_NOTICE_CHANNELS)]


def _refuse_constant(name: str) -> None:
    raise WireError("not_finite", f"replay notice holds {name}")


def _int64(notice: dict[str, Any], key: str) -> int:
    value = notice.get(key)
    if type(value) is not int or value not in _INT64:
        raise WireError("bad_time", f"replay notice {key} {value!r} is not an int64")
    return value


def parse_replay_notice(datagram: bytes) -> ReplayNotice:
    """The checked notice in ``datagram``; WireError (with its ``reason``) otherwise:
    finite numbers only, times int64 (not bools, not floats), ``speed`` None or a number
    within MIN_SPEED..MAX_SPEED, at most MAX_NOTICE_CHANNELS 8-byte fingerprints."""
    if not datagram.startswith(REPLAY_MARKER):
        raise WireError("not_a_notice", "datagram does not start with SDREPLAY")
    if len(datagram) > MAX_NOTICE_BYTES:
        raise WireError("too_long", f"{len(datagram)}-byte notice > {MAX_NOTICE_BYTES}")
    try:
        notice = json.loads(datagram[len(REPLAY_MARKER):], parse_constant=_refuse_constant)
    except WireError:
        raise
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise WireError("bad_json", "replay notice is not JSON") from None
    if not isinstance(notice, dict):
        raise WireError("bad_json", "replay notice is not a JSON object")
    channels = notice.get("channels")
    if not isinstance(channels, list) or len(channels) > MAX_NOTICE_CHANNELS or not all(
            isinstance(c, str) and len(c) == 2 * FINGERPRINT_SIZE for c in channels):
        raise WireError("bad_channels", f"replay notice channels are not a list of at most "
                        f"{MAX_NOTICE_CHANNELS} fingerprints")
    try:
        fps = tuple(bytes.fromhex(c) for c in channels)
    except ValueError:
        raise WireError("bad_channels", "replay notice fingerprint is not hex") from None
    speed = notice.get("speed")
    if speed is not None:
        if type(speed) not in (int, float) or not MIN_SPEED <= speed <= MAX_SPEED:
            raise WireError("bad_speed", f"replay notice speed {speed!r} is not a number "
                            f"in {MIN_SPEED:g}..{MAX_SPEED:g}")
        speed = float(speed)
    return ReplayNotice(fps, _int64(notice, "first_ns"), _int64(notice, "wall_ns"), speed)

