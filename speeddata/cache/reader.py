"""Reading records back out of the cache for a channel and a receive-time range.

Every block is read through ``speeddata.cache.check``: damaged ones are skipped and
noted in a ``Skipped``, never raised.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro

from speeddata.cache import avrofile, check, index
from speeddata.cache.catalogue import CachedFile, Catalogue
from speeddata.schemas import Channel, Registry


def read_header(path: Path) -> tuple[bytes, avrofile.Header]:
    """The raw header bytes of a cache file and their parsed form; ValueError if it
    has none."""
    with path.open("rb") as f:
        return check.read_header(f)


def records(
    cache_dir: Path, channel: str, start_ns: int, end_ns: int,
    skipped: check.Skipped | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(receive time ns, record)`` for every record of ``channel`` received in the
    range; damaged blocks are left out and noted in ``skipped``."""
    with check.BlockReader(skipped) as reader:
        for cached, entries in Catalogue(cache_dir).blocks(channel, start_ns, end_ns):
            found = reader.channel(cached.path)
            if found is None:
                reader.skip_file(cached.path, entries)
                continue
            for entry in entries:
                data = reader.body(cached.path, entry)
                if data is None:
                    continue
                decoded = _records(found, data, entry.count)
                if decoded is None:
                    reader.skipped.add(check.Damage(
                        cached.path, entry.offset, entry.offset + entry.length, "decode",
                        entry.count))
                    continue
                for record in decoded:
                    yield entry.recv_ns, record


def _records(channel: Channel, data: bytes, count: int) -> list[dict[str, Any]] | None:
    """Exactly ``count`` records making up ``data``, or None."""
    stream = io.BytesIO(data)
    try:
        out = [fastavro.schemaless_reader(stream, channel.parsed, None) for _ in range(count)]
    except Exception:  # garbage fails in many ways; it is this block's, not the reader's
        return None
    return out if stream.tell() == len(data) else None


def channel_of(path: Path, registry: Registry | None) -> Channel:
    """The channel as written in the cache file's header (the schema the data has);
    ValueError if the header holds none."""
    _, header = read_header(path)
    return check.channel_of_header(header, str(path), registry)


def block_bodies(blocks: list[tuple[CachedFile, index.Entry]],
                 skipped: check.Skipped | None = None,
                 ) -> Iterator[tuple[CachedFile, index.Entry, bytes]]:
    """Each good block's record data (count and size prefix and sync marker removed);
    damaged blocks are left out and noted in ``skipped``."""
    with check.BlockReader(skipped) as reader:
        yield from reader.bodies(blocks)
