"""The bucket side of the archive: object keys, per-block sums and digests, the S3
client and its credentials (shared by the uploader and the fetch)."""


from __future__ import annotations

import configparser
import hashlib
import logging
import mmap
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speeddata.cache import index
from speeddata.config import ArchiveConfig
from speeddata.errors import ConfigError

log = logging.getLogger("speeddata.archive")

CHUNK = 2**20
SUMS_SUFFIX = ".sha256"  # beside each archived cache file: the SHA-256 of each block
SUM = struct.Struct("<QI16s")  # offset, length, the first 16 bytes of its SHA-256


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
