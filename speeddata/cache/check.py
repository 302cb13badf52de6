"""Every read of the cache checked: damage is found, skipped with its byte range, counted.

A cache file can be damaged after it was written: a disk that loses or flips bytes, a
copy cut short, an overwritten header. Every reader (pivot, replay, scroll-back,
``speeddata verify``) reads blocks through ``BlockReader``: a block's bytes must be in
the file, its own count and size must agree with its index entry, its sync marker with
the file header's, and its records must decode to exactly its data. A block that fails
is skipped and noted as a ``Damage`` with its byte range; a file whose header cannot be
read is skipped whole. Nothing read from the disk raises out of here, so a reader goes
on with the rest and says what it skipped. No sockets, no clocks.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from speeddata.cache import avrofile, index
from speeddata.schemas import Channel, Registry, channel_from_schema

HEAD_READ = 4096  # a header is read with this many bytes, then twice as many, ...
HEAD_MOST = 16 * 2**20  # a "header" longer than this is garbage, not a schema

REASONS = {
    "header": "the file header cannot be read",
    "index": "the index entry points outside the file's blocks",
    "missing": "the bytes are not in the file (cut short)",
    "prefix": "the block's count or size disagrees with its index entry",
    "sync": "the block's sync marker is wrong",
    "block": "not a whole block: its count, size or sync marker is wrong",
    "unindexed": "a whole block the index lacks (readers do not see it)",
    "decode": "the block's records do not decode",
    "unreadable": "reading the file failed",
}


@dataclass
class Damage:
    """Bytes ``[start, end)`` of a cache file that could not be used, and why."""

    path: Path
    start: int
    end: int
    reason: str  # a key of REASONS: a short counter name
    records: int | None = None  # records lost there, when the index says

    def as_dict(self, root: Path | None = None) -> dict[str, Any]:
        """For JSON: the file relative to ``root`` (a visitor needs no absolute paths)."""
        name = self.path
        if root is not None and self.path.is_relative_to(root):
            name = self.path.relative_to(root)
        return {"file": str(name), "start": self.start, "end": self.end,
                "reason": self.reason, "records": self.records}

    def __str__(self) -> str:
        lost = "" if self.records is None else f", {self.records} records"
        return f"{self.path} bytes {self.start}-{self.end}: {REASONS[self.reason]}{lost}"


class Skipped:
    """What a read skipped: damage per file and range (adjacent blocks of one file and
    reason merged into one range), counted by reason."""

    def __init__(self) -> None:
        self.damage: list[Damage] = []
        self.by_reason: Counter[str] = Counter()
        self.blocks = 0
        self._last: dict[tuple[Path, str], Damage] = {}

    def add(self, damage: Damage) -> None:
        self.blocks += 1
        self.by_reason[damage.reason] += 1
        last = self._last.get((damage.path, damage.reason))
        if last is not None and last.start <= damage.start <= last.end:
            last.end = max(last.end, damage.end)
            if damage.records is not None:
                last.records = (last.records or 0) + damage.records
            return
        self.damage.append(damage)
        self._last[(damage.path, damage.reason)] = damage

    def extend(self, damages: list[Damage]) -> None:
        for damage in damages:
            self.add(Damage(damage.path, damage.start, damage.end, damage.reason,
                            damage.records))

    @property
    def records(self) -> int:
        return sum(d.records or 0 for d in self.damage)

    def __bool__(self) -> bool:
        return bool(self.damage)

    def as_list(self, root: Path | None = None) -> list[dict[str, Any]]:
        return [d.as_dict(root) for d in self.damage]

    def statistics(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "records": self.records,
                "files": len({d.path for d in self.damage}),
                "by_reason": dict(self.by_reason),
                "last": str(self.damage[-1]) if self.damage else ""}

    def lines(self, most: int = 10) -> list[str]:
        """For a command's warning: the summary, then each damage (the first ``most``)."""
        out = [self.summary()] + [str(d) for d in self.damage[:most]]
        if len(self.damage) > most:
            out.append(f"and {len(self.damage) - most} more: 'speeddata verify' lists all")
        return out

    def summary(self) -> str:
        """One line: how much was skipped, in how many files."""
        files = len({d.path for d in self.damage})
        return (f"skipped {self.blocks} damaged blocks ({self.records} records known lost) "
                f"in {files} cache file{'s' if files != 1 else ''}")


