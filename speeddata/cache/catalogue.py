"""What the cache holds: files per channel, their time spans, retention, range lookup.

Time spans come from each file's name (start) and its index (receive time of the last
block), so nothing here decodes Avro data.
"""

from __future__ import annotations

import heapq
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from speeddata.cache import index
from speeddata.cache.layout import SUFFIX, index_path, start_of, summary_path

log = logging.getLogger("speeddata.cache")

Range = tuple[int, int]  # [start_ns, end_ns] on the relay's receive clock


@dataclass(frozen=True)
class CachedFile:
    channel: str
    path: Path
    size: int  # bytes on disk, data and index
    start_ns: int
    end_ns: int  # receive time of its last block (its start when it has none)

    def overlaps(self, start_ns: int, end_ns: int) -> bool:
        return self.start_ns <= end_ns and self.end_ns >= start_ns


def _last_entry(idx: Path) -> index.Entry | None:
    try:
        with idx.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            whole = size - size % index.ENTRY_SIZE
            if not whole:
                return None
            f.seek(whole - index.ENTRY_SIZE)
            return index.unpack(f.read(index.ENTRY_SIZE))[0]
    except FileNotFoundError:
        return None


def scan(directory: Path, channels: Iterable[str] | None = None,
         known: dict[Path, CachedFile] | None = None) -> list[CachedFile]:
    """Every cache file, oldest first.

    ``known``: files seen by an earlier scan that no relay appends to any more (all but
    the newest of each channel and worker), reused without a stat or an index read, and
    updated with this scan's: a rescan of 10,000 files costs a directory listing."""
    wanted = set(channels) if channels is not None else None
    files: list[CachedFile] = []
    if not directory.is_dir():
        return files
    for folder in directory.iterdir():
        if not folder.is_dir() or folder.name.startswith(".") or (
            wanted is not None and folder.name not in wanted
        ):
            continue
        for path in folder.glob(f"*{SUFFIX}"):
            if known is not None and path in known:
                files.append(known[path])
                continue
            try:
                start = start_of(path)
                size = path.stat().st_size
            except (ValueError, FileNotFoundError):
                continue
            idx = index_path(path)
            last = _last_entry(idx)
            try:
                idx_size = idx.stat().st_size if last is not None else 0
            except FileNotFoundError:  # deleted meanwhile (another worker's retention)
                continue
            end = max(start, last.recv_ns) if last is not None else start
            try:
                summary_size = summary_path(path).stat().st_size
            except FileNotFoundError:
                summary_size = 0
            files.append(CachedFile(folder.name, path, size + idx_size + summary_size, start,
                                    end))
    files.sort(key=lambda f: (f.start_ns, f.path.name))
    if known is not None:
        still_open = maybe_open(files)
        known.clear()
        known.update((f.path, f) for f in files if f.path not in still_open)
    return files


def maybe_open(files: list[CachedFile]) -> set[Path]:
    """The newest file of each channel and relay worker: a relay may still append to it.
    Every older one is closed for good. ``files`` oldest first, as ``scan`` gives them."""
    newest: dict[tuple[str, str], Path] = {}
    for f in files:  # oldest first, so the last one seen is the newest
        newest[(f.channel, f.path.name.partition("-w")[2])] = f.path
    return set(newest.values())


GROWTH_WINDOW_NS = 3600 * 10**9  # growth is measured over the last hour's files


def overview(files: list[CachedFile], quota: int, now_ns: int, free_disk: int | None = None
             ) -> dict[str, object]:
    """What the cache holds, per channel and in all: bytes, files, how far back it reaches,
    how fast it grows (bytes/s over the last hour's files), and the hours left before
    retention starts deleting, or the disk (``free_disk`` bytes left) is full, at that
    rate. Pure: from a scan, the quota and the free space."""
    channels: dict[str, dict[str, object]] = {}
    for name in sorted({f.channel for f in files}):
        own = [f for f in files if f.channel == name]
        recent = [f for f in own if f.end_ns >= now_ns - GROWTH_WINDOW_NS]
        span = (max(f.end_ns for f in recent) - min(f.start_ns for f in recent)
                if recent else 0)
        channels[name] = {
            "bytes": sum(f.size for f in own), "files": len(own),
            "first_ns": min(f.start_ns for f in own), "last_ns": max(f.end_ns for f in own),
            "growth_bytes_per_s": sum(f.size for f in recent) / (span / 1e9) if span else 0.0}
    view: dict[str, object] = {"bytes": sum(f.size for f in files), "quota": quota,
                               "free_disk_bytes": free_disk, "channels": channels}
    view.update(project(view))
    return view


