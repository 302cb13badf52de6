"""``speeddata verify [--repair]``: check every block of every cache file, on demand.

Readers skip damage as they meet it (``speeddata.cache.check``) and the relay's start
checks cheaply; this reads everything: each file's header and schema, every block's
count, size and sync marker (walking the file itself, so blocks the index lacks are
found too), every index entry against the blocks, and every record's decoding. With
``repair``, torn tails are cut, files with an unreadable header moved aside into
``<channel>/damaged/`` and indexes rebuilt (``speeddata.cache.store.repair``); blocks
that do not decode stay, and readers keep skipping and reporting them.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from speeddata.cache import avrofile, index
from speeddata.cache.catalogue import maybe_open, scan
from speeddata.cache.check import BlockReader, Damage, Skipped, channel_of_header, read_header
from speeddata.cache.layout import DAMAGED_DIR, SUFFIX, index_path
from speeddata.cache.store import repair
from speeddata.columns import ColumnDecoder
from speeddata.schemas import Registry

DECODE_RECORDS = 65536  # records decoded at once (one at a time where that fails)


@dataclass
class FileCheck:
    """What one cache file holds and what of it is damaged."""

    path: Path
    size: int = 0
    blocks: int = 0  # whole blocks found
    records: int = 0  # records in them that decode
    damage: list[Damage] = field(default_factory=list)
    repaired: str = ""  # what --repair did


def check_file(path: Path, registry: Registry | None = None) -> FileCheck:
    """Check one cache file completely (see the module's docstring). Never raises for
    what is on the disk: every fault is a ``Damage`` in the result."""
    out = FileCheck(path)
    idx = index_path(path)
    try:
        entries = index.unpack(idx.read_bytes()) if idx.exists() else []
        f = path.open("rb")
    except OSError:
        out.damage.append(Damage(path, 0, 0, "unreadable"))
        return out
    indexed = sum(e.count for e in entries)
    with f:
        out.size = os.fstat(f.fileno()).st_size
        try:
            _, header = read_header(f)
            channel = channel_of_header(header, str(path), registry)
        except (OSError, ValueError):
            out.damage.append(Damage(path, 0, out.size, "header", indexed))
            return out
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            _walk(out, data, header, entries, ColumnDecoder(channel))
        finally:
            data.close()
    return out


def _walk(out: FileCheck, data: mmap.mmap, header: avrofile.Header,
          entries: list[index.Entry], decoder: ColumnDecoder) -> None:
    path = out.path
    blocks, bad, tail = avrofile.walk_blocks(data, header.size, header.sync)

    def records_in(start: int, end: int) -> int:
        return sum(e.count for e in entries if start <= e.offset < end)

    found = Skipped()  # adjacent damage of one kind merged into one range
    whole = {b.offset: b for b in blocks}
    for start, end in bad:
        found.add(Damage(path, start, end, "block", records_in(start, end)))
    if tail < out.size or any(e.offset + e.length > out.size for e in entries):
        last = max([out.size, *(e.offset + e.length for e in entries)])
        found.add(Damage(path, tail, last, "missing", records_in(tail, last)))
    for e in entries:
        block = whole.get(e.offset)
        inside_damage = any(s <= e.offset < t for s, t in bad) or e.offset >= tail
        if not inside_damage and (block is None or block.length != e.length
                                  or block.count != e.count):
            found.add(Damage(path, e.offset, e.offset + e.length, "index", e.count))
    known = {e.offset for e in entries}
    for b in blocks:
        if b.offset not in known:
            found.add(Damage(path, b.offset, b.offset + b.length, "unindexed", b.count))
    out.blocks = len(blocks)
    reader = BlockReader(found)
    group: list[tuple[index.Entry, bytes]] = []

    def flush() -> None:
        _, kept = reader.decode(decoder, path, group)
        out.records += sum(e.count for (e, _), ok in zip(group, kept, strict=True) if ok)
        group.clear()

    waiting = 0
    for b in blocks:
        raw = data[b.offset : b.offset + b.length]
        body = _body(raw)
        group.append((index.Entry(b.offset, b.length, b.count, 0), body))
        waiting += b.count
        if waiting >= DECODE_RECORDS:
            flush()
            waiting = 0
    if group:
        flush()
    out.damage = found.damage


def _body(raw: bytes) -> bytes:
    """The record data of a block the walk found whole."""
    _, pos = avrofile.decode_long(raw, 0)
    size, pos = avrofile.decode_long(raw, pos)
    return raw[pos : pos + size]


@dataclass
class Verdict:
    """A whole cache checked: per file, and in sum per channel."""

    files: list[FileCheck]
    skipped_open: list[Path]  # files --repair left alone: a running relay may append
    aside: list[Path] = field(default_factory=list)  # in <channel>/damaged/: unread

    @property
    def damaged(self) -> list[FileCheck]:
        return [f for f in self.files if f.damage]

    def channels(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for f in self.files:
            row = out.setdefault(f.path.parent.name, {"files": 0, "bytes": 0, "blocks": 0,
                                                      "records": 0, "damaged_files": 0,
                                                      "damaged_bytes": 0, "lost_records": 0})
            row["files"] += 1
            row["bytes"] += f.size
            row["blocks"] += f.blocks
            row["records"] += f.records
            row["damaged_files"] += bool(f.damage)
            row["damaged_bytes"] += sum(d.end - d.start for d in f.damage)
            row["lost_records"] += sum(d.records or 0 for d in f.damage)
        return out


def verify(cache_dir: Path, registry: Registry | None = None, fix: bool = False,
           relay_running: bool = False, progress: Callable[[int], None] | None = None
           ) -> Verdict:
    """Check every file of the cache (``progress(bytes)`` after each); with ``fix``,
    repair what can be. While a relay runs (``relay_running``), the newest file of each
    channel and worker may be growing: it is checked but never repaired."""
    files = scan(cache_dir)
    growing = maybe_open(files) if relay_running else set()
    checks, left = [], []
    for cached in files:
        found = check_file(cached.path, registry)
        if cached.path in growing:  # its end may be a block being written: not damage
            found.damage = [d for d in found.damage if d.reason not in ("missing",
                                                                          "unindexed")]
        if fix and found.damage:
            if cached.path in growing:
                left.append(cached.path)
            else:
                found.repaired = _repair(cached.path)
        checks.append(found)
        if progress is not None:
            progress(cached.size)
    return Verdict(checks, left, sorted(cache_dir.glob(f"*/{DAMAGED_DIR}/*{SUFFIX}")))


def _repair(path: Path) -> str:
    """``repair`` one file; what it did, in words."""
    try:
        report = repair(path, full=True)
    except OSError as exc:
        return f"not repaired: {exc}"
    if report is None:
        return "nothing to repair"
    done = []
    if report.moved_to is not None:
        done.append(f"moved to {report.moved_to}")
    if report.removed:
        done.append("removed (a header cut short, no data)")
    if report.cut_bytes:
        done.append(f"cut {report.cut_bytes} torn bytes")
    if report.reindexed or report.cut_bytes:
        done.append(f"index rebuilt ({report.reindexed} entries added)")
    if report.damaged:
        done.append(f"{len(report.damaged)} damaged ranges stay (readers skip them)")
    return ", ".join(done) or "nothing to repair"


def lines(verdict: Verdict) -> list[str]:
    """The report a person reads: a row per channel, then each damage."""
    out = [f"{'channel':<16}{'files':>7}{'MiB':>10}{'blocks':>10}{'records':>12}"
           f"{'damaged files':>15}{'lost records':>14}"]
    for name, row in sorted(verdict.channels().items()):
        out.append(f"{name:<16}{row['files']:>7}{row['bytes'] / 2**20:>10.1f}"
                   f"{row['blocks']:>10}{row['records']:>12}{row['damaged_files']:>15}"
                   f"{row['lost_records']:>14}")
    for f in verdict.damaged:
        for d in f.damage:
            out.append(f"damage: {d}")
        if f.repaired:
            out.append(f"  repair: {f.path}: {f.repaired}")
    for path in verdict.skipped_open:
        out.append(f"not repaired: {path} may still be written by the running relay")
    if verdict.aside:
        size = sum(p.stat().st_size for p in verdict.aside if p.exists())
        n = len(verdict.aside)
        out.append(f"{n} file{'s' if n != 1 else ''} moved aside earlier ({size / 2**20:.1f} MiB, "
                   f"not in the quota) wait in <channel>/{DAMAGED_DIR}/: delete them once "
                   "looked at")
    return out
