"""Checking Avro record bodies against their schema, many at once, without decoding.

The relay caches raw bodies back to back in Avro blocks. A body that is not exactly
one record of its schema (one byte short, a byte too many, a garbled length) makes
every record after it in the block decode wrong or not at all, so the relay checks
every body before it accepts it. The check walks the schema over a vector of
positions, one field at a time, with numpy: a fixed-size field is one addition, a
varint a small window read, so a batch of 256 bodies costs a few tens of
microseconds. Nothing here touches a socket.

A body passes when it decodes to exactly one record with any conforming Avro reader:
every varint ends within 10 bytes (5 for ``int``, enum and union indexes) and fits its
type, booleans are 0 or 1, enum and union indexes are in range, lengths are not negative
and stay inside the body, strings are UTF-8, array and map block counts fit the bytes
left (an int64 whose magnitude does not fit, INT64_MIN, is refused; items of no size
are at most 65,536 in all), a negative count's block size is the bytes its items take,
and the record ends on the body's last byte. Values of the logical types fastavro
converts (dates, times, timestamps, uuid strings) must be ones it converts: a body
that passes is one fastavro reads. Whatever the bytes, the check answers True or False
and never raises: the relay calls it on datagrams from anyone.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import fastavro
import numpy as np

_FIXED_SIZES = {"null": 0, "float": 4, "double": 8}
_LAST_BYTE = {5: 0x0F, 10: 0x01}  # largest last byte of a 5-byte int, a 10-byte long
_MAX_ZERO_SIZE_ITEMS = 65536  # items of an array of nulls, all blocks: not bounded by bytes
_INT64_MIN = np.iinfo(np.int64).min


# Logical types whose value fastavro converts (a date, a time, a datetime) and fails to
# outside these ranges, by (Avro type, logicalType): Python's years 1 to 9999, a day's
# hours. Checked against fastavro at the edges by the tests.
_MILLIS = (-62_135_596_800_000, 253_402_300_799_999)
_MICROS = (_MILLIS[0] * 1000, _MILLIS[1] * 1000 + 999)
_LOGICAL_RANGES = {
    ("int", "date"): (-719_162, 2_932_896),
    ("int", "time-millis"): (-3_599_999, 86_399_999),
    ("long", "time-micros"): (-3_599_999_999, 86_399_999_999),
    ("long", "timestamp-millis"): _MILLIS,
    ("long", "timestamp-micros"): _MICROS,
    ("long", "local-timestamp-millis"): _MILLIS,
    ("long", "local-timestamp-micros"): _MICROS,
}


class _Unsupported(Exception):
    """A schema the vectorised walk does not cover (a recursive type)."""


# A plan is a list of steps, each a tuple whose first element names it:
# ("skip", n) | ("varint", max_len) | ("range", max_len, low, high) | ("bool",)
# | ("enum", n) | ("bytes", utf8, uuid) | ("union", [plan, ...]) | ("array", plan)
# | ("map", plan)
Plan = list[tuple[Any, ...]]


def _compile(schema: Any, named: dict[str, Any], open_names: set[str]) -> Plan:
    if isinstance(schema, list):
        return [("union", [_compile(branch, named, open_names) for branch in schema])]
    if isinstance(schema, str):
        if schema in _FIXED_SIZES:
            return [("skip", _FIXED_SIZES[schema])] if _FIXED_SIZES[schema] else []
        simple = {"boolean": ("bool",), "int": ("varint", 5), "long": ("varint", 10),
                  "string": ("bytes", True, False), "bytes": ("bytes", False, False)}
        if schema in simple:
            return [simple[schema]]
        if schema in open_names:
            raise _Unsupported(f"recursive type {schema}")
        if schema in named:
            return _compile(named[schema], named, open_names)
        raise _Unsupported(f"unknown type {schema}")
    kind = schema["type"]
    if kind in ("record", "error", "enum", "fixed"):
        name = schema.get("name", "")
        named.setdefault(name, schema)
        if kind == "enum":
            return [("enum", len(schema["symbols"]))]
        if kind == "fixed":
            if int(schema["size"]) < 0:
                raise _Unsupported(f"fixed {name} of negative size")
            return [("skip", int(schema["size"]))] if schema["size"] else []
        plan: Plan = []
        for f in schema["fields"]:
            plan += _compile(f["type"], named, open_names | {name})
        return _merge_skips(plan)
    if kind == "array":
        return [("array", _compile(schema["items"], named, open_names))]
    if kind == "map":
        return [("map", [("bytes", True, False),
                         *_compile(schema["values"], named, open_names)])]
    logical = (kind, schema.get("logicalType"))  # a primitive written as {"type": ...}
    if logical in _LOGICAL_RANGES:
        return [("range", 5 if kind == "int" else 10, *_LOGICAL_RANGES[logical])]
    if logical == ("string", "uuid"):
        return [("bytes", True, True)]
    return _compile(kind, named, open_names)


def _merge_skips(plan: Plan) -> Plan:
    merged: Plan = []
    for step in plan:
        if step[0] == "skip" and merged and merged[-1][0] == "skip":
            merged[-1] = ("skip", merged[-1][1] + step[1])
        else:
            merged.append(step)
    return merged


def _min_size(plan: Plan) -> int:
    return sum(step[1] if step[0] == "skip" else 1 for step in plan)


class _Walk:
    """The bodies under check and what the steps learn about them.

    A position is either an array of absolute offsets into ``buf``, or, while every
    body so far has had the same layout, one offset into each row of ``rows`` (bodies
    of equal size stacked as a matrix), where reading a field is a slice, not a gather.
    """

    def __init__(self, buf: np.ndarray, starts: np.ndarray | None = None,
                 ends: np.ndarray | None = None, rows: np.ndarray | None = None) -> None:
        self.buf = buf
        self._starts = starts
        self._ends = ends
        self.rows = rows
        self._high: np.ndarray | None = None
        self._stops: np.ndarray | None = None  # where each varint of buf could end
        self._long_varints: dict[int, np.ndarray] = {}

    @property
    def starts(self) -> np.ndarray:
        if self._starts is None:  # rows of equal size: made only when a step needs them
            assert self.rows is not None
            n, size = self.rows.shape
            self._starts = np.arange(n, dtype=np.int64) * size
        return self._starts

    @property
    def ends(self) -> np.ndarray:
        if self._ends is None:
            assert self.rows is not None
            self._ends = self.starts + self.rows.shape[1]
        return self._ends

    def absolute(self, pos: int | np.ndarray) -> np.ndarray:
        return self.starts + pos if isinstance(pos, int) else pos

    def high_before(self, pos: np.ndarray) -> np.ndarray:
        """How many bytes >= 0x80 lie before each position (for the UTF-8 shortcut)."""
        if self._high is None:
            self._high = np.concatenate(([0], np.cumsum(self.buf >= 0x80)))
        return self._high[np.clip(pos, 0, len(self.buf))]

    def take(self, pos: np.ndarray) -> np.ndarray:
        """The bytes at ``pos``, clipped to the buffer. ``take`` wants the platform's
        index type: int64 positions do not cast to it on 32-bit ARM (a TypeError there)."""
        return self.buf.take(pos.astype(np.intp, copy=False), mode="clip")

    def varints(self, pos: int | np.ndarray, max_len: int, ok: np.ndarray, values: bool = False
                ) -> tuple[int | np.ndarray, np.ndarray | None]:
        """Varints at ``pos``: the positions after them and, if asked, their zig-zag
        values; clears ``ok`` where one does not end in ``max_len`` bytes or overflows."""
        if isinstance(pos, int):
            assert self.rows is not None
            if not values and (after := self._same_varint(pos, max_len)):
                return after, None
            window = self.rows[:, pos : pos + max_len]
            if not window.shape[1]:
                ok[:] = False
                return pos, np.zeros(len(ok), dtype=np.int64) if values else None
        elif not len(self.buf):  # nothing but empty bodies
            ok[:] = False
            return pos + 1, np.zeros(len(ok), dtype=np.int64) if values else None
        else:
            window = self.take(pos[:, None] + np.arange(max_len))
        stop = window < 0x80
        last = stop.argmax(axis=1)
        ok &= stop[:, 0] | (last > 0)  # argmax is 0 where no byte ends the varint
        if window.shape[1] == max_len:
            full = last == max_len - 1
            if full.any():
                ok &= ~full | (window[:, -1] <= _LAST_BYTE[max_len])
        decoded = None
        if values:
            width = window.shape[1]
            digits = (window & 0x7F).astype(np.uint64) << (
                np.arange(width, dtype=np.uint64) * np.uint64(7))
            digits[np.arange(width) > last[:, None]] = 0
            raw = np.bitwise_or.reduce(digits, axis=1)
            decoded = (raw >> np.uint64(1)).astype(np.int64) ^ -(
                raw & np.uint64(1)).astype(np.int64)
        if isinstance(pos, int):
            if (last == last[0]).all():
                return pos + int(last[0]) + 1, decoded
            return self.starts + pos + last + 1, decoded
        return pos + last + 1, decoded

    def _same_varint(self, pos: int, max_len: int) -> int:
        """Where varints at column ``pos`` end if all have the first row's length, else 0.

        The usual case (a time stamp of one length in every row) in a few reductions."""
        assert self.rows is not None
        first = self.rows[0, pos : pos + max_len].tobytes()
        last = pos + next((i for i, byte in enumerate(first) if byte < 0x80), max_len)
        if last - pos == max_len or last >= self.rows.shape[1]:
            return 0
        top = self.rows[:, last].max()
        if top >= 0x80 or (last - pos == max_len - 1 and top > _LAST_BYTE[max_len]):
            return 0
        if last > pos and self.rows[:, pos:last].min() < 0x80:
            return 0
        return last + 1

    def varint_runs(self, pos: np.ndarray, count: np.ndarray, max_len: int, end: np.ndarray,
                    ok: np.ndarray) -> np.ndarray:
        """Where ``count`` varints from each position end, all at once (an array of ints
        or longs: no loop over its items); clears ``ok`` where one is longer than
        ``max_len``, overflows, or runs past ``end``."""
        if self._stops is None:
            self._stops = np.flatnonzero(self.buf < 0x80)
        stops = self._stops
        if max_len not in self._long_varints:  # per stop: does the varint it ends break?
            length = np.diff(stops, prepend=-1)
            bad = (length > max_len) | ((length == max_len)
                                        & (self.buf[stops] > _LAST_BYTE[max_len]))
            self._long_varints[max_len] = np.concatenate(([0], np.cumsum(bad)))
        broken = self._long_varints[max_len]
        if not len(stops):
            ok &= count == 0
            return pos
        first = np.searchsorted(stops, pos)  # the stop that ends each run's first varint
        last = first + count - 1
        inside = (count == 0) | (last < len(stops))
        f, lst = np.clip(first, 0, len(stops) - 1), np.clip(last, 0, len(stops) - 1)
        first_len = stops[f] - pos + 1
        first_ok = (first_len <= max_len) & ~(
            (first_len == max_len) & (self.buf[stops[f]] > _LAST_BYTE[max_len]))
        after = stops[lst] + 1
        ok &= (count == 0) | (inside & first_ok & (broken[lst + 1] - broken[f + 1] == 0)
                              & (after <= end))
        return np.where(count > 0, after, pos)

    def run(self, plan: Plan, pos: int | np.ndarray, ok: np.ndarray,
            end: np.ndarray | None = None) -> int | np.ndarray:
        """Walk ``plan`` from ``pos`` (bodies ending at ``end``, default all of them);
        clears ``ok`` where a body breaks a rule."""
        for step in plan:
            if not len(ok):
                return pos
            kind = step[0]
            if kind == "skip":
                pos = pos + step[1]
            elif kind == "varint":
                pos, _ = self.varints(pos, step[1], ok)
            elif kind == "bool":
                if isinstance(pos, int):
                    assert self.rows is not None
                    if pos < self.rows.shape[1]:
                        ok &= self.rows[:, pos] <= 1
                    else:
                        ok[:] = False
                else:
                    ok &= self.take(pos) <= 1 if len(self.buf) else False
                pos = pos + 1
            elif kind == "range":
                pos, value = self.varints(self.absolute(pos), step[1], ok, values=True)
                ok &= (value >= step[2]) & (value <= step[3])
            elif kind == "enum":
                pos, index = self.varints(self.absolute(pos), 5, ok, values=True)  # an int
                ok &= (index >= 0) & (index < step[1])
            else:  # steps that need absolute positions and the bodies' ends
                at, ends = self.absolute(pos), self.ends if end is None else end
                if kind == "bytes":
                    pos = self._bytes(at, ends, ok, utf8=step[1], uuid=step[2])
                elif kind == "union":
                    pos = self._union(step[1], at, ends, ok)
                else:  # array or map
                    pos = self._blocks(step[1], at, ends, ok)
        return pos

    def _bytes(self, pos: np.ndarray, end: np.ndarray, ok: np.ndarray, utf8: bool,
               uuid: bool = False) -> np.ndarray:
        good = np.ones(len(pos), dtype=bool)
        pos, size = self.varints(pos, 10, good, values=True)
        assert isinstance(pos, np.ndarray) and size is not None
        good &= (size >= 0) & (size <= end - pos)
        ok &= good
        size = np.where(good, size, 0)
        if utf8:
            high = self.high_before(pos + size) - self.high_before(pos)
            for i in np.flatnonzero(ok & (high > 0)).tolist():
                try:
                    self.buf[pos[i] : pos[i] + size[i]].tobytes().decode("utf-8")
                except UnicodeDecodeError:
                    ok[i] = False
        if uuid:  # what fastavro makes a UUID of: one by one, a rare type
            for i in np.flatnonzero(ok).tolist():
                try:
                    UUID(self.buf[pos[i] : pos[i] + size[i]].tobytes().decode("utf-8"))
                except ValueError:
                    ok[i] = False
        return np.where(good, pos + size, end + 1)

    def _union(self, branches: list[Plan], pos: np.ndarray, end: np.ndarray, ok: np.ndarray
               ) -> np.ndarray:
        pos, index = self.varints(pos, 5, ok, values=True)  # an int
        assert isinstance(pos, np.ndarray) and index is not None
        ok &= (index >= 0) & (index < len(branches))
        for b, branch in enumerate(branches):
            rows = np.flatnonzero(ok & (index == b))
            if len(rows) and branch:
                sub_ok = ok[rows]
                pos[rows] = self.run(branch, pos[rows], sub_ok, end[rows])
                ok[rows] = sub_ok
        return pos

    def _blocks(self, item: Plan, pos: np.ndarray, end: np.ndarray, ok: np.ndarray
                ) -> np.ndarray:
        """Array or map blocks: a count (negative: followed by the block's byte size, which
        must be the bytes its items take), the items, until a zero count."""
        item_size = _min_size(item)
        skip_only = all(step[0] == "skip" for step in item)  # items of one size: no loop
        varints = item[0][1] if len(item) == 1 and item[0][0] == "varint" else 0  # nor here
        pos = pos.copy()
        total = None if item_size else np.zeros(len(pos), dtype=np.int64)  # items so far
        open_rows = np.flatnonzero(ok)
        while len(open_rows):
            sub_ok = ok[open_rows]
            sub_end = end[open_rows]
            p, count = self.varints(pos[open_rows], 10, sub_ok, values=True)
            assert isinstance(p, np.ndarray) and count is not None
            sized = count < 0
            first = size = None
            if sized.any():  # INT64_MIN's magnitude does not fit: refused, not negated
                sub_ok &= count != _INT64_MIN
                count = np.where(sized & sub_ok, -count, count)
                size_ok = np.ones(len(p), dtype=bool)
                after, size = self.varints(p, 10, size_ok, values=True)
                assert size is not None
                sub_ok &= size_ok | ~sized
                p = np.where(sized, after, p)
                sub_ok &= ~sized | ((size >= 0) & (size <= sub_end - p))
                first = p.copy()
            if total is None:
                sub_ok &= count <= np.maximum(sub_end - p, 0) // item_size
            else:
                total[open_rows] += np.where(sub_ok, count, 0)
                sub_ok &= total[open_rows] <= _MAX_ZERO_SIZE_ITEMS
            count = np.where(sub_ok, count, 0)
            if skip_only:
                p = p + count * item_size
            elif varints:
                p = self.varint_runs(p, count, varints, sub_end, sub_ok)
            else:
                left = count.copy()
                while (busy := np.flatnonzero(sub_ok & (left > 0))).size:
                    items_ok = sub_ok[busy]
                    p[busy] = self.run(item, p[busy], items_ok, sub_end[busy])
                    sub_ok[busy] = items_ok
                    left[busy] -= 1
            if first is not None:
                sub_ok &= ~sized | (p - first == size)
            pos[open_rows] = p
            ok[open_rows] = sub_ok
            open_rows = open_rows[sub_ok & (count > 0)]
        return pos


class BodyCheck:
    """Says which bodies are exactly one record of a schema (see the module docstring)."""

    def __init__(self, parsed_schema: Any) -> None:
        self.parsed = parsed_schema
        try:
            self._plan: Plan | None = _compile(parsed_schema, {}, set())
        except _Unsupported:
            self._plan = None  # checked record by record with fastavro

    def valid(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """For bodies at ``data[starts[i]:ends[i]]`` (uint8), which are valid."""
        if self._plan is None:
            return np.array([self._decodes(data[s:e].tobytes())
                             for s, e in zip(starts.tolist(), ends.tolist(), strict=True)],
                            dtype=bool)
        ok = np.ones(len(starts), dtype=bool)
        pos = _Walk(data, starts, ends).run(self._plan, starts.astype(np.int64), ok)
        return ok & (pos == ends)

    def valid_rows(self, rows: np.ndarray) -> np.ndarray:
        """``valid`` for bodies of one size stacked as the rows of a C-contiguous matrix."""
        n, size = rows.shape
        if self._plan is None or not n:
            starts = np.arange(n, dtype=np.int64) * size
            return self.valid(rows.reshape(-1), starts, starts + size)
        ok = np.ones(n, dtype=bool)
        walk = _Walk(rows.reshape(-1), rows=rows)
        pos = walk.run(self._plan, 0, ok)
        if isinstance(pos, int):
            return ok if pos == size else np.zeros(n, dtype=bool)
        return ok & (pos == walk.ends)

    def valid_bodies(self, bodies: Sequence[bytes | memoryview]) -> np.ndarray:
        """``valid`` for separate bodies."""
        data = np.frombuffer(b"".join(bodies), dtype=np.uint8)
        size = len(bodies[0]) if bodies else 0
        if all(len(b) == size for b in bodies) and size:  # the usual case: one layout
            return self.valid_rows(data.reshape(len(bodies), size))
        sizes = np.fromiter((len(b) for b in bodies), dtype=np.int64, count=len(bodies))
        ends = np.cumsum(sizes)
        return self.valid(data, ends - sizes, ends)

    def _decodes(self, body: bytes) -> bool:
        stream = io.BytesIO(body)
        try:
            fastavro.schemaless_reader(stream, self.parsed, None)
        except Exception:  # any decoding failure: not a record of this schema
            return False
        return stream.tell() == len(body)