def project(view: dict) -> dict[str, object]:
    """The total growth of ``view``'s channels and, at it, the hours before retention
    starts deleting and before the disk is full; ``hours_left`` is the sooner, and
    ``limit`` says which it is (a disk fuller than the quota allows stops caching)."""
    growth = sum(float(c["growth_bytes_per_s"]) for c in view["channels"].values())
    quota, total, free = view["quota"], view["bytes"], view.get("free_disk_bytes")
    hours = (max(quota - total, 0) / growth / 3600) if growth > 0 and quota else None
    disk = free / growth / 3600 if growth > 0 and free is not None else None
    left, limit = min(((h, name) for h, name in ((hours, "retention"), (disk, "disk full"))
                       if h is not None), default=(None, None))
    return {"growth_bytes_per_s": growth, "hours_before_retention": hours,
            "hours_before_disk_full": disk, "hours_left": left, "limit": limit}


def hours_until_retention_reaches(files: list[CachedFile], view: dict, start_ns: int
                                  ) -> float | None:
    """When retention, deleting the oldest first, would reach data from ``start_ns`` at
    the current growth (hours; None: not at this rate, or no quota). An exported tag is
    not protected: this is the warning that its cached data is going."""
    growth, quota = float(view["growth_bytes_per_s"]), view["quota"]
    if growth <= 0 or not quota:
        return None
    older = sum(f.size for f in files if f.end_ns < start_ns)  # deleted before it
    return max(quota - view["bytes"] + older, 0) / growth / 3600


def plan_retention(
    files: list[CachedFile], quota: int, protected: list[Range], keep: set[Path]
) -> list[CachedFile]:
    """Which files to delete, oldest first, to bring the total under ``quota``.

    Files overlapping a protected range (a tag not yet exported) and files in ``keep``
    (open for writing) are never chosen, even if the quota stays exceeded.
    """
    total = sum(f.size for f in files)
    doomed = []
    for f in sorted(files, key=lambda f: f.start_ns):
        if total <= quota:
            break
        if f.path in keep or any(f.overlaps(s, e) for s, e in protected):
            continue
        doomed.append(f)
        total -= f.size
    return doomed


QUOTA_FILE = ".quota"
AUTO_QUOTA_MOST = 10 * 2**30


