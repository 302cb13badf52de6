"""Where the cache keeps what: file names and the paths beside each file. The writer,
the readers, retention and the archive all take them from here.

``<cache>/<channel>/<UTC start>[-wN].avro``: the name is the receive time of the file's
first block, cut to the microsecond (never rounded up, so it is never later than the
data in it), and sorts by start; ``-wN`` names the relay worker that writes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

SUFFIX = ".avro"
INDEX_SUFFIX = ".idx"
DAMAGED_DIR = "damaged"  # beside a channel's files: those whose header is unreadable
_STAMP = "%Y%m%dT%H%M%S"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def file_name(start_ns: int, worker: int | None = None) -> str:
    """``20261122T175155.123456Z.avro``: sorts by start time; workers add ``-wN``."""
    seconds, rest = divmod(start_ns, 10**9)
    stamp = f"{datetime.fromtimestamp(seconds, UTC).strftime(_STAMP)}.{rest // 1000:06d}Z"
    return stamp + (f"-w{worker}" if worker is not None else "") + SUFFIX


def start_of(path: Path) -> int:
    """The start time (ns) written in a cache file's name."""
    stamp = path.name.split("-w")[0].removesuffix(SUFFIX)
    since = datetime.strptime(stamp, _STAMP + ".%fZ").replace(tzinfo=UTC) - _EPOCH
    return ((since.days * 86400 + since.seconds) * 10**6 + since.microseconds) * 1000


def index_path(path: Path) -> Path:
    return path.with_suffix(INDEX_SUFFIX)


def summary_path(path: Path) -> Path:
    """The summaries beside a cache file (``speeddata.cache.summary``)."""
    return path.with_name(path.name + ".sum.npz")


def closed_marker(folder: Path, worker: str) -> Path:
    """The marker naming the newest file of a channel (and worker, ``""`` for none) that
    the relay has closed: the archiver uploads it without waiting for a newer one."""
    return folder / (".closed" + (f"-w{worker}" if worker else ""))
