"""The time index beside each cache file: one fixed-size entry per block (no I/O).

``<file>.idx`` holds, for every block of ``<file>.avro``, its offset, length, record
count and the relay's receive time. Finding a time range reads only these entries,
never the Avro data, so its cost does not grow with the cache.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

ENTRY = struct.Struct("<QIIq")  # offset, length, count, receive time (ns)
ENTRY_SIZE = ENTRY.size


@dataclass(frozen=True)
class Entry:
    offset: int
    length: int
    count: int
    recv_ns: int

    def pack(self) -> bytes:
        return ENTRY.pack(self.offset, self.length, self.count, self.recv_ns)


def unpack(data: bytes) -> list[Entry]:
    """Every whole entry in ``data``; a torn last entry is ignored."""
    whole = len(data) - len(data) % ENTRY_SIZE
    return [Entry(*fields) for fields in ENTRY.iter_unpack(data[:whole])]


def in_range(entries: list[Entry], start_ns: int, end_ns: int) -> Iterator[Entry]:
    """The entries whose receive time is in ``[start_ns, end_ns]``."""
    for entry in entries:
        if start_ns <= entry.recv_ns <= end_ns:
            yield entry