def read_header(f: IO[bytes]) -> tuple[bytes, avrofile.Header]:
    """The raw header bytes of an open cache file and their parsed form; ValueError if
    it has none (or one longer than any schema)."""
    f.seek(0)
    data = f.read(HEAD_READ)
    while True:
        try:
            header = avrofile.decode_header(data)
            return data[: header.size], header
        except ValueError:
            more = f.read(len(data))
            if not more or len(data) > HEAD_MOST:
                raise
            data += more


def channel_of_header(header: avrofile.Header, where: str, registry: Registry | None
                      ) -> Channel:
    """The channel a header's schema defines (the registry's, if it is the same
    version); ValueError if the header holds no usable schema."""
    try:
        schema = json.loads(header.metadata["avro.schema"])
        channel = channel_from_schema(schema, where)
    except Exception as exc:  # any kind: damaged bytes can still parse as some JSON
        raise ValueError(f"no usable schema in the header: {exc}") from None
    if registry is not None and channel.name in registry:
        known = registry[channel.name]
        if known.fingerprint == channel.fingerprint:
            return known
    return channel


class _Open:
    def __init__(self, f: IO[bytes], head: bytes, header: avrofile.Header) -> None:
        self.f = f
        self.head = head
        self.header = header
        self.size = os.fstat(f.fileno()).st_size
        self.channel: Channel | None = None


class BlockReader:
    """Reads blocks of cache files, each checked; a handle and a header per file.

    Damaged blocks are added to ``skipped``. Use as a context manager (closes handles).
    """

    def __init__(self, skipped: Skipped | None = None, registry: Registry | None = None
                 ) -> None:
        self.skipped = skipped if skipped is not None else Skipped()
        self.registry = registry
        self._files: dict[Path, _Open | Damage] = {}

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for opened in self._files.values():
            if isinstance(opened, _Open):
                opened.f.close()
        self._files.clear()

    def _open(self, path: Path) -> _Open | Damage:
        opened = self._files.get(path)
        if opened is None:
            try:
                f = path.open("rb")
            except OSError:
                opened = Damage(path, 0, 0, "unreadable")
            else:
                try:
                    head, header = read_header(f)
                    opened = _Open(f, head, header)
                except (OSError, ValueError):
                    size = os.fstat(f.fileno()).st_size
                    f.close()
                    opened = Damage(path, 0, size, "header")
            self._files[path] = opened
        return opened

    def header(self, path: Path) -> tuple[bytes, avrofile.Header] | None:
        """A file's raw header and its parsed form, or None when it cannot be read."""
        opened = self._open(path)
        return None if isinstance(opened, Damage) else (opened.head, opened.header)

    def channel(self, path: Path) -> Channel | None:
        """The channel as the file's header has it, or None when it has none usable."""
        opened = self._open(path)
        if isinstance(opened, Damage):
            return None
        if opened.channel is None:
            try:
                opened.channel = channel_of_header(opened.header, str(path), self.registry)
            except ValueError:
                opened.f.close()
                opened = self._files[path] = Damage(path, 0, opened.size, "header")
                return None
        return opened.channel

    def skip_file(self, path: Path, entries: list[index.Entry]) -> None:
        """Note ``entries`` of a file whose header is unusable as skipped."""
        opened = self._open(path)
        size = opened.end if isinstance(opened, Damage) else opened.size
        reason = opened.reason if isinstance(opened, Damage) else "header"
        for entry in entries:
            self.skipped.add(Damage(path, 0, size, reason, entry.count))

    def body(self, path: Path, entry: index.Entry) -> bytes | None:
        """The block's record data (its count, size and sync marker removed), or None
        when it is damaged (then noted in ``skipped``)."""
        opened = self._open(path)
        if isinstance(opened, Damage):
            self.skip_file(path, [entry])
            return None
        found = check_block(opened, entry)
        if isinstance(found, str):
            start = min(entry.offset, opened.size) if found == "missing" else entry.offset
            self.skipped.add(Damage(path, start, entry.offset + entry.length, found,
                                    entry.count))
            return None
        return found

    def bodies(self, blocks: list[tuple[Any, index.Entry]]
               ) -> Iterator[tuple[Any, index.Entry, bytes]]:
        """``(cached file, entry, data)`` for each good block of ``blocks``, in order
        (each ``cached`` has a ``path``); damaged ones are skipped and noted."""
        for cached, entry in blocks:
            data = self.body(cached.path, entry)
            if data is not None:
                yield cached, entry, data

    def apply(self, fn: Callable[[bytes, int], Any], path: Path,
              blocks: list[tuple[index.Entry, bytes]]) -> tuple[list[Any], list[bool]]:
        """``fn(data, count)`` over ``blocks`` (entries and data of one file) at once; if
        it fails, block by block, the blocks it fails on skipped and noted as "decode".
        Returns the results (one, or one per good block) and per block whether it is in
        them. Any exception of ``fn`` counts: damaged bytes fail in many ways."""
        try:
            return [fn(b"".join(d for _, d in blocks), sum(e.count for e, _ in blocks))], [
                True] * len(blocks)
        except Exception:
            if len(blocks) == 1:
                entry = blocks[0][0]
                self.skipped.add(Damage(path, entry.offset, entry.offset + entry.length,
                                        "decode", entry.count))
                return [], [False]
        results, kept = [], []
        for entry, data in blocks:
            found, ok = self.apply(fn, path, [(entry, data)])
            results += found
            kept += ok
        return results, kept

    def decode(self, decoder: Any, path: Path, blocks: list[tuple[index.Entry, bytes]]
               ) -> tuple[dict[str, np.ndarray], list[bool]]:
        """The columns of ``blocks`` (entries and data of one file) from ``decoder`` (a
        ``ColumnDecoder``), the blocks that do not decode skipped (see ``apply``)."""
        parts, kept = self.apply(lambda data, count: exact_columns(decoder, data, count),
                                 path, blocks)
        if len(parts) == 1:
            return parts[0], kept
        if not parts:
            return decoder.empty(), kept
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, kept


