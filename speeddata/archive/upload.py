"""Uploading closed cache files: what is closed, what is left, in which order (plain
code, tested without a store), and the archiver's rounds around it."""


from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speeddata import status
from speeddata.archive.bucket import SUMS_SUFFIX, Backoff, client, digests, host_name, object_key
from speeddata.cache import clocks, index
from speeddata.cache.catalogue import CachedFile, maybe_open, scan
from speeddata.cache.layout import INDEX_SUFFIX, SUFFIX, closed_marker, index_path, summary_path
from speeddata.cache.ledger import LEDGER, Ledger
from speeddata.config import Config
from speeddata.errors import ArchiveError
from speeddata.logs import Throttle
from speeddata.snapshots import ArchiveSnapshot

log = logging.getLogger("speeddata.archive")

SCAN_SECONDS = 2.0
STATUS_SECONDS = 1.0
RELAY_GONE_SECONDS = 60.0  # a relay's status this old: it is gone (or hung) for closing
FINAL_WAIT_SECONDS = 5.0  # for the relay to stop before the last round (up gives 10 s)
FINAL_SECONDS = 9.0  # the last round ends within this, before up's grace runs out


def worker_of(path: Path) -> str:
    """The relay worker a cache file belongs to: ``"3"`` for ``...-w3.avro``, else ``""``."""
    return path.name.removesuffix(SUFFIX).partition("-w")[2]


def still_open(files: list[CachedFile], closed: dict[tuple[str, str], str],
               running: set[str]) -> set[Path]:
    """The files a relay may still append to: the newest of each channel and worker,
    unless the relay marked it closed (``closed``: (channel, worker) to the name the
    marker holds) or that worker's relay is not running (a crash included: a relay never
    appends to a file it did not open since it started)."""
    return {path for path in maybe_open(files) if worker_of(path) in running
            and closed.get((path.parent.name, worker_of(path))) != path.name}


def closed_marks(files: list[CachedFile]) -> dict[tuple[str, str], str]:
    """What the relays' closed markers say, for the newest file of each channel and worker."""
    marks = {}
    for path in maybe_open(files):
        try:
            marks[(path.parent.name, worker_of(path))] = closed_marker(
                path.parent, worker_of(path)).read_text().strip()
        except (OSError, UnicodeDecodeError):
            continue
    return marks


