"""The binary frame format of the stripchart WebSocket (no I/O).

A frame is: a little-endian u32 giving the length of a JSON header, the header, zero
padding to a multiple of 8 bytes, then float64 arrays. The header lists the series;
each series of ``n`` buckets is followed by five arrays of ``n`` float64: bucket start
(ms since the epoch), min, max, last value, time of the last value (ms). Text values
travel in the header (they are few). The page reads the arrays as Float64Array views
without copying.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

FIELDS = ("start_ms", "low", "high", "last", "last_ms")


def encode(header: dict[str, Any], arrays: list[np.ndarray]) -> bytes:
    """The frame of ``header`` and ``arrays``, in order (an array may hold many series'
    arrays, as a (series, 5, n) block does): one copy of each array, into the frame."""
    return encode_text(json.dumps(header, separators=(",", ":")).encode(), arrays)


def encode_text(text: bytes, arrays: list[np.ndarray]) -> bytes:
    """``encode`` for a header already JSON (``Hub.frame`` writes its own: two hundred
    series' dicts made and dumped cost a fifth of a frame)."""
    pad = (-(4 + len(text))) % 8
    parts: list[Any] = [struct.pack("<I", len(text)), text, bytes(pad)]
    parts += [np.ascontiguousarray(a, dtype="<f8") for a in arrays]
    return b"".join(parts)


def decode(frame: bytes) -> tuple[dict[str, Any], dict[tuple[str, int], dict[str, np.ndarray]]]:
    """The inverse of ``encode`` for the tests and tools: header and series by (signal, level)."""
    (length,) = struct.unpack_from("<I", frame)
    header = json.loads(frame[4 : 4 + length])
    offset = 4 + length + (-(4 + length)) % 8
    series = {}
    for entry in header.get("series", []):
        n = entry["n"]
        arrays = {}
        for name in FIELDS:
            arrays[name] = np.frombuffer(frame, dtype="<f8", count=n, offset=offset)
            offset += 8 * n
        series[(entry["signal"], entry["level"])] = arrays
    return header, series
