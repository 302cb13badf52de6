"""The archive: closed cache files uploaded to an S3-compatible object store.

``speeddata archive`` (started by ``speeddata up`` when ``[archive] endpoint`` is set)
runs beside the relay, never on its receive path: it scans the cache for closed files
(every file but the newest of each channel and worker; the newest too once the relay
marked it closed, on roll-over, after a minute without data or when it stopped, or once
that worker's relay is gone) and uploads each one to ``<prefix>/<host>/<channel>/<file>``:
the data first, then its per-block SHA-256 sums (``.sha256``), then its index and its
summary, so the store never holds an index whose data is not there. Each object carries
its SHA-256 in its metadata (``x-amz-meta-sha256``); the archiver checks it (size, the
MD5 the store reports as its ETag, the SHA-256) and only then records it, with both
digests, in the ledger, ``<cache>/.archive.jsonl``. The ledger makes it resumable: a
restart uploads what is not in it, so a kill in the middle of an upload leaves at worst
an object that is uploaded again, whole (a PUT is atomic). With ``[archive] required``,
retention deletes only files the ledger holds. Asked to stop, it waits a few seconds for
the relay to stop and uploads what that closed in a last round.

``fetch_range`` (``pivot --archive``) trusts nothing it reads: a whole object (an index)
must match its SHA-256; a ranged GET cannot be hashed as a whole, so each block fetched
is checked against its sum and its framing (count, length, sync marker). What fails is
fetched once more; what fails again is skipped, and each missing, truncated or damaged
object is reported on one line naming it, with the exact number of records not read.

What to upload, in which order, what is closed, the ledger, the checks and the backoff are
plain code (tested without a store); the loops around them are thin.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import json
import logging
import mmap
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speeddata import status
from speeddata.cache import avrofile, index
from speeddata.cache.catalogue import CachedFile, maybe_open, scan
from speeddata.cache.layout import INDEX_SUFFIX, SUFFIX, closed_marker, index_path, summary_path
from speeddata.cache.ledger import LEDGER, Ledger
from speeddata.config import ArchiveConfig, Config
from speeddata.errors import ArchiveError, ConfigError
from speeddata.logs import Throttle

log = logging.getLogger("speeddata.archive")

SCAN_SECONDS = 2.0
STATUS_SECONDS = 1.0
CHUNK = 2**20
SUMS_SUFFIX = ".sha256"  # beside each archived cache file: the SHA-256 of each block
SUM = struct.Struct("<QI16s")  # offset, length, the first 16 bytes of its SHA-256
RELAY_GONE_SECONDS = 60.0  # a relay's status this old: it is gone (or hung) for closing
FINAL_WAIT_SECONDS = 5.0  # for the relay to stop before the last round (up gives 10 s)
FINAL_SECONDS = 9.0  # the last round ends within this, before up's grace runs out


def object_key(prefix: str, host: str, relative: str) -> str:
    """Where a cache file (``relative`` to the cache dir) goes in the bucket."""
    return "/".join(part for part in (prefix.strip("/"), host, relative) if part)


def block_sums(data: bytes | memoryview, entries: list[index.Entry]) -> bytes:
    """The per-block sums of a cache file: its header (offset 0) first, then each block its
    index names. A ranged GET is checked block by block against these."""
    spans = [(0, entries[0].offset if entries else len(data))]
    spans += [(e.offset, e.length) for e in entries]
    return b"".join(SUM.pack(offset, length, hashlib.sha256(data[offset:offset + length])
                             .digest()[:16]) for offset, length in spans)


def parse_sums(data: bytes) -> dict[int, tuple[int, bytes]]:
    """Per-block sums by offset: (length, digest). ValueError if torn."""
    if len(data) % SUM.size:
        raise ValueError(f"{len(data)} bytes: not a whole number of sums")
    return {offset: (length, digest) for offset, length, digest in SUM.iter_unpack(data)}


def digests(path: Path, entries: list[index.Entry] | None = None) -> tuple[str, str, bytes]:
    """A file's MD5 (what the store's ETag must be) and SHA-256 (hex), and with
    ``entries`` its per-block sums, in one read."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    with path.open("rb") as f:
        if not os.fstat(f.fileno()).st_size:  # mmap takes no empty file
            return md5.hexdigest(), sha.hexdigest(), block_sums(b"", entries or [])
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            for pos in range(0, len(view), CHUNK):
                md5.update(view[pos:pos + CHUNK])
                sha.update(view[pos:pos + CHUNK])
            sums = block_sums(view, entries) if entries is not None else b""
            view.release()
    return md5.hexdigest(), sha.hexdigest(), sums


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
        files = scan(self.cache)
        growing = still_open(files, closed_marks(files), relays_running(self.cache, time.time()))
        found = list(pending(self.cache, files, self.ledger, growing))
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
        md5, sha256, sums = digests(path, entries)
        with self._lock:
            self._current.add(relative)
            self.counts["uploading"] = ", ".join(sorted(self._current))
            self.say()  # a large file takes a while: say which ones are going
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

