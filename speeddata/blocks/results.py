"""What a block's function returns, checked and turned into datagrams.

A function is the user's code: its result is input like any other, validated into a
typed value (a float64 matrix, a column per output signal, a row per input sample) or
refused with a reason (a short counter key) and a message that says what was wrong."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from speeddata import wire
from speeddata.encoding import zigzag_varint
from speeddata.errors import SpeeddataError


class ResultError(SpeeddataError, ValueError):
    """A function's result that makes no records. ``reason`` is its counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Rows:
    """A checked result: ``values[i, j]`` is signal ``j`` of the row at ``times[i]``."""

    times: np.ndarray  # int64 ns
    values: np.ndarray  # float64, shape (rows, signals), C order


def check(result: Any, signals: tuple[str, ...], times: np.ndarray) -> Rows | None:
    """``result`` as rows at ``times`` (None: the function sent nothing this batch).
    ResultError says what is wrong: not a dict, a signal missing or unknown, a column
    that is not numbers, not one-dimensional or not one value per input sample."""
    if result is None:
        return None
    if not isinstance(result, Mapping):
        raise ResultError("not_a_dict", f"returned a {type(result).__name__}, not a dict "
                          f"of {{signal: array}} for {', '.join(signals)}")
    keys = set(result)
    if missing := [s for s in signals if s not in keys]:
        raise ResultError("missing_signal", f"returned no {', '.join(missing)} (it must "
                          f"return every declared signal: {', '.join(signals)})")
    if unknown := sorted(map(str, keys - set(signals))):
        raise ResultError("unknown_signal", f"returned {', '.join(unknown)}, not declared "
                          f"(declared: {', '.join(signals)}); add it to signals=")
    values = np.empty((len(times), len(signals)), dtype="<f8")
    for j, name in enumerate(signals):
        try:
            column = np.asarray(result[name])
        except Exception as exc:  # a ragged list, an object numpy cannot take
            raise ResultError("not_numbers", f"signal {name}: not an array ({exc})") from None
        if column.dtype.kind not in "fiub":
            raise ResultError("not_numbers", f"signal {name}: an array of {column.dtype}, "
                              "not numbers")
        if column.ndim != 1:
            raise ResultError("wrong_shape", f"signal {name}: shape {column.shape}, not one "
                              f"value per input sample ({len(times)},)")
        if len(column) != len(times):
            raise ResultError("wrong_length", f"signal {name}: {len(column)} values for "
                              f"{len(times)} input samples (one per sample)")
        values[:, j] = column
    return Rows(times, values)


def nan_rows(rows: Rows) -> np.ndarray:
    """Which rows hold a NaN."""
    return np.isnan(rows.values).any(axis=1)


def _varints(times: np.ndarray) -> np.ndarray | None:
    """Avro longs of ``times`` as a byte matrix, a row each, when all take the same
    number of bytes (a ns time takes 9 for any date from 1971 to 2116); else None."""
    zigzag = (times.astype(np.int64) << 1) ^ (times.astype(np.int64) >> 63)
    n = zigzag.view(np.uint64)
    widths = np.ones(len(n), dtype=np.int64)
    for k in range(1, 10):
        widths += n >= np.uint64(1) << np.uint64(7 * k)
    if not len(n) or np.any(widths != widths[0]):
        return None
    width = int(widths[0])
    shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
    out = ((n[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    out[:, :-1] |= 0x80
    return out


def encode(fingerprint: bytes, rows: Rows) -> list[bytes]:
    """One single-object datagram per row: the header, ``time`` as an Avro long, then each
    signal as a little-endian double, in the schema's field order (declare.Block.schema).
    Built as one byte matrix for the batch: no Python work per field."""
    header = wire.header(fingerprint)
    values = np.ascontiguousarray(rows.values, dtype="<f8")
    varints = _varints(rows.times)
    if varints is None:  # times of mixed widths: rare, one at a time
        data = values.tobytes()
        width = 8 * values.shape[1]
        return [header + zigzag_varint(t) + data[i * width:(i + 1) * width]
                for i, t in enumerate(rows.times.tolist())]
    count = len(values)
    matrix = np.empty((count, len(header) + varints.shape[1] + 8 * values.shape[1]),
                      dtype=np.uint8)
    matrix[:, :len(header)] = np.frombuffer(header, dtype=np.uint8)
    matrix[:, len(header):len(header) + varints.shape[1]] = varints
    matrix[:, len(header) + varints.shape[1]:] = values.view(np.uint8).reshape(count, -1)
    data = matrix.tobytes()
    size = matrix.shape[1]
    return [data[i:i + size] for i in range(0, len(data), size)]