def exact_columns(decoder: Any, data: bytes, count: int) -> dict[str, np.ndarray]:
    """``decoder.decode_block``, and ValueError unless every column has ``count`` rows."""
    columns = decoder.decode_block(data, count)
    if any(len(v) != count for v in columns.values()):
        raise ValueError(f"{count} records decoded to columns of other lengths")
    return columns


def check_block(opened: _Open, entry: index.Entry) -> bytes | str:
    """A block's record data, or the reason (a key of REASONS) it cannot be used."""
    sync = opened.header.sync
    if entry.offset < opened.header.size or entry.length < 2 + avrofile.SYNC_SIZE:
        return "index"
    end = entry.offset + entry.length
    if end > opened.size:  # a growing file: look again before calling it cut short
        opened.size = os.fstat(opened.f.fileno()).st_size
        if end > opened.size:
            return "missing"
    try:
        opened.f.seek(entry.offset)
        raw = opened.f.read(entry.length)
    except OSError:
        return "unreadable"
    if len(raw) < entry.length:
        return "missing"
    return block_data(raw, entry.count, sync)


def block_data(raw: bytes, count: int | None, sync: bytes) -> bytes | str:
    """The record data of one whole block's bytes ``raw``, or why it is not one: the
    count must be ``count`` (when known) and no more than its bytes can hold, the
    size must fill ``raw`` to the sync marker, which must be ``sync``. Pure."""
    try:
        found, pos = avrofile.decode_long(raw, 0)
        size, pos = avrofile.decode_long(raw, pos)
    except (IndexError, ValueError):
        return "prefix"
    if (count is not None and found != count) or found < 0 or size < 0 or found > size or (
            pos + size + avrofile.SYNC_SIZE != len(raw)):
        return "prefix"
    if raw[pos + size :] != sync:
        return "sync"
    return raw[pos : pos + size]
