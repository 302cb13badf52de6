"""The archive's ledger: which cache files are in the store, verified. The archiver
writes it; the relay's retention reads it (``[archive] required``) without importing
the archiver or its store client.

``<cache>/.archive.jsonl``: one JSON line per verified upload (path, size, MD5,
SHA-256, key, when), appended and fsynced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speeddata.cache.catalogue import CachedFile
from speeddata.cache.layout import index_path

LEDGER = ".archive.jsonl"


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

    def record(self, relative: str, size: int, md5: str, key: str, now_ns: int,
               sha256: str = "") -> None:
        entry = {"path": relative, "size": size, "md5": md5, "sha256": sha256, "key": key,
                 "ns": now_ns}
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
