"""Reading a range back from every relay's archived files: each object checked (a
whole one against its SHA-256, a ranged block against its sum and framing), what
fails fetched once more, what fails again skipped and said with its record count."""


from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from speeddata.archive.bucket import SUMS_SUFFIX, client, parse_sums
from speeddata.cache import avrofile, index
from speeddata.cache.layout import INDEX_SUFFIX, SUFFIX, index_path
from speeddata.config import Config
from speeddata.errors import ArchiveError

log = logging.getLogger("speeddata.archive")

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


def listing_sizes(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Every object under ``prefix`` and its size: what a fetch may ask for."""
    return dict(_listing(s3, bucket, prefix.strip("/")))


def wanted_files(sizes: dict[str, int], prefix: str, start_ns: int, end_ns: int,
                 channels: list[str] | None) -> Iterator[tuple[int, str, str, str]]:
    """``(number, host, channel, key)`` of each archived file that may hold blocks of the
    range (by the names alone), in the order a fetch reads them; ``number`` is the worker
    number the file gets in a rebuilt cache (one per relay host and worker)."""
    listing = archived_files(sizes, prefix, channels)
    for number, ((host, channel, _), files) in enumerate(sorted(listing.items())):
        for i, (file_start, key) in enumerate(files):
            later = files[i + 1][0] if i + 1 < len(files) else None
            if file_start > end_ns or (later is not None and later < start_ns):
                continue  # wholly outside the range, by the names alone
            yield number, host, channel, key


def local_name(key: str, number: int) -> str:
    """The name an archived file has in a rebuilt cache: its start, the worker ``number``."""
    return f"{Path(key).name.partition('-w')[0]}-w{number}{SUFFIX}"


def write_fetched(local: Path, head: bytes, blocks: list[tuple[index.Entry, bytes]]) -> None:
    """A fetched file's header and blocks as a cache file and its index at ``local``."""
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(head + b"".join(block for _, block in blocks))
    offset, entries = len(head), []
    for e, block in blocks:
        entries.append(index.Entry(offset, e.length, e.count, e.recv_ns).pack())
        offset += len(block)
    index_path(local).write_bytes(b"".join(entries))


def new_stats() -> dict[str, Any]:
    """The counters of a fetch (``fetch_range``'s answer), all zero."""
    return _Fetch(None, "", {}).stats


def fetch_file(s3: Any, bucket: str, sizes: dict[str, int], key: str, start_ns: int,
               end_ns: int) -> tuple[dict[str, Any], tuple[bytes, list] | None]:
    """One archived file's part of a fetch: its counters and what came back whole (the
    header and the blocks), or None. ``sizes`` needs only the file's own objects."""
    fetch = _Fetch(s3, bucket, sizes)
    return fetch.stats, fetch.blocks(key, start_ns, end_ns)


def add_stats(stats: dict[str, Any], more: dict[str, Any], host: str | None) -> None:
    """``more`` (one file's counters) added to ``stats``; ``host`` when a file was kept."""
    for name, value in more.items():
        if name not in ("hosts", "problems"):
            stats[name] += value
    stats["problems"] += more["problems"]
    if host is not None and host not in stats["hosts"]:
        stats["hosts"].append(host)


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
    sizes = listing_sizes(s3, bucket, prefix)
    fetch = _Fetch(s3, bucket, sizes)
    stats = fetch.stats
    for number, host, channel, key in wanted_files(sizes, prefix, start_ns, end_ns, channels):
        got = fetch.blocks(key, start_ns, end_ns)
        if got is None:
            continue
        head, blocks = got
        write_fetched(into / channel / local_name(key, number), head, blocks)
        stats["files"] += 1
        stats["blocks"] += len(blocks)
        if host not in stats["hosts"]:
            stats["hosts"].append(host)
    fetch_clocks(fetch, sizes, prefix, start_ns, end_ns, into)
    return stats


def fetch_clock_series(s3: Any, bucket: str, sizes: dict[str, int], prefix: str,
                       start_ns: int, end_ns: int, into: Path, stats: dict[str, Any]) -> None:
    """``fetch_clocks`` for a reader that fetched the blocks its own way (the Dask
    path): the series counted into its ``stats``."""
    fetch = _Fetch(s3, bucket, sizes)
    fetch.stats = stats
    fetch_clocks(fetch, sizes, prefix, start_ns, end_ns, into)


MAX_CLOCK_FILE = 64 * 2**20  # a day's offsets of 600 senders and channels is 60 MB


def fetch_clocks(fetch: _Fetch, sizes: dict[str, int], prefix: str, start_ns: int,
                 end_ns: int, into: Path) -> None:
    """Every relay host's clock offset series (``cache.clocks``) of the days the range
    needs (a day either side), appended into ``into/.clocks/``, where the pivot reads
    them (``clock_files``). One that cannot be read, is too large or fails its SHA-256
    is left out, logged and listed in ``clock_problems``: the export goes on, those
    sources' records on their own clocks (the group's ``clock_note`` says so); the lines
    of the others are checked as the pivot reads them."""
    from speeddata.cache import clocks

    def problem(key: str, what: str) -> None:
        line = f"{fetch.bucket}/{key}: {what}"
        fetch.stats["clock_problems"].append(line)
        log.warning("archive: %s", line)

    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    days = {clocks.day_path(Path(), day * clocks.DAY_NS).name
            for day in range(start_ns // clocks.DAY_NS - 1, end_ns // clocks.DAY_NS + 2)}
    fetch.stats.setdefault("clock_files", 0)
    fetch.stats.setdefault("clock_problems", [])
    for key, size in sorted(sizes.items()):
        parts = key[len(base):].split("/") if key.startswith(base) else []
        if len(parts) != 3 or parts[1] != clocks.DIR or parts[2] not in days:
            continue
        if size > MAX_CLOCK_FILE:
            problem(key, f"{size}-byte clock offset series, more than {MAX_CLOCK_FILE}: "
                    "not read")
            continue
        try:
            data, meta = fetch.get(key)
        except ArchiveError as exc:
            problem(key, f"clock offset series not read: {exc}")
            continue
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            problem(key, "clock offset series fails its SHA-256: not read")
            continue
        if data and not data.endswith(b"\n"):
            data += b"\n"  # the next host's first line stays a line of its own
        local = into / clocks.DIR / parts[2]
        local.parent.mkdir(parents=True, exist_ok=True)
        with local.open("ab") as f:
            f.write(data)
        fetch.stats["clock_files"] += 1
