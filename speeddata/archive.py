"""The archive: closed cache files uploaded to an S3-compatible object store.

``speeddata archive`` (started by ``speeddata up`` when ``[archive] endpoint`` is set)
runs beside the relay, never on its receive path: it scans the cache for closed files
(every file but the newest of each channel and worker), uploads each one (the data, its
index, its summary when there is one) to ``<prefix>/<host>/<channel>/<file>``, checks the
object against the local file (size, and the MD5 the store reports as its ETag) and only
then records it in the ledger, ``<cache>/.archive.jsonl``. The ledger makes it resumable:
a restart uploads what is not in it, so a kill in the middle of an upload leaves at
worst an object that is uploaded again, whole (a PUT is atomic). With ``[archive]
required``, retention deletes only files the ledger holds.

What to upload, the ledger and the backoff are plain code (tested without a store); the
loop around them is thin.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speeddata import status
from speeddata.cache.catalogue import CachedFile, maybe_open, scan
from speeddata.cache.store import index_path, summary_path
from speeddata.config import ArchiveConfig, Config
from speeddata.errors import ConfigError, SpeeddataError
from speeddata.logs import Throttle

log = logging.getLogger("speeddata.archive")

LEDGER = ".archive.jsonl"
SCAN_SECONDS = 2.0
STATUS_SECONDS = 1.0
CHUNK = 2**20


class ArchiveError(SpeeddataError):
    """The store refused or garbled an upload (retried with backoff)."""


def object_key(prefix: str, host: str, relative: str) -> str:
    """Where a cache file (``relative`` to the cache dir) goes in the bucket."""
    return "/".join(part for part in (prefix.strip("/"), host, relative) if part)


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Ledger:
    """What is archived: one JSON line per verified upload, appended and fsynced. A torn
    last line (a crash while writing it) is ignored: that file is uploaded again, and the
    next line written starts on a line of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.bytes = 0  # archived, in all
        self._offset = 0
        self._torn = False  # the file ends in a partial line
        self.refresh()

    def refresh(self) -> None:
        """Take lines appended since the last look (by another process: the relay reads
        the archiver's ledger for retention)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        whole = data[: data.rfind(b"\n") + 1]
        for line in whole.splitlines():
            try:
                entry = json.loads(line)
                self._add(entry["path"], entry)
            except (ValueError, KeyError, TypeError):
                continue
        self._offset += len(whole)
        self._torn = len(whole) < len(data)

    def _add(self, relative: str, entry: dict[str, Any]) -> None:
        old = self.entries.get(relative)
        self.bytes += int(entry["size"]) - (old["size"] if old else 0)
        self.entries[relative] = entry

    def holds(self, relative: str, size: int) -> bool:
        entry = self.entries.get(relative)
        return entry is not None and entry["size"] == size

    def record(self, relative: str, size: int, md5: str, key: str, now_ns: int) -> None:
        entry = {"path": relative, "size": size, "md5": md5, "key": key, "ns": now_ns}
        line = (json.dumps(entry) + "\n").encode()
        with self.path.open("ab") as f:
            f.write(b"\n" + line if self._torn else line)
            f.flush()
            os.fsync(f.fileno())
            self._offset = f.tell()
        self._torn = False
        self._add(relative, entry)


def covered(ledger: Ledger, cache_dir: Path) -> Callable[[CachedFile], bool]:
    """For retention: is this cache file archived (its data and its index)?"""

    def archived(f: CachedFile) -> bool:
        for path in (f.path, index_path(f.path)):
            try:
                if not ledger.holds(path.relative_to(cache_dir).as_posix(), path.stat().st_size):
                    return False
            except FileNotFoundError:
                continue
        return True

    return archived


def pending(cache_dir: Path, files: list[CachedFile], ledger: Ledger
            ) -> Iterator[tuple[Path, str, int]]:
    """What is left to upload, oldest first (retention takes the oldest first): (path,
    relative name, size). The newest file of each channel and worker may still grow and
    waits."""
    growing = maybe_open(files)
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


@dataclass
class Backoff:
    """Seconds to wait after each failure in a row: 1, 2, 4 ... at most ``most`` (a try
    costs one connection: a store back is seen within seconds)."""

    most: float = 15.0
    failures: int = 0

    def next(self) -> float:
        self.failures += 1
        return min(self.most, 2.0 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0


def credentials(cfg: ArchiveConfig) -> dict[str, str]:
    """The store's keys: from ``credentials_file`` (an INI like ~/.aws/credentials, its
    [default] section or the only one), else boto3 takes the environment's. Never logged."""
    if not cfg.credentials_file:
        return {}
    parser = configparser.ConfigParser()
    path = Path(cfg.credentials_file).expanduser()
    try:
        with path.open() as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as exc:
        raise ConfigError(f"[archive] credentials_file: {path} cannot be read ({exc})") from None
    sections = parser.sections()
    section = "default" if "default" in sections else (sections[0] if sections else None)
    try:
        return {"aws_access_key_id": parser[section]["aws_access_key_id"],
                "aws_secret_access_key": parser[section]["aws_secret_access_key"]}
    except KeyError:
        raise ConfigError(f"[archive] credentials_file: {path} needs aws_access_key_id and "
                          "aws_secret_access_key (in [default])") from None