def relays_running(cache_dir: Path, now: float) -> set[str]:
    """The relay workers (``""``: a relay without workers) whose status file is recent and
    whose process lives. A relay removes its status after closing its files; a crashed
    one leaves it with a dead pid."""
    running = set()
    for path in status.directory(cache_dir).glob("relay*.json"):
        try:
            snapshot = json.loads(path.read_text())
            pid, written = int(snapshot["pid"]), float(snapshot["written"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if now - written < RELAY_GONE_SECONDS and status.alive(pid):
            running.add(path.stem.removeprefix("relay").removeprefix("-w"))
    return running


def pending(cache_dir: Path, files: list[CachedFile], ledger: Ledger,
            growing: set[Path] | None = None) -> Iterator[tuple[Path, str, int]]:
    """What is left to upload, oldest first (retention takes the oldest first), each
    file's data before its index and summary: (path, relative name, size). ``growing``
    (the newest file of each channel and worker unless told) waits."""
    growing = maybe_open(files) if growing is None else growing
    for f in files:
        if f.path in growing:
            continue
        for path in (f.path, index_path(f.path), summary_path(f.path)):  # summary: if made
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            relative = path.relative_to(cache_dir).as_posix()
            if not ledger.holds(relative, size):
                yield path, relative, size


def pending_exports(exports_dir: Path, ledger: Ledger) -> Iterator[tuple[Path, str, int]]:
    """Finished exports not yet archived (a pivot writes under a hidden temporary name,
    ``.NAME.PID.tmp``, file or directory, and renames it when done)."""
    if not exports_dir.is_dir():
        return
    for path in sorted(exports_dir.rglob("*")):
        inside = path.relative_to(exports_dir).parts
        if not path.is_file() or any(part.startswith(".") for part in inside):
            continue
        size = path.stat().st_size
        relative = "exports/" + path.relative_to(exports_dir).as_posix()
        if not ledger.holds(relative, size):
            yield path, relative, size


CLOCKS_EVERY_NS = 60 * 10**9  # a day's offsets, appended to, go up again this often at most


def pending_clocks(cache_dir: Path, ledger: Ledger, now_ns: int
                   ) -> Iterator[tuple[Path, str, int]]:
    """The clock offset series' day files (``cache.clocks``) not archived as they are: a
    past day's once, today's (still appended to) again when it grew, at most once a
    minute. Their size is read here: what is appended after goes up next time."""
    days, _other = clocks.day_files(cache_dir)  # other entries: not ours to upload
    for day, path in days:
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # retention took it meanwhile
            continue
        relative = path.relative_to(cache_dir).as_posix()
        entry = ledger.entries.get(relative)
        if ledger.holds(relative, size) or (
                entry is not None and day + clocks.DAY_NS > now_ns - CLOCKS_EVERY_NS
                and now_ns - int(entry.get("ns", 0)) < CLOCKS_EVERY_NS):
            continue
        yield path, relative, size


def owner(relative: str) -> str:
    """The cache file an upload belongs to (its data, index and summary share one)."""
    if relative.startswith("exports/"):
        return relative
    for suffix in (SUFFIX + ".sum.npz", SUFFIX, INDEX_SUFFIX):
        if relative.endswith(suffix):
            return relative.removesuffix(suffix)
    return relative


def groups(found: Iterable[tuple[Path, str, int]]) -> list[list[tuple[Path, str, int]]]:
    """Uploads by cache file, in the order found (data, index, summary): a group goes up
    in one stream, in order, so several streams never put an index before its data."""
    grouped: dict[str, list[tuple[Path, str, int]]] = {}
    for item in found:
        grouped.setdefault(owner(item[1]), []).append(item)
    return list(grouped.values())


@dataclass
class Archiver:
    """Uploads what ``pending`` finds, ``[archive] streams`` files at a time, oldest
    first; counts for the status file."""

    config: Config
    s3: Any
    stopping: Callable[[], bool] = lambda: False
    report: Callable[[], None] = lambda: None  # says what it does (the status file)
    counts: dict[str, Any] = field(default_factory=lambda: {
        "uploaded_files": 0, "uploaded_bytes": 0, "errors": 0, "last_error": "",
        "store": "unknown", "backlog_files": 0, "backlog_bytes": 0, "uploading": ""})

    def __post_init__(self) -> None:
        self.cache = self.config.cache.dir
        self.ledger = Ledger(self.cache / LEDGER)
        self.host = host_name(self.config.archive)
        self.started = time.time()
        self._bucket_ready = False
        self._error_log = Throttle(10.0)
        self._busy_seconds = 0.0  # wall time of rounds that uploaded: the throughput's
        self._lock = threading.RLock()  # ledger, counts and status, shared by the streams
        self._current: set[str] = set()
        self._abort = False

    def todo(self) -> list[tuple[Path, str, int]]:
        files = scan(self.cache)
        growing = still_open(files, closed_marks(files), relays_running(self.cache, time.time()))
        found = list(pending(self.cache, files, self.ledger, growing))
        found += pending_clocks(self.cache, self.ledger, time.time_ns())
        if self.config.archive.exports:
            found += pending_exports(self.config.exports.dir, self.ledger)
        self.counts["backlog_files"] = len(found)
        self.counts["backlog_bytes"] = sum(size for _, _, size in found)
        return found

    def ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        bucket = self.config.archive.bucket
        try:
            self.s3.head_bucket(Bucket=bucket)
        except self.s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            self.s3.create_bucket(Bucket=bucket)
            log.info("archive: made bucket %s at %s", bucket, self.config.archive.endpoint)
        self._bucket_ready = True

    def _put(self, key: str, body: Any, size: int, md5: str, sha256: str) -> None:
        """One PUT, with its SHA-256 in the object's metadata, then a HEAD that checks
        what the store holds: size, MD5 (its ETag) and that SHA-256."""
        bucket = self.config.archive.bucket
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentLength=size,
                           ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode(),
                           Metadata={"sha256": sha256})
        head = self.s3.head_object(Bucket=bucket, Key=key)
        etag = str(head.get("ETag", "")).strip('"')
        kept = head.get("Metadata", {}).get("sha256")
        if head.get("ContentLength") != size or etag != md5 or kept != sha256:
            raise ArchiveError(f"{bucket}/{key}: the store holds {head.get('ContentLength')} "
                               f"bytes with MD5 {etag} and SHA-256 {kept}, the file {size} "
                               f"bytes with MD5 {md5} and SHA-256 {sha256}")

    def upload(self, path: Path, relative: str, size: int) -> None:
        """Upload one file (a cache file's data with its block sums) and check each object
        before the ledger counts it."""
        key = object_key(self.config.archive.prefix, self.host, relative)
        entries = None
        if relative.endswith(SUFFIX) and not relative.startswith("exports/"):
            try:
                entries = index.unpack(index_path(path).read_bytes())
            except FileNotFoundError:
                entries = []
        snapshot = None
        if relative.startswith(clocks.DIR + "/"):  # appended to: its first size bytes
            with path.open("rb") as f:
                snapshot = f.read(size)
            size = len(snapshot)
            md5 = hashlib.md5(snapshot, usedforsecurity=False).hexdigest()
            sha256, sums = hashlib.sha256(snapshot).hexdigest(), b""
        else:
            md5, sha256, sums = digests(path, entries)
        with self._lock:
            self._current.add(relative)
            self.counts["uploading"] = ", ".join(sorted(self._current))
            self.say()  # a large file takes a while: say which ones are going
        if snapshot is not None:
            self._put(key, snapshot, size, md5, sha256)
        else:
            with path.open("rb") as body:
                self._put(key, body, size, md5, sha256)
        if entries is not None:
            self._put(key.removesuffix(SUFFIX) + SUMS_SUFFIX, sums, len(sums),
                      hashlib.md5(sums, usedforsecurity=False).hexdigest(),
                      hashlib.sha256(sums).hexdigest())
        with self._lock:
            self.ledger.record(relative, size, md5, key, time.time_ns(), sha256)
            self._current.discard(relative)
            self.counts["uploading"] = ", ".join(sorted(self._current))
            self.counts["uploaded_files"] += 1
            self.counts["uploaded_bytes"] += size
            self.counts["backlog_files"] -= 1
            self.counts["backlog_bytes"] -= size
            self.counts["store"] = "up"  # it just took a file
            self.say()

    def say(self) -> None:
        """Write the status (``report``), one stream at a time."""
        with self._lock:
            self.report()

    def _stream(self, group: list[tuple[Path, str, int]]) -> int:
        """One cache file's uploads, in order, unless the round is over (asked to stop, or
        the store failed another stream): then the rest waits for the next round."""
        done = 0
        for path, relative, size in group:
            if self._abort or self.stopping():
                break
            try:
                self.upload(path, relative, size)
            except FileNotFoundError:  # retention took it meanwhile (archive not required)
                break
            except Exception:
                self._abort = True  # the store is away: the queued uploads wait for the retry
                raise
            done += 1
        return done

    def round(self) -> int:
        """One pass: upload everything pending, ``streams`` at a time (stops early when
        asked). Raises the store's first error; returns how many files went up."""
        self.ensure_bucket()
        todo = self.todo()
        self._abort = False
        started = time.monotonic()
        done = 0
        failure: Exception | None = None
        with ThreadPoolExecutor(self.config.archive.streams) as pool:
            for future in [pool.submit(self._stream, group) for group in groups(todo)]:
                try:
                    done += future.result()
                except Exception as exc:
                    failure = failure or exc
        with self._lock:
            self._current.clear()
            self.counts["uploading"] = ""
        if failure is not None:
            raise failure
        if done:
            self._busy_seconds += time.monotonic() - started
        self.counts["store"] = "up"
        return done

    def failed(self, exc: Exception) -> None:
        self.counts["errors"] += 1
        self.counts["last_error"] = f"{type(exc).__name__}: {exc}"[:300]
        self.counts["store"] = "down"
        self.counts["uploading"] = ""
        if self._error_log.ready(time.monotonic()):
            log.error("archive: %s (retrying with backoff; %d files, %.1f MiB waiting)",
                      self.counts["last_error"], self.counts["backlog_files"],
                      self.counts["backlog_bytes"] / 2**20)

    def statistics(self) -> ArchiveSnapshot:
        return ArchiveSnapshot(
            service="archive", pid=os.getpid(), written=time.time(), started=self.started,
            endpoint=self.config.archive.endpoint, bucket=self.config.archive.bucket,
            host=self.host, archived_files=len(self.ledger.entries),
            archived_bytes=self.ledger.bytes,
            upload_mb_per_s=round(self.counts["uploaded_bytes"] / 1e6 / self._busy_seconds, 1)
            if self._busy_seconds else None,
            **self.counts)


def run(config: Config, should_stop: Callable[[], bool]) -> None:
    """Archive until ``should_stop()``: rounds every few seconds, backoff when the store
    is away, the status file every second."""
    from botocore.exceptions import BotoCoreError, ClientError

    archiver = Archiver(config, client(config.archive), should_stop)

    def report() -> None:
        try:
            status.write(config.cache.dir, "archive", archiver.statistics())
        except OSError as exc:  # a full disk costs the status file, not the archive
            log.debug("cannot write the status file: %s", exc)

    archiver.report = report
    backoff = Backoff()
    log.info("archiving %s to %s bucket %s as %s", config.cache.dir, config.archive.endpoint,
             config.archive.bucket, archiver.host)
    next_round = next_status = 0.0
    try:
        while not should_stop():
            now = time.monotonic()
            if now >= next_status:
                archiver.say()
                next_status = now + STATUS_SECONDS
            if now >= next_round:
                try:
                    archiver.round()
                    backoff.reset()
                    next_round = time.monotonic() + SCAN_SECONDS
                except (BotoCoreError, ClientError, ArchiveError, OSError) as exc:
                    archiver.failed(exc)
                    next_round = time.monotonic() + backoff.next()
            time.sleep(0.1)
        last_round(archiver)
    finally:
        status.remove(config.cache.dir, "archive")
        log.info("archive stopped: %d files uploaded this run, %d archived in all",
                 archiver.counts["uploaded_files"], len(archiver.ledger.entries))


def last_round(archiver: Archiver) -> None:
    """Asked to stop (``./stop``, ``up`` ending): wait a little for the relay to stop (it
    closes and marks its files), then upload what it closed, within a deadline that ends
    before ``up`` would kill us. What does not make it is uploaded at the next start."""
    from botocore.exceptions import BotoCoreError, ClientError

    started = time.monotonic()
    while (relays_running(archiver.cache, time.time())
           and time.monotonic() - started < FINAL_WAIT_SECONDS):
        time.sleep(0.1)
    archiver.stopping = lambda: time.monotonic() - started > FINAL_SECONDS
    try:
        done = archiver.round()
    except (BotoCoreError, ClientError, ArchiveError, OSError) as exc:
        archiver.failed(exc)
        log.warning("archive: the last round failed (%s); %d files wait for the next start",
                    exc, archiver.counts["backlog_files"])
        return
    left = archiver.counts["backlog_files"]
    log.info("archive: last round uploaded %d files%s", done,
             f"; {left} wait for the next start" if left else "")


# -- reading back: a range from every relay's archived files --------------------------------
