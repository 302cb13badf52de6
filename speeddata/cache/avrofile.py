"""The Avro object container file format, as bytes in and bytes out (no I/O).

A cache file is a standard container file (Avro specification, "Object Container
Files") with the null codec, so each received batch of raw record bodies becomes a
block by adding a count, a size and the sync marker: nothing is re-encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from speeddata.encoding import zigzag_varint as encode_long  # one encoder of longs

MAGIC = b"Obj\x01"
SYNC_SIZE = 16


def decode_long(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode a long at ``pos``; returns ``(value, next_pos)``. IndexError if cut short."""
    shift = 0
    n = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
    return (n >> 1) ^ -(n & 1), pos


def _encode_bytes(value: bytes) -> bytes:
    return encode_long(len(value)) + value


def encode_header(metadata: dict[str, bytes], sync: bytes) -> bytes:
    """The file header: magic, metadata map (string to bytes), sync marker."""
    if len(sync) != SYNC_SIZE:
        raise ValueError("the sync marker is 16 bytes")
    parts = [MAGIC]
    if metadata:
        parts.append(encode_long(len(metadata)))
        for key, value in metadata.items():
            parts.append(_encode_bytes(key.encode("utf-8")))
            parts.append(_encode_bytes(value))
    parts.append(encode_long(0))
    parts.append(sync)
    return b"".join(parts)


@dataclass(frozen=True)
class Header:
    metadata: dict[str, bytes]
    sync: bytes
    size: int  # bytes from the start of the file to the first block


def decode_header(data: bytes | memoryview) -> Header:
    """Parse a file header; ValueError if ``data`` is not (or not yet all of) one."""
    if bytes(data[:4]) != MAGIC:
        raise ValueError("not an Avro object container file (bad magic)")
    pos = 4
    metadata: dict[str, bytes] = {}
    try:
        while True:
            count, pos = decode_long(data, pos)
            if count == 0:
                break
            if count < 0:  # a negative count is followed by the block's byte size
                count = -count
                _, pos = decode_long(data, pos)
            for _ in range(count):
                length, pos = decode_long(data, pos)
                key = bytes(data[pos : pos + length]).decode("utf-8")
                pos += length
                length, pos = decode_long(data, pos)
                value = bytes(data[pos : pos + length])
                if len(value) != length:
                    raise IndexError
                pos += length
                metadata[key] = value
        sync = bytes(data[pos : pos + SYNC_SIZE])
    except IndexError:
        raise ValueError("the file header is cut short") from None
    if len(sync) != SYNC_SIZE:
        raise ValueError("the file header is cut short")
    return Header(metadata, sync, pos + SYNC_SIZE)


def block_prefix(count: int, size: int) -> bytes:
    """What goes before ``size`` bytes of ``count`` concatenated record bodies."""
    return encode_long(count) + encode_long(size)


@dataclass(frozen=True)
class Block:
    offset: int  # of the block's first byte (its count) in the file
    length: int  # of the whole block, count to sync marker included
    count: int


def walk_blocks(data: Any, start: int, sync: bytes
                ) -> tuple[list[Block], list[tuple[int, int]], int]:
    """Walk every whole block in ``data`` from ``start``, past damage too.

    Where the bytes are not a whole block ending in ``sync`` (an overwritten or missing
    stretch), the walk resumes after the next sync marker, as Avro readers resync.
    ``data`` is bytes or an mmap (anything with ``find``). Returns the whole blocks,
    the damaged byte ranges between them, and the tail: where the bytes with no whole
    block after them begin (``len(data)`` when there are none), the length a torn file
    must be cut back to.
    """
    blocks: list[Block] = []
    bad: list[tuple[int, int]] = []
    pos = start
    end = len(data)
    while pos < end:
        try:
            count, p = decode_long(data, pos)
            size, p = decode_long(data, p)
        except (IndexError, ValueError):
            count = size = p = -1
        stop = p + size + SYNC_SIZE
        if count > 0 and size >= 0 and stop <= end and data[p + size : stop] == sync:
            blocks.append(Block(pos, stop - pos, count))
            pos = stop
            continue
        found = data.find(sync, pos)
        if found < 0:
            return blocks, bad, pos
        bad.append((pos, found + SYNC_SIZE))
        pos = found + SYNC_SIZE
    return blocks, bad, end