def client(cfg: ArchiveConfig) -> Any:
    """A boto3 S3 client for the configured store (path-style keys, short timeouts)."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3", endpoint_url=cfg.endpoint, region_name="us-east-1", **credentials(cfg),
        config=BotoConfig(connect_timeout=5, read_timeout=60, retries={"max_attempts": 1},
                          s3={"addressing_style": "path"}))


def host_name(cfg: ArchiveConfig) -> str:
    return cfg.host or socket.gethostname()


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
        found = list(pending(self.cache, scan(self.cache), self.ledger))
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

    def upload(self, path: Path, relative: str, size: int) -> None:
        """Upload one file and check the object before the ledger counts it."""
        md5 = file_md5(path)
        key = object_key(self.config.archive.prefix, self.host, relative)
        bucket = self.config.archive.bucket
        with self._lock:
            self._current.add(relative)
            self.counts["uploading"] = ", ".join(sorted(self._current))
            self.say()  # a large file takes a while: say which ones are going
        with path.open("rb") as body:
            self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentLength=size,
                               ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode())
        head = self.s3.head_object(Bucket=bucket, Key=key)
        etag = str(head.get("ETag", "")).strip('"')
        if head.get("ContentLength") != size or etag != md5:
            raise ArchiveError(f"{key}: the store holds {head.get('ContentLength')} bytes with "
                               f"MD5 {etag}, the file {size} bytes with MD5 {md5}")
        with self._lock:
            self.ledger.record(relative, size, md5, key, time.time_ns())
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

    def _stream(self, path: Path, relative: str, size: int) -> bool:
        """One upload of a round, unless the round is over (asked to stop, or the store
        failed another stream): then it is left for the next round."""
        if self._abort or self.stopping():
            return False
        try:
            self.upload(path, relative, size)
        except FileNotFoundError:  # retention took it meanwhile (archive not required)
            return False
        except Exception:
            self._abort = True  # the store is away: the queued uploads wait for the retry
            raise
        return True

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
            for future in [pool.submit(self._stream, *item) for item in todo]:
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

    def statistics(self) -> dict[str, Any]:
        return {"service": "archive", "pid": os.getpid(), "written": time.time(),
                "started": self.started, "endpoint": self.config.archive.endpoint,
                "bucket": self.config.archive.bucket, "host": self.host,
                "archived_files": len(self.ledger.entries),
                "archived_bytes": self.ledger.bytes,
                "upload_mb_per_s": round(self.counts["uploaded_bytes"] / 1e6 /
                                         self._busy_seconds, 1) if self._busy_seconds else None,
                **self.counts}


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
    finally:
        status.remove(config.cache.dir, "archive")
        log.info("archive stopped: %d files uploaded this run, %d archived in all",
                 archiver.counts["uploaded_files"], len(archiver.ledger.entries))


# -- reading back: a range from every relay's archived files --------------------------------

def _listing(s3: Any, bucket: str, prefix: str) -> Iterator[str]:
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"]


def archived_files(keys: Iterator[str], prefix: str, channels: list[str] | None
                   ) -> dict[tuple[str, str, str], list[tuple[int, str]]]:
    """The archived cache files by (host, channel, worker), oldest first: (start, key
    without its suffix). Exports and summaries are not cache files."""
    from speeddata.cache.store import SUFFIX, start_of

    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    found: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
    for key in keys:
        parts = key[len(base):].split("/")
        if len(parts) != 3 or not parts[2].endswith(SUFFIX):
            continue
        host, channel, name = parts
        if channels and channel not in channels:
            continue
        try:
            start = start_of(Path(name))
        except ValueError:
            continue
        found.setdefault((host, channel, name.partition("-w")[2]), []).append(
            (start, key.removesuffix(SUFFIX)))
    for files in found.values():
        files.sort()
    return found


def fetch_range(config: Config, start_ns: int, end_ns: int, into: Path,
                channels: list[str] | None = None, s3: Any = None) -> dict[str, Any]:
    """Rebuild in ``into`` a cache of just the blocks received in ``[start_ns, end_ns]``,
    from every relay host's archived files: per file that may hold some, its index, then
    one ranged GET for its header and one for its blocks, never the whole file. Each
    relay host's files get a worker number of their own, so the local pivot merges
    them by receive time as it merges workers."""
    from speeddata.cache import index
    from speeddata.cache.store import index_path

    s3 = s3 or client(config.archive)
    bucket = config.archive.bucket
    prefix = config.archive.prefix
    listing = archived_files(_listing(s3, bucket, prefix.strip("/")), prefix, channels)
    stats: dict[str, Any] = {"files": 0, "blocks": 0, "bytes": 0, "hosts": []}

    def ranged(key: str, first: int, last: int) -> bytes:
        return s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}")["Body"].read()

    for number, ((host, channel, _), files) in enumerate(sorted(listing.items())):
        for i, (file_start, key) in enumerate(files):
            later = files[i + 1][0] if i + 1 < len(files) else None
            if file_start > end_ns or (later is not None and later < start_ns):
                continue  # wholly outside the range, by the names alone
            try:
                entries = index.unpack(s3.get_object(Bucket=bucket, Key=key + ".idx")
                                       ["Body"].read())
            except s3.exceptions.NoSuchKey:
                continue  # its index not archived yet: its data is not either, in order
            picked = list(index.in_range(entries, start_ns, end_ns))
            if not picked:
                continue
            head = ranged(key + ".avro", 0, entries[0].offset - 1)
            first = min(e.offset for e in picked)
            body = ranged(key + ".avro", first, max(e.offset + e.length for e in picked) - 1)
            name = Path(key).name.partition("-w")[0]
            local = into / channel / f"{name}-w{number}.avro"
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(head + body)
            shift = len(head) - first
            index_path(local).write_bytes(b"".join(
                index.Entry(e.offset + shift, e.length, e.count, e.recv_ns).pack()
                for e in picked))
            stats["files"] += 1
            stats["blocks"] += len(picked)
            stats["bytes"] += len(head) + len(body)
            if host not in stats["hosts"]:
                stats["hosts"].append(host)
    return stats
