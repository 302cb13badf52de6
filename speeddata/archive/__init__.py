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

from speeddata.archive.bucket import (
    SUM,
    SUMS_SUFFIX,
    Backoff,
    block_sums,
    client,
    credentials,
    digests,
    host_name,
    object_key,
    parse_sums,
)
from speeddata.archive.fetch import archived_files, damaged_blocks, fetch_range, index_problem
from speeddata.archive.upload import (
    SCAN_SECONDS,
    Archiver,
    closed_marks,
    groups,
    owner,
    pending,
    pending_exports,
    relays_running,
    run,
    still_open,
    worker_of,
)
from speeddata.cache.ledger import LEDGER

__all__ = [
    "LEDGER", "SCAN_SECONDS", "SUM", "SUMS_SUFFIX", "Archiver", "Backoff", "archived_files",
    "block_sums", "client", "closed_marks", "credentials", "damaged_blocks", "digests",
    "fetch_range", "groups", "host_name", "index_problem", "object_key", "owner",
    "parse_sums", "pending", "pending_exports", "relays_running", "run", "still_open",
    "worker_of",
]
