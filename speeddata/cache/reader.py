"""Reading records back out of the cache for a channel and a receive-time range."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro

from speeddata.cache import avrofile, index
from speeddata.cache.catalogue import CachedFile, Catalogue
from speeddata.schemas import Channel, Registry, channel_from_schema


def read_header(path: Path) -> tuple[bytes, avrofile.Header]:
    """The raw header bytes of a cache file and their parsed form."""
    with path.open("rb") as f:
        data = f.read(65536)
        while True:
            try:
                header = avrofile.decode_header(data)
                return data[: header.size], header
            except ValueError:
                more = f.read(len(data))
                if not more:
                    raise
                data += more


def read_blocks(path: Path, entries: list[index.Entry]) -> bytes:
    """A standalone Avro container (the file's header and just ``entries``) as bytes."""
    head, _ = read_header(path)
    parts = [head]
    with path.open("rb") as f:
        for entry in entries:
            f.seek(entry.offset)
            parts.append(f.read(entry.length))
    return b"".join(parts)


def records(
    cache_dir: Path, channel: str, start_ns: int, end_ns: int
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(receive time ns, record)`` for every record of ``channel`` received in the range."""
    for cached, entries in Catalogue(cache_dir).blocks(channel, start_ns, end_ns):
        data = read_blocks(cached.path, entries)
        reader = fastavro.reader(io.BytesIO(data))
        times = iter([e.recv_ns for e in entries for _ in range(e.count)])
        for record in reader:
            yield next(times), record


def channel_of(path: Path, registry: Registry | None) -> Channel:
    """The channel as written in the cache file's header (the schema the data has)."""
    _, header = read_header(path)
    schema = json.loads(header.metadata["avro.schema"])
    channel = channel_from_schema(schema, str(path))
    if registry is not None and channel.name in registry:
        known = registry[channel.name]
        if known.fingerprint == channel.fingerprint:
            return known
    return channel


def block_bodies(blocks: list[tuple[CachedFile, index.Entry]]
                 ) -> Iterator[tuple[CachedFile, index.Entry, bytes]]:
    """Each block's record data (count and size prefix and sync marker removed)."""
    handles: dict[Path, Any] = {}
    try:
        for cached, entry in blocks:
            f = handles.get(cached.path)
            if f is None:
                f = handles[cached.path] = cached.path.open("rb")
            f.seek(entry.offset)
            raw = f.read(entry.length)
            _, pos = avrofile.decode_long(raw, 0)
            size, pos = avrofile.decode_long(raw, pos)
            yield cached, entry, raw[pos : pos + size]
    finally:
        for f in handles.values():
            f.close()
