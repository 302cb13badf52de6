"""Writing the cache: one open Avro file per channel, one block per received batch.

Decisions (when to roll over) are plain functions of sizes and times; the classes
here do the file I/O around them. Every write is handed to the OS at once; fsync
happens on roll-over, on close and when the relay's clock says it is due.
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from speeddata import __version__, wire
from speeddata.cache import avrofile, index
from speeddata.cache.layout import (
    DAMAGED_DIR,
    SUFFIX,
    closed_marker,
    file_name,
    index_path,
    start_of,
    summary_path,
)
from speeddata.errors import CacheError
from speeddata.schemas import Channel

log = logging.getLogger("speeddata.cache")

IDLE_SECONDS = 60.0  # a file with no new data for this long is closed (the archiver takes it)


def needs_rollover(
    size: int, started_ns: int, now_ns: int, rotate_bytes: int, rotate_seconds: float
) -> bool:
    """Whether a file of ``size`` bytes opened at ``started_ns`` should be closed now."""
    return size >= rotate_bytes or now_ns - started_ns >= rotate_seconds * 1e9


def _write_all(fd: int, *parts: bytes | memoryview) -> None:
    """Write ``parts`` in order with one ``writev`` (no joining copy), however many
    calls a short write takes."""
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views:
            views[0] = views[0][written:]


class Syncer:
    """Fsyncs and closes cache files in a thread, off the receive path.

    An fsync of a large file can take longer than the socket buffer lasts at full rate;
    ``os.fsync`` releases the GIL, so here it costs the relay's loop nothing. Handing
    work over never blocks: files to close are always taken (at most one per roll-over),
    and a periodic fsync is skipped and counted as a stall while the previous one is
    still under way (the next one covers the same data). ``drain`` waits until
    everything handed over is on disk.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[list[int], str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._submitted = 0  # written by the caller's thread only
        self._done = 0  # written by the sync thread only
        self.errors = 0
        self.stalls = 0

    @property
    def busy(self) -> bool:
        return self._submitted > self._done

    def submit(self, fds: list[int], what: str) -> None:
        """Fsync ``fds`` then close them (they belong to the syncer from now on)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cache-sync", daemon=True)
            self._thread.start()
        self._submitted += 1
        self._queue.put((fds, what))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fds, what = item
            for fd in fds:
                try:
                    os.fsync(fd)
                except OSError as exc:
                    self.errors += 1
                    log.error("cache: fsync of %s failed: %s", what, exc)
                finally:
                    os.close(fd)
            self._done += 1

    def drain(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


class CacheFile:
    """One open cache file and its index, appended to block by block."""

    def __init__(self, path: Path, channel: Channel, started_ns: int, host: str) -> None:
        self.path = path
        self.channel = channel
        self.started_ns = started_ns
        self.sync = os.urandom(avrofile.SYNC_SIZE)
        metadata = {
            "avro.schema": wire.schema_json(channel.schema).encode(),
            "avro.codec": b"null",
            "speeddata.channel": channel.name.encode(),
            "speeddata.host": host.encode(),
            "speeddata.start_ns": str(started_ns).encode(),
            "speeddata.version": __version__.encode(),
        }
        head = avrofile.encode_header(metadata, self.sync)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(path, flags, 0o644)
        try:
            self._index_fd = os.open(index_path(path), flags, 0o644)
            _write_all(self._fd, head)
        except OSError:
            os.close(self._fd)
            path.unlink(missing_ok=True)
            index_path(path).unlink(missing_ok=True)
            raise
        self.size = len(head)
        self.index_size = 0
        self.blocks = 0
        self.records = 0
        self.dirty = False

    def append(self, payload: bytes | memoryview, count: int, recv_ns: int) -> None:
        """Append one block: ``count`` raw record bodies, concatenated. On error the file
        is left as it was."""
        prefix = avrofile.block_prefix(count, len(payload))
        length = len(prefix) + len(payload) + len(self.sync)
        entry = index.Entry(self.size, length, count, recv_ns).pack()
        try:
            # The block first: a reader that finds an entry in the index finds its bytes.
            _write_all(self._fd, prefix, payload, self.sync)
            _write_all(self._index_fd, entry)
        except OSError:
            # Cut back to the last whole block so the file stays valid (a full disk).
            os.ftruncate(self._fd, self.size)
            os.ftruncate(self._index_fd, self.index_size)
            raise
        self.size += length
        self.index_size += len(entry)
        self.blocks += 1
        self.records += count
        self.dirty = True

    def fsync(self, syncer: Syncer) -> None:
        """Have what was written so far synced (in the background)."""
        if self.dirty:
            syncer.submit([os.dup(self._fd), os.dup(self._index_fd)], str(self.path))
            self.dirty = False

    def close(self, syncer: Syncer) -> None:
        """Hand the file to ``syncer``, which fsyncs and closes it."""
        syncer.submit([self._fd, self._index_fd], str(self.path))




@dataclass
class RepairReport:
    path: Path
    cut_bytes: int  # torn bytes removed from the end of the Avro file
    reindexed: int  # blocks whose index entries were rebuilt
    removed: bool  # the file held no complete header and no data, and was deleted
    moved_to: Path | None = None  # its header is unreadable: moved aside, data kept
    damaged: list[tuple[int, int]] = field(default_factory=list)  # byte ranges left in
    # place: readers skip them (``speeddata.cache.check``), the rest stays readable


def move_aside(path: Path) -> Path:
    """Move an unreadable file and its index into ``<channel>/damaged/``, out of the
    readers' and retention's sight, kept for a look; its summary is deleted."""
    folder = path.parent / DAMAGED_DIR
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    n = 0
    while target.exists():
        n += 1
        target = folder / f"{path.stem}.{n}{SUFFIX}"
    idx = index_path(path)
    if idx.exists():
        os.replace(idx, index_path(target))
    os.replace(path, target)
    summary_path(path).unlink(missing_ok=True)
    return target


@functools.lru_cache(maxsize=256)
def _schema_usable(schema: bytes | None) -> bool:
    """Whether a header's schema defines a channel (most files share a few schemas, so
    each is parsed once)."""
    from speeddata.cache.check import channel_of_header

    try:
        channel_of_header(avrofile.Header({"avro.schema": schema} if schema else {}, b"", 0),
                          "", None)
    except ValueError:
        return False
    return True


def _looks_whole(f: BinaryIO, header: avrofile.Header, size: int, idx: Path) -> bool:
    """The cheap test (a few small reads, whatever the file's size): the index is whole
    entries, the first begins after the header, the last ends at the end of the file,
    and the last block ends in the sync marker."""
    try:
        with idx.open("rb") as g:
            idx_size = g.seek(0, os.SEEK_END)
            if idx_size % index.ENTRY_SIZE:
                return False
            if not idx_size:
                return size == header.size
            g.seek(0)
            first = index.unpack(g.read(index.ENTRY_SIZE))[0]
            g.seek(idx_size - index.ENTRY_SIZE)
            last = index.unpack(g.read(index.ENTRY_SIZE))[0]
    except FileNotFoundError:
        return False
    if first.offset != header.size or last.offset + last.length != size:
        return False
    f.seek(size - avrofile.SYNC_SIZE)
    return f.read(avrofile.SYNC_SIZE) == header.sync


def repair(path: Path, full: bool = True) -> RepairReport | None:
    """Make a cache file usable after a crash or damage; None if all was fine.

    A crash mid-write (kill -9, power loss) can leave a partial block, a partial index
    entry, or a block that never got its entry. A damaged disk can leave anything. The
    cheap checks (header, the index's ends against the file) run always; every block is
    walked when they fail, or with ``full``. A torn tail is cut back, the index is made
    to match the whole blocks (entries of damaged stretches are kept, so readers report
    what they skip), damaged stretches are left for readers to skip, and a file whose
    header is unreadable is moved aside (or deleted when it is a header cut short at
    creation, which held no data).
    """
    from speeddata.cache.check import read_header

    idx = index_path(path)
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            _, header = read_header(f)
            if not _schema_usable(header.metadata.get("avro.schema")):
                raise ValueError("no usable schema")
        except ValueError:
            entries = index.unpack(idx.read_bytes()) if idx.exists() else []
            f.seek(0)
            head = f.read(len(avrofile.MAGIC))
            if not entries and avrofile.MAGIC.startswith(head):
                log.warning("cache file %s has no complete header; removing it (it held "
                            "no data)", path)
                path.unlink()
                idx.unlink(missing_ok=True)
                return RepairReport(path, size, 0, True)
            target = move_aside(path)
            log.error("cache file %s has an unreadable header (%d bytes, %d indexed "
                      "records): moved to %s", path, size, sum(e.count for e in entries),
                      target)
            return RepairReport(path, 0, 0, False, target)
        if not full and _looks_whole(f, header, size, idx):
            return None
        entries = index.unpack(idx.read_bytes()) if idx.exists() else []
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            blocks, bad, tail = avrofile.walk_blocks(data, header.size, header.sync)
        finally:
            if size:
                data.close()
    by_offset = {e.offset: e for e in entries}
    indexed_to = max((e.offset for e in entries), default=0)
    good = set()
    rebuilt = []
    reindexed = 0
    last_ns = start_of(path)
    mtime_ns = path.stat().st_mtime_ns
    for block in blocks:
        entry = by_offset.get(block.offset)
        good.add(block.offset)
        if entry is None or entry.length != block.length or entry.count != block.count:
            # A block that reached the file but not its index: received after the block
            # before it, and (past the last entry) before the file was last written.
            recv = last_ns if block.offset < indexed_to else max(last_ns, mtime_ns)
            entry = index.Entry(block.offset, block.length, block.count, recv)
            reindexed += 1
        rebuilt.append(entry)
        last_ns = entry.recv_ns
    # what the index says of damaged stretches stays, so that readers report the skip
    rebuilt += [e for e in entries if e.offset not in good and any(
        s <= e.offset < t for s, t in bad)]
    rebuilt.sort(key=lambda e: e.offset)
    if tail == size and rebuilt == entries and not bad:
        return None
    if tail < size:
        with path.open("r+b") as f:
            f.truncate(tail)
            os.fsync(f.fileno())
    if rebuilt != entries:
        tmp = idx.with_suffix(".idx.tmp")
        tmp.write_bytes(b"".join(e.pack() for e in rebuilt))
        os.replace(tmp, idx)
    report = RepairReport(path, size - tail, reindexed, False, None, bad)
    if tail < size or rebuilt != entries:
        log.warning("repaired cache file %s: cut %d torn bytes, rebuilt %d index entries, "
                    "%d blocks kept", path, report.cut_bytes, reindexed, len(blocks))
    for start, end in bad:
        log.error("cache file %s: bytes %d-%d are damaged; readers skip them, the rest of "
                  "the file stays readable", path, start, end)
    return report


class CacheWriter:
    """The relay's side of the cache: an open file per channel, rolled and synced.

    ``now_ns`` is always passed in; the writer never reads a clock.
    """

    def __init__(
        self,
        directory: Path,
        rotate_bytes: int,
        rotate_seconds: float,
        worker: int | None = None,
        host: str | None = None,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.directory = directory
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.idle_seconds = idle_seconds
        self._last_ns: dict[str, int] = {}  # a channel's last write
        self.worker = worker
        self.host = host or socket.gethostname()
        self._open: dict[str, CacheFile] = {}
        self.files_opened = 0
        self.write_errors = 0
        self.repairs: list[RepairReport] = []
        self.syncer = Syncer()
        directory.mkdir(parents=True, exist_ok=True)

    def repair_all(self, full_seconds: float = 1.0,
                   clock: Callable[[], float] = time.monotonic) -> list[RepairReport]:
        """Check every cache file once at start and repair what a crash or damage left.

        Every file gets the cheap checks (its header, its index's ends against the
        file: a few reads each); a file that fails them is walked block by block and
        repaired. Then files are walked whole, newest first, for about ``full_seconds``
        (reading all of a large cache would delay the start by minutes): damage found
        is logged and counted, and readers skip it anyway. ``speeddata verify`` checks
        every block of every file on demand.
        """
        paths = [p for p in sorted(self.directory.glob(f"*/*{SUFFIX}"))
                 if self.worker is None or p.name.endswith(f"-w{self.worker}{SUFFIX}")]
        walked = {path for path in paths if self._repair(path, full=False)}
        deadline = clock() + full_seconds
        for path in reversed(paths):
            if clock() > deadline:
                break
            if path not in walked and path.exists():
                self._repair(path, full=True)
        return self.repairs

    def _repair(self, path: Path, full: bool) -> bool:
        """``repair`` one file, its report kept; whether it had anything to report."""
        try:
            report = repair(path, full)
        except OSError as exc:  # a full disk: the torn tail stays past the index
            log.error("cannot repair cache file %s now (%s); its torn end stays out of its "
                      "index and is repaired at the next start", path, exc)
            return False
        if report:
            self.repairs.append(report)
        return report is not None

    def append(self, channel: Channel, bodies: Sequence[bytes | memoryview], now_ns: int) -> None:
        """Write record bodies of a channel as one block."""
        self.append_block(channel, b"".join(bodies), len(bodies), now_ns)

    def append_block(self, channel: Channel, payload: bytes | memoryview, count: int,
                     now_ns: int) -> None:
        """Write one batch of a channel as one block; OSError (a full disk) propagates."""
        current = self._open.get(channel.name)
        if current is not None and (
            current.channel.fingerprint != channel.fingerprint
            or needs_rollover(
                current.size, current.started_ns, now_ns, self.rotate_bytes, self.rotate_seconds
            )
        ):
            self._close(channel.name)
            current = None
        try:
            if current is None:
                current = self._create(channel, now_ns)
            current.append(payload, count, now_ns)
            self._last_ns[channel.name] = now_ns
        except (OSError, CacheError):
            self.write_errors += 1
            raise

    def _create(self, channel: Channel, now_ns: int) -> CacheFile:
        folder = self.directory / channel.name
        folder.mkdir(exist_ok=True)
        start = now_ns
        while True:
            path = folder / file_name(start, self.worker)
            try:
                cache_file = CacheFile(path, channel, start, self.host)
                break
            except FileExistsError:
                start += 1000  # names have µs resolution: take the next free one
            except OSError as exc:
                raise CacheError(f"cannot create cache file {path}: {exc.strerror}") from exc
        self._open[channel.name] = cache_file
        self.files_opened += 1
        log.info("cache: opened %s", path)
        return cache_file

    def _close(self, name: str) -> None:
        cache_file = self._open.pop(name)
        cache_file.close(self.syncer)
        self._mark_closed(cache_file.path)
        log.info(
            "cache: closed %s (%d records, %d bytes)",
            cache_file.path, cache_file.records, cache_file.size,
        )

    def _mark_closed(self, path: Path) -> None:
        """Say the file is complete, so the archiver takes it now. Best effort: without the
        marker (a full disk, a crash) it is taken once a newer file exists or the relay is
        gone."""
        marker = closed_marker(path.parent, "" if self.worker is None else str(self.worker))
        try:
            tmp = marker.with_name(marker.name + ".tmp")
            tmp.write_text(path.name)
            os.replace(tmp, marker)
        except OSError as exc:
            log.warning("cache: cannot mark %s closed (%s)", path, exc)

    def roll_expired(self, now_ns: int) -> None:
        """Close files past their age, or with no new data for ``idle_seconds``: the last
        file of a channel gone quiet reaches the archive."""
        for name, cache_file in list(self._open.items()):
            idle = now_ns - self._last_ns.get(name, now_ns) >= self.idle_seconds * 1e9
            if idle or needs_rollover(
                cache_file.size, cache_file.started_ns, now_ns,
                self.rotate_bytes, self.rotate_seconds,
            ):
                self._close(name)

    def fsync(self) -> None:
        """Have the open files synced, unless the last round is still under way."""
        if self.syncer.busy:
            self.syncer.stalls += 1
            log.warning("cache: fsync still busy with earlier data (slow disk); this round "
                        "skipped (%d so far)", self.syncer.stalls)
            return
        for cache_file in self._open.values():
            cache_file.fsync(self.syncer)

    def open_paths(self) -> set[Path]:
        return {f.path for f in self._open.values()}

    def close(self) -> None:
        """Close every file and wait until all of it is on disk."""
        for name in list(self._open):
            self._close(name)
        self.syncer.drain()

    def statistics(self) -> dict[str, object]:
        return {
            "open_files": len(self._open),
            "files_opened": self.files_opened,
            "write_errors": self.write_errors,
            "fsync_errors": self.syncer.errors,
            "fsync_stalls": self.syncer.stalls,
            "repaired_files": sum(1 for r in self.repairs if r.cut_bytes or r.reindexed
                                  or r.removed),
            "damaged_files": sum(1 for r in self.repairs if r.damaged),
            "moved_aside": sum(1 for r in self.repairs if r.moved_to),
        }
