"""Decoding Avro record bodies straight into numpy columns, many records at once.

The stripchart and the pivot want columns (one array per signal), not a dict per
record. For flat records of primitives and enums, this decodes every record of a batch
together with numpy: each field is read at a vector of positions, one field at a
time. Two entry points:

- ``decode_bodies``: bodies whose boundaries are known (one datagram each);
- ``decode_block``: an Avro block's concatenated bodies; vectorised when all records
  have the same size (the usual telemetry record: a ns time, which takes 9 bytes for
  any date from 1971 to 2116, and fixed-size numbers), else decoded record by record.

Records that all share one layout (each varint as long in every record) are read
faster still, as a 2-D array of rows with each field a column slice: a few numpy calls
per field whatever the count, so even a handful of datagrams is cheaper than fastavro.

Schemas with unions, arrays, maps or nested records, and any batch the vectorised
reading finds inconsistent, go through fastavro, so the result is always exact.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import fastavro
import numpy as np

from speeddata.schemas import Channel


class Columns(dict[str, np.ndarray]):
    """Decoded columns by field name. ``blocks``: runs of consecutive float64 columns that
    are views of one (records, fields) matrix, by their names, so that a consumer that
    wants them as a matrix (the stripchart's rings) takes it as it is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.blocks: dict[tuple[str, ...], np.ndarray] = {}


def matrix(columns: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """The columns ``names`` as one float64 (records, len(names)) matrix: the block they
    are, when a decoder made them one, else stacked (a copy)."""
    block = getattr(columns, "blocks", {}).get(tuple(names))
    if block is not None:
        return block
    return np.column_stack([columns[name] for name in names]).astype(np.float64, copy=False)


_FIXED = {"double": ("<f8", 8), "float": ("<f4", 4)}
_SIMPLE = {"double", "float", "boolean", "int", "long", "string", "enum"}
_PAD = 16  # zero bytes after the data, so reading a varint past the end stays in bounds
# Below this many records, numpy's fixed cost per call outweighs fastavro's per record.
SMALL_BATCH = 16
UNIFORM_BATCH = 4  # the same for records of one layout


def _field_kind(avro_type: Any) -> str | None:
    if isinstance(avro_type, str):
        return avro_type if avro_type in _SIMPLE else None
    if isinstance(avro_type, dict) and avro_type.get("type") in _SIMPLE:
        return avro_type["type"]
    return None


class _Inconsistent(Exception):
    """The vectorised reading does not add up: use the exact fallback."""


def _varints(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zig-zag varints at ``pos``: (values, positions after them)."""
    result = np.zeros(len(pos), dtype=np.uint64)
    length = np.zeros(len(pos), dtype=np.int64)
    active = np.ones(len(pos), dtype=bool)
    for k in range(10):
        byte = buf[pos + k].astype(np.uint64)
        result |= np.where(active, (byte & np.uint64(0x7F)) << np.uint64(7 * k), np.uint64(0))
        length += active
        active &= (byte & np.uint64(0x80)) != 0
        if not active.any():
            break
    else:
        raise _Inconsistent("varint longer than 10 bytes")
    values = (result >> np.uint64(1)).astype(np.int64) ^ -(result & np.uint64(1)).astype(np.int64)
    return values, pos + length


_CONTINUE = [sum(0x80 << 8 * k for k in range(n)) for n in range(9)]  # 0x80 of n bytes
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_PACK = [(np.uint64(0x007F007F007F007F), np.uint64(0x7F007F007F007F00), np.uint64(1)),
         (np.uint64(0x00003FFF00003FFF), np.uint64(0x3FFF00003FFF0000), np.uint64(2)),
         (np.uint64(0x000000000FFFFFFF), np.uint64(0x0FFFFFFF00000000), np.uint64(4))]


def _equal_varints(rows: np.ndarray, flat: np.ndarray | None, offset: int, width: int
                   ) -> np.ndarray | None:
    """The zig-zag varint of ``width`` bytes at ``offset`` of every row, or None unless
    it has that width in every row. With the rows' bytes at hand (``flat``), the first 8
    bytes of each are read as one little-endian word and their 7-bit groups packed
    together in three steps; else byte by byte."""
    count, size = rows.shape
    head = min(width, 8)
    if flat is not None and offset + 8 <= size:
        word = np.ndarray((count,), dtype="<u8", buffer=flat, offset=offset, strides=(size,))
        if head < 8:
            word = word & np.uint64((1 << 8 * head) - 1)
        # every byte before the last has its continuation bit, the last one not
        marks = word & np.uint64(_CONTINUE[head])
        if (marks != np.uint64(_CONTINUE[head] if width > 8 else _CONTINUE[head - 1])).any():
            return None
        result = word & _LOW7
        for low, high, shift in _PACK:
            result = (result & low) | ((result & high) >> shift)
    else:
        block = rows[:, offset:offset + head]
        if (block[:, -1] & 0x80).any() != (width > 8) or (head > 1 and not (
                block[:, :-1] & 0x80).all()):
            return None
        result = np.zeros(count, dtype=np.uint64)
        for k in range(head):
            result |= (block[:, k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
    if width > 8:
        if head == 8 and width > 8 and not (rows[:, offset + 7] & 0x80).all():
            return None
        ninth = rows[:, offset + 8]
        if ((ninth & 0x80) != 0).any() != (width > 9) or (width > 9 and not (
                ninth & 0x80).all()):
            return None
        result |= (ninth & 0x7F).astype(np.uint64) << np.uint64(56)
        if width > 9:
            tenth = rows[:, offset + 9]
            if (tenth & 0x80).any():
                return None
            result |= (tenth & 0x7F).astype(np.uint64) << np.uint64(63)
    return (result >> np.uint64(1)).astype(np.int64) ^ -(result & np.uint64(1)).astype(np.int64)


def plain(schema: Any) -> Any:
    """``schema`` without its logical types: fastavro then reads a ``date`` or a
    ``timestamp-nanos`` as the int or long it is stored as, the value every column holds."""
    if isinstance(schema, list):
        return [plain(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    return {k: plain(v) for k, v in schema.items() if k != "logicalType"}


class ColumnDecoder:
    """Decodes the bodies of one channel into a column per field."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.parsed = fastavro.parse_schema(plain(channel.schema))
        self.fields = [(f["name"], _field_kind(f["type"]), f["type"])
                       for f in channel.schema["fields"]]
        self.vectorised = all(kind is not None for _, kind, _ in self.fields)
        # consecutive fields of one fixed-size type, read together by _uniform
        self.runs: list[tuple[list[str], str | None]] = []
        for name, kind, _ in self.fields:
            if kind in _FIXED and self.runs and self.runs[-1][1] == kind:
                self.runs[-1][0].append(name)
            else:
                self.runs.append(([name], kind))
        self.fallbacks = 0  # batches that took the record-by-record path

    def empty(self) -> Columns:
        return self._from_records([])

    def decode_bodies(self, bodies: Sequence[bytes | memoryview]) -> Columns:
        """Decode bodies with known boundaries. ValueError if one is not this schema's."""
        if not bodies:
            return self.empty()
        if self.vectorised and len(bodies) >= UNIFORM_BATCH:
            size = len(bodies[0])
            if all(len(b) == size for b in bodies):  # the usual telemetry record
                uniform = self._uniform(b"".join(bodies), len(bodies), size)
                if uniform is not None:
                    return uniform
        if self.vectorised and len(bodies) >= SMALL_BATCH:
            lengths = np.fromiter((len(b) for b in bodies), dtype=np.int64, count=len(bodies))
            starts = np.zeros(len(bodies), dtype=np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            data = b"".join(bodies)
            try:
                return self._vectorised(data, starts, starts + lengths)
            except _Inconsistent:
                pass
        if len(bodies) >= SMALL_BATCH:
            self.fallbacks += 1
        return self._from_records([self._read_one(b) for b in bodies])

    def decode_block(self, data: bytes | memoryview, count: int) -> Columns:
        """Decode ``count`` concatenated bodies (an Avro block's data)."""
        if count == 0:
            return self.empty()
        if self.vectorised and len(data) % count == 0:
            size = len(data) // count
            uniform = self._uniform(bytes(data), count, size)
            if uniform is not None:
                return uniform
            starts = np.arange(count, dtype=np.int64) * size
            try:
                return self._vectorised(bytes(data), starts, starts + size)
            except _Inconsistent:
                pass
        self.fallbacks += 1
        stream = io.BytesIO(data)
        records = [fastavro.schemaless_reader(stream, self.parsed, None)
                   for _ in range(count)]
        if stream.tell() != len(data):  # a block is its records, exactly: else damaged
            raise ValueError(f"{count} records end at byte {stream.tell()} of {len(data)}")
        return self._from_records(records)

    def _read_one(self, body: bytes | memoryview) -> dict[str, Any]:
        stream = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(stream, self.parsed, None)
        except Exception as exc:
            raise ValueError(
                f"body does not decode as channel {self.channel.name!r}: {exc}") from None
        if stream.tell() != len(body):
            raise ValueError(f"body has {len(body) - stream.tell()} bytes past the record")
        return record

    def decode_rows(self, rows: np.ndarray) -> Columns:
        """Bodies of one length, the rows of a uint8 matrix (a batch read gives them so).
        ValueError if one is not this schema's."""
        if self.vectorised and len(rows) >= UNIFORM_BATCH:
            uniform = self._rows(rows)
            if uniform is not None:
                return uniform
        return self.decode_bodies([row.tobytes() for row in rows])

    def _uniform(self, data: bytes, count: int, size: int) -> Columns | None:
        """``_rows`` for ``count`` concatenated records of ``size`` bytes."""
        return self._rows(np.frombuffer(data, dtype=np.uint8, count=count * size).reshape(
            count, size))

    def _rows(self, rows: np.ndarray) -> Columns | None:
        """Records that all have one layout (every varint the same length in each, as a
        ns time's 9 bytes are), the rows of a matrix, each field one column. None where
        the layout differs between records or holds strings or enums. A run of doubles
        is a strided view over the bytes (no copy), a varint 8 bytes read at once."""
        count, size = rows.shape
        flat = rows.reshape(-1) if rows.flags.c_contiguous else None
        offset = 0
        out = Columns()
        for names, kind in self.runs:
            if kind in _FIXED:  # a run of numbers of one type: one view for them all
                dtype, width = _FIXED[kind]
                end = offset + width * len(names)
                if end > size:
                    return None
                if flat is not None:
                    matrix = np.ndarray((count, len(names)), dtype=dtype, buffer=flat,
                                        offset=offset, strides=(size, width))
                else:
                    matrix = np.ascontiguousarray(rows[:, offset:end]).view(dtype)
                matrix = matrix.astype(np.float64, copy=False)
                for j, name in enumerate(names):
                    out[name] = matrix[:, j]
                out.blocks[tuple(names)] = matrix
                offset = end
                continue
            name = names[0]
            if kind == "boolean":
                if offset >= size:
                    return None
                out[name] = rows[:, offset] != 0
                offset += 1
            elif kind in ("int", "long"):
                width = 1  # this varint's length in the first record, then in all
                while width < 10 and offset + width < size and rows[0, offset + width - 1] & 0x80:
                    width += 1
                if offset + width > size:
                    return None
                values = _equal_varints(rows, flat, offset, width)
                if values is None:
                    return None
                out[name] = values
                offset += width
            else:
                return None
        return out if offset == size else None

    def _vectorised(self, data: bytes, starts: np.ndarray, ends: np.ndarray) -> Columns:
        buf = np.frombuffer(data + bytes(_PAD), dtype=np.uint8)
        pos = starts
        limit = len(data)
        out = Columns()
        for name, kind, avro_type in self.fields:
            if kind in _FIXED:
                dtype, size = _FIXED[kind]
                raw = buf[pos[:, None] + np.arange(size)]
                out[name] = raw.view(dtype).ravel().astype(np.float64)
                pos = pos + size
            elif kind == "boolean":
                out[name] = buf[pos] != 0
                pos = pos + 1
            elif kind in ("int", "long"):
                out[name], pos = _varints(buf, pos)
            elif kind == "enum":
                codes, pos = _varints(buf, pos)
                symbols = np.asarray(avro_type["symbols"], dtype=object)
                if len(codes) and (codes.min() < 0 or codes.max() >= len(symbols)):
                    raise _Inconsistent("enum index out of range")
                out[name] = symbols[codes]
            else:  # string: lengths vectorised, the text itself sliced per record
                lengths, pos = _varints(buf, pos)
                if len(lengths) and (lengths.min() < 0 or (pos + lengths).max() > limit):
                    raise _Inconsistent("string runs past the record")
                try:
                    out[name] = np.array(
                        [data[p : p + n].decode("utf-8") for p, n in
                         zip(pos.tolist(), lengths.tolist(), strict=True)], dtype=object)
                except UnicodeDecodeError:
                    raise _Inconsistent("string is not UTF-8") from None
                pos = pos + lengths
            if len(pos) and pos.max() > limit:
                raise _Inconsistent("record runs past the data")
        if not np.array_equal(pos, ends):
            raise _Inconsistent("records do not end where expected")
        return out

    def _from_records(self, records: list[dict[str, Any]]) -> Columns:
        out = Columns()
        for name, kind, _ in self.fields:
            values = [r[name] for r in records]
            if kind in ("int", "long"):
                out[name] = np.array(values, dtype=np.int64)
            elif kind in _FIXED:
                out[name] = np.array(values, dtype=np.float64)
            elif kind == "boolean":
                out[name] = np.array(values, dtype=bool)
            elif kind is None and all(isinstance(v, int | float | None) for v in values):
                out[name] = np.array([np.nan if v is None else v for v in values],
                                     dtype=np.float64)
            else:
                out[name] = np.array(values, dtype=object)
        return out