def auto_quota(free: int, cache_size: int) -> int:
    """The automatic quota: half of what the disk has for the cache (its free space and
    what the cache already holds), at most 10 GiB. Counting the cache itself means a
    restart with a full cache gets the same quota, not a smaller one."""
    return min(AUTO_QUOTA_MOST, (free + cache_size) // 2)


def known_quota(directory: Path, max_bytes: int) -> int:
    """The quota the relay uses, without fixing one (0: not known yet: no relay ran)."""
    if max_bytes:
        return max_bytes
    try:
        return int((directory / QUOTA_FILE).read_text().strip())
    except (OSError, ValueError):
        return 0


def fixed_quota(directory: Path, max_bytes: int, cache_size: Callable[[], int]) -> int:
    """The quota in bytes: ``max_bytes`` when set; else the automatic one, computed the
    first time and kept in ``<cache>/.quota`` so that no restart shrinks it.
    ``cache_size`` (a scan of the whole cache) is called only that first time."""
    known = known_quota(directory, max_bytes)
    if known:
        return known
    stored = directory / QUOTA_FILE
    quota = auto_quota(shutil.disk_usage(directory).free, cache_size())
    try:
        tmp = stored.with_suffix(".tmp")
        tmp.write_text(f"{quota}\n")
        os.replace(tmp, stored)
    except OSError as exc:  # a full disk: use it now, store it next time
        log.warning("cannot store the cache quota in %s: %s", stored, exc)
    log.info("cache quota fixed at %.2f GiB (kept in %s; set [cache] max_bytes to change it)",
             quota / 2**30, stored)
    return quota


NEAR_QUOTA = 0.9  # a cache estimated above this share of its quota is scanned
FULL_SCAN_SECONDS = 600.0  # and any cache this often, whatever the estimate says


def dir_signature(directory: Path) -> tuple:
    """The modification times of the channel folders (not ``.status`` and the like,
    rewritten every second): a few stat calls that change when a process adds or
    deletes a cache file, or a channel folder comes or goes."""
    try:
        return tuple(sorted((entry.name, entry.stat().st_mtime_ns)
                            for entry in os.scandir(directory)
                            if entry.is_dir() and not entry.name.startswith(".")))
    except OSError:  # a folder went away meanwhile: look again next round
        return ()


class RetentionGate:
    """Whether a retention round must scan the cache (331 ms for 10,000 files) or can
    tell from a running total that it is under quota.

    The total is the last scan's, plus what this relay wrote since (``written``: its
    running count of cached bytes). A scan is due when that estimate nears the quota,
    when the directory signature changed (another process added or deleted files: a
    relay worker, a deletion by hand; this relay's own roll-overs too, at most one scan
    each), or when the last scan is ``full_scan_seconds`` old. Pure: the caller passes
    the signature, the time and the count.
    """

    def __init__(self, near: float = NEAR_QUOTA, full_scan_seconds: float = FULL_SCAN_SECONDS
                 ) -> None:
        self.near = near
        self.full_scan_seconds = full_scan_seconds
        self.total: int | None = None  # bytes at the last scan, after its deletions
        self.written = 0  # this relay's count of cached bytes at the last scan
        self.grown = 0  # bytes written since, as of the last ``due``
        self.signature: tuple | None = None
        self.scanned_at = 0.0
        self.scans = 0
        self.skips = 0

    def estimate(self) -> int | None:
        return None if self.total is None else self.total + self.grown

    def due(self, quota: int, signature: tuple, now: float, written: int) -> bool:
        self.grown = max(0, written - self.written)
        estimate = self.estimate()
        scan = (estimate is None or estimate >= self.near * quota
                or signature != self.signature
                or now - self.scanned_at >= self.full_scan_seconds)
        if not scan:
            self.skips += 1
        return scan

    def scanned(self, total: int, signature: tuple, now: float, written: int) -> None:
        """A scan found ``total`` bytes left (after its deletions) at ``signature``."""
        self.total, self.signature, self.scanned_at = total, signature, now
        self.written, self.grown = written, 0
        self.scans += 1

    def statistics(self) -> dict[str, object]:
        return {"estimated_bytes": self.estimate(), "scans": self.scans,
                "scans_skipped": self.skips}


class Catalogue:
    """The cache directory seen as data: lookups by channel and time, and retention."""

    def __init__(
        self, directory: Path, protected: Callable[[], list[Range]] = lambda: []
    ) -> None:
        self.directory = directory
        self.protected = protected
        self.deleted_files = 0
        self.deleted_bytes = 0
        self.deleted_clock_files = 0  # the offset series' day files (``cache.clocks``)
        self.other_clock_entries = 0  # in ``.clocks/`` and not a day file, at the last look
        self.total = 0  # bytes the last ``enforce`` left (its scan less its deletions)
        self.closed: dict[Path, CachedFile] = {}  # retention's memory of closed files

    def files(self, channels: Iterable[str] | None = None) -> list[CachedFile]:
        return scan(self.directory, channels)

    def channels(self) -> list[str]:
        return sorted({f.channel for f in self.files()})

    def size(self) -> int:
        return sum(f.size for f in self.files())

    def enforce(self, quota: int, keep: set[Path],
                archived: Callable[[CachedFile], bool] | None = None,
                remember: bool = False) -> list[CachedFile]:
        """Delete the oldest unprotected files until the cache fits ``quota``.

        The newest file of each channel and relay worker is kept too: it may be open in
        another worker process, which ``keep`` (this process's open files) cannot know.
        With ``archived`` (``[archive] required``), files it says are not archived stay.
        ``remember``: reuse what earlier rounds read of closed files (``scan``'s
        ``known``); without it every file is read again (and remembered afresh).
        """
        if not remember:
            self.closed.clear()
        files = scan(self.directory, known=self.closed)
        self.total = sum(f.size for f in files)
        if self.total <= quota:  # the usual case: no tag lookup needed
            return []
        keep = keep | maybe_open(files)
        if archived is not None:
            keep |= {f.path for f in files if not archived(f)}
        try:
            protected = self.protected()
        except Exception as exc:  # the tag store unreadable (full disk, locked): keep all
            log.error("retention skipped: cannot read the tags that protect ranges (%s)", exc)
            return []
        doomed = plan_retention(files, quota, protected, keep)
        self.total -= sum(f.size for f in doomed)
        for f in doomed:
            self.closed.pop(f.path, None)
            f.path.unlink(missing_ok=True)
            index_path(f.path).unlink(missing_ok=True)
            summary_path(f.path).unlink(missing_ok=True)
            self.deleted_files += 1
            self.deleted_bytes += f.size
            log.info("retention: deleted %s (%d bytes)", f.path, f.size)
        gone = {f.path for f in doomed}
        left = [f.start_ns for f in files if f.path not in gone]
        if doomed and left:  # the clock offsets older than all data go with it
            self.prune_clocks(min(left), archived)
        if doomed and self.total > quota:
            log.warning(
                "retention: cache holds %d bytes over its quota of %d, all in open "
                "files or tagged ranges not yet exported", self.total - quota, quota,
            )
        return doomed

    def prune_clocks(self, oldest_ns: int,
                     archived: Callable[[CachedFile], bool] | None = None) -> None:
        """Delete the offset series' days older than the day before ``oldest_ns``."""
        from speeddata.cache import clocks

        def clock_archived(path: Path) -> bool:
            assert archived is not None
            return archived(CachedFile(clocks.DIR, path, 0, 0, 0))

        deleted, other = clocks.prune(self.directory, oldest_ns,
                                      None if archived is None else clock_archived)
        self.deleted_clock_files += deleted
        if other and other != self.other_clock_entries:
            log.warning("retention: %s holds %d entries that are not a day's offsets "
                        "(YYYY-MM-DD.csv): left alone", self.directory / clocks.DIR, other)
        self.other_clock_entries = other

    def blocks(
        self, channel: str, start_ns: int, end_ns: int
    ) -> list[tuple[CachedFile, list[index.Entry]]]:
        """The blocks of ``channel`` received in ``[start_ns, end_ns]``, file by file."""
        selected = []
        for f in self.files([channel]):
            if not f.overlaps(start_ns, end_ns):
                continue
            try:
                raw = index_path(f.path).read_bytes()
            except FileNotFoundError:  # deleted meanwhile (retention, a repair moving it)
                continue
            entries = list(index.in_range(index.unpack(raw), start_ns, end_ns))
            if entries:
                selected.append((f, entries))
        return selected


__all__ = [
    "CachedFile",
    "Catalogue",
    "RetentionGate",
    "auto_quota",
    "dir_signature",
    "fixed_quota",
    "known_quota",
    "maybe_open",
    "overview",
    "plan_retention",
    "project",
    "scan",
]


@dataclass
class Plan:
    """What one pivot will read: per channel, the blocks in receive-time order."""

    start_ns: int
    end_ns: int
    blocks: dict[str, list[tuple[CachedFile, index.Entry]]] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(e.count for blocks in self.blocks.values() for _, e in blocks)

    @property
    def bytes(self) -> int:
        return sum(e.length for blocks in self.blocks.values() for _, e in blocks)


def plan(catalogue: Catalogue, start_ns: int, end_ns: int,
         channels: list[str] | None = None) -> Plan:
    """Select the blocks received in ``[start_ns, end_ns]``; reads only the indexes
    (pivot, replay, query: none of them needs a writer of any format to plan).

    Files of several relay workers are merged by receive time.
    """
    result = Plan(start_ns, end_ns)
    for channel in channels if channels is not None else catalogue.channels():
        per_file = catalogue.blocks(channel, start_ns, end_ns)
        merged = heapq.merge(*([(f, e) for e in entries] for f, entries in per_file),
                             key=lambda fe: fe[1].recv_ns)
        blocks = list(merged)
        if blocks:
            result.blocks[channel] = blocks
    return result