def _listing(s3: Any, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"], int(item.get("Size", 0))


def archived_files(keys: Iterable[str], prefix: str, channels: list[str] | None
                   ) -> dict[tuple[str, str, str], list[tuple[int, str]]]:
    """The archived cache files by (host, channel, worker), oldest first: (start, key
    without its suffix), for each file with its data or its index in the store (either
    alone is reported by the fetch). Exports and summaries are not cache files."""
    from speeddata.cache.layout import start_of

    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    found: dict[tuple[str, str, str], set[tuple[int, str]]] = {}
    for key in keys:
        parts = key[len(base):].split("/") if key.startswith(base) else []
        if len(parts) != 3 or not parts[2].endswith((SUFFIX, INDEX_SUFFIX)):
            continue
        host, channel, name = parts
        if channels and channel not in channels:
            continue
        stem = name.removesuffix(SUFFIX).removesuffix(INDEX_SUFFIX)
        try:
            start = start_of(Path(stem + SUFFIX))
        except ValueError:
            continue
        found.setdefault((host, channel, stem.partition("-w")[2]), set()).add(
            (start, key.removesuffix(SUFFIX).removesuffix(INDEX_SUFFIX)))
    return {where: sorted(files) for where, files in found.items()}


def index_problem(data: bytes, sha256: str | None) -> str | None:
    """What is wrong with an archived index, or None: its SHA-256 (when it was uploaded
    with one), whole entries, and blocks that follow each other from the header on."""
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        return (f"damaged or truncated: its {len(data)} bytes do not have the SHA-256 it was "
                "uploaded with")
    if len(data) % index.ENTRY_SIZE:
        return f"truncated: {len(data)} bytes, not a whole number of index entries"
    entries = index.unpack(data)
    for before, entry in zip([None, *entries], entries, strict=False):
        end = before.offset + before.length if before else entry.offset
        if (entry.offset != end or entry.offset < len(avrofile.MAGIC)
                or entry.length <= avrofile.SYNC_SIZE or entry.count <= 0):
            return f"damaged: its entry for the block at byte {entry.offset} does not fit"
    return None


def damaged_blocks(head: bytes, body: bytes, first: int, picked: list[index.Entry],
                   sums: dict[int, tuple[int, bytes]] | None) -> list[index.Entry]:
    """The picked blocks that did not come back whole: ``head`` (the file's bytes before
    its first block) and ``body`` (from offset ``first``) against their sums when there are
    any, and always against their framing: count and length as indexed, sync marker."""
    def sum_ok(offset: int, data: bytes) -> bool:
        return sums is None or sums.get(offset) == (len(data),
                                                    hashlib.sha256(data).digest()[:16])

    try:
        header = avrofile.decode_header(head)
    except ValueError:
        return picked
    if header.size != len(head) or not sum_ok(0, head):
        return picked
    bad = []
    for entry in picked:
        block = body[entry.offset - first:entry.offset - first + entry.length]
        try:
            count, pos = avrofile.decode_long(block, 0)
            size, pos = avrofile.decode_long(block, pos)
        except (IndexError, ValueError):
            bad.append(entry)
            continue
        if (len(block) != entry.length or count != entry.count
                or pos + size + avrofile.SYNC_SIZE != entry.length
                or block[-avrofile.SYNC_SIZE:] != header.sync or not sum_ok(entry.offset, block)):
            bad.append(entry)
    return bad


def _spans(entries: list[index.Entry], most: int = 3) -> str:
    shown = ", ".join(f"{e.offset}-{e.offset + e.length - 1}" for e in entries[:most])
    return shown + (f" and {len(entries) - most} more" if len(entries) > most else "")


class _Fetch:
    """Gets and checks one range's objects; counts and words what it could not read."""

    def __init__(self, s3: Any, bucket: str, sizes: dict[str, int]) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.sizes = sizes
        self.stats: dict[str, Any] = {
            "files": 0, "blocks": 0, "bytes": 0, "hosts": [], "records": 0,
            "unread_records": 0, "unknown_files": 0, "refetched": 0, "unverified_files": 0,
            "problems": []}

    def problem(self, key: str, what: str) -> None:
        line = f"{self.bucket}/{key}: {what}"
        self.stats["problems"].append(line)
        log.warning("archive: %s", line)

    def get(self, key: str, first: int | None = None, last: int | None = None
            ) -> tuple[bytes, dict[str, str]]:
        """An object, or the bytes ``first`` to ``last`` of it, and its metadata; a
        missing or short object is an ArchiveError naming it."""
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {} if first is None else {"Range": f"bytes={first}-{last}"}
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=key, **extra)
            data = answer["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise ArchiveError(f"{self.bucket}/{key}: missing from the store") from None
            if code == "InvalidRange":
                raise ArchiveError(f"{self.bucket}/{key}: truncated: no byte {first} in the "
                                   "store") from None
            raise ArchiveError(f"{self.bucket}/{key}: the store answered {code}") from None
        except BotoCoreError as exc:
            raise ArchiveError(f"{self.bucket}/{key}: cannot read it: {exc}") from None
        self.stats["bytes"] += len(data)
        return data, answer.get("Metadata", {})

    def entries(self, key: str) -> list[index.Entry]:
        """A file's index, checked (fetched once more if it fails)."""
        for attempt in range(2):
            data, meta = self.get(key)
            problem = index_problem(data, meta.get("sha256"))
            if problem is None:
                return index.unpack(data)
            self.stats["refetched"] += attempt == 0
        raise ArchiveError(f"{self.bucket}/{key}: {problem}")

    def sums(self, key: str) -> dict[int, tuple[int, bytes]] | None:
        """A file's block sums; None (its blocks checked by their framing alone) if it was
        archived without them or they fail their own check twice."""
        if key in self.sizes:
            for _ in range(2):
                try:
                    data, meta = self.get(key)
                    if hashlib.sha256(data).hexdigest() == meta.get("sha256"):
                        return parse_sums(data)
                except (ArchiveError, ValueError):
                    continue
        self.stats["unverified_files"] += 1
        return None

    def blocks(self, base: str, start_ns: int, end_ns: int
               ) -> tuple[bytes, list[tuple[index.Entry, bytes]]] | None:
        """The header and the blocks of one archived file received in the range that
        came back whole; None when it holds none (or none could be read: reported)."""
        idx_key, data_key = base + INDEX_SUFFIX, base + SUFFIX
        if idx_key not in self.sizes:
            self.stats["unknown_files"] += 1
            self.problem(idx_key, "missing from the store (its data is there, "
                         "not yet indexed?): its records are not read, their number unknown")
            return None
        try:
            entries = self.entries(idx_key)
        except ArchiveError as exc:
            self.stats["unknown_files"] += 1
            self.stats["problems"].append(f"{exc}: the file's records are not read, their "
                                          "number unknown")
            log.warning("archive: %s", self.stats["problems"][-1])
            return None
        picked = list(index.in_range(entries, start_ns, end_ns))
        if not picked:
            return None
        self.stats["records"] += sum(e.count for e in picked)
        first, last = picked[0].offset, picked[-1].offset + picked[-1].length
        sums = self.sums(base + SUMS_SUFFIX) if data_key in self.sizes else None
        head = body = b""
        bad, why = picked, "missing from the store"
        for attempt in range(2):
            if data_key not in self.sizes:
                break
            try:
                head = self.get(data_key, 0, entries[0].offset - 1)[0]
                body = self.get(data_key, first, last - 1)[0]
            except ArchiveError as exc:
                bad, why = picked, str(exc).partition(": ")[2]
            else:
                bad = damaged_blocks(head, body, first, picked, sums)
                why = f"damaged: {len(bad)} of {len(picked)} blocks fail their check " \
                      f"(bytes {_spans(bad)})"
            if not bad:
                break
            self.stats["refetched"] += attempt == 0
        if bad:
            held = self.sizes.get(data_key, 0)
            if data_key in self.sizes and held < last:
                why = f"truncated: the store holds {held} bytes, its index needs {last}"
            lost = sum(e.count for e in bad)
            self.stats["unread_records"] += lost
            self.problem(data_key, f"{why}; {lost} records in the range not read")
        if len(bad) == len(picked):
            return None
        lost_offsets = {e.offset for e in bad}
        return head, [(e, body[e.offset - first:e.offset - first + e.length])
                      for e in picked if e.offset not in lost_offsets]


def fetch_range(config: Config, start_ns: int, end_ns: int, into: Path,
                channels: list[str] | None = None, s3: Any = None) -> dict[str, Any]:
    """Rebuild in ``into`` a cache of just the blocks received in ``[start_ns, end_ns]``,
    from every relay host's archived files: per file that may hold some, its index, then
    one ranged GET for its header and one for its blocks, never the whole file, each
    checked. Each relay host's files get a worker number of their own, so the local pivot
    merges them by receive time as it merges workers. What could not be read is counted
    (``unread_records``; ``unknown_files`` when even the count is lost) and each object at
    fault is a line of ``problems``: the caller decides whether that fails the export."""
    s3 = s3 or client(config.archive)
    bucket = config.archive.bucket
    prefix = config.archive.prefix
    sizes = dict(_listing(s3, bucket, prefix.strip("/")))
    fetch = _Fetch(s3, bucket, sizes)
    stats = fetch.stats
    listing = archived_files(sizes, prefix, channels)
    for number, ((host, channel, _), files) in enumerate(sorted(listing.items())):
        for i, (file_start, key) in enumerate(files):
            later = files[i + 1][0] if i + 1 < len(files) else None
            if file_start > end_ns or (later is not None and later < start_ns):
                continue  # wholly outside the range, by the names alone
            got = fetch.blocks(key, start_ns, end_ns)
            if got is None:
                continue
            head, blocks = got
            name = Path(key).name.partition("-w")[0]
            local = into / channel / f"{name}-w{number}{SUFFIX}"
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(head + b"".join(block for _, block in blocks))
            offset, entries = len(head), []
            for e, block in blocks:
                entries.append(index.Entry(offset, e.length, e.count, e.recv_ns).pack())
                offset += len(block)
            index_path(local).write_bytes(b"".join(entries))
            stats["files"] += 1
            stats["blocks"] += len(blocks)
            if host not in stats["hosts"]:
                stats["hosts"].append(host)
    return stats
