"""A cache damaged as in issue 20: one closed file cut in half, one with 4 kB overwritten
in the middle, one with its header zeroed; and what an exact reader gets from the rest."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from speeddata.cache import index
from speeddata.cache.layout import index_path
from speeddata.cache.reader import read_header
from speeddata.cache.store import CacheWriter
from speeddata.schemas import Registry
from speeddata.sender import Encoder
from tests.helpers import SCHEMAS

S = 10**9
T0 = 1_795_000_000 * S
REGISTRY, _ = Registry.load_dir(SCHEMAS)
PER_BLOCK = 100  # motor records a second, one block a second
SECONDS = 50
ROTATE = 55_000  # bytes: about ten blocks a file, five files


@dataclass
class Damaged:
    cache: Path
    files: list[Path]  # oldest first
    kinds: dict[str, Path]  # "cut", "overwritten", "zeroed"
    ranges: dict[Path, tuple[int, int]]  # the bytes each damage spoiled
    entries: dict[Path, list[index.Entry]]  # as indexed before the damage
    total: int

    def intact(self, path: Path, entry: index.Entry) -> bool:
        spoiled = self.ranges.get(path)
        return spoiled is None or not (entry.offset < spoiled[1]
                                       and entry.offset + entry.length > spoiled[0])

    def expected_speeds(self) -> list[float]:
        """The speed of every record in a block no damage touched, in time order."""
        return [float(recv_second(e) * PER_BLOCK + i) for path in self.files
                for e in self.entries[path] if self.intact(path, e) for i in range(e.count)]

    def lost(self) -> int:
        return self.total - len(self.expected_speeds())


def recv_second(entry: index.Entry) -> int:
    return (entry.recv_ns - T0) // S


def motor_record(second: int, i: int) -> dict:
    return {"time": T0 + second * S + i * S // PER_BLOCK, "speed": float(second * PER_BLOCK + i),
            "torque": -1.0, "current": 0.5, "voltage": 48.0, "position": float(i),
            "temperature": 20.0}


def write_cache(cache: Path, seconds: int = SECONDS, rotate: int = ROTATE) -> None:
    writer = CacheWriter(cache, rotate, 600)
    encoder = Encoder(REGISTRY["motor"])
    for s in range(seconds):
        writer.append(REGISTRY["motor"], [encoder.encode(motor_record(s, i))[10:]
                                          for i in range(PER_BLOCK)], T0 + s * S)
    writer.close()


def make(root: Path) -> Damaged:
    """The cache under ``root``: files 1, 2 and 3 of 5 damaged (the newest stays whole)."""
    cache = root / "cache"
    write_cache(cache)
    files = sorted((cache / "motor").glob("*.avro"))
    assert len(files) == 5, files
    entries = {p: index.unpack(index_path(p).read_bytes()) for p in files}
    cut, over, zero = files[1], files[2], files[3]
    size = cut.stat().st_size
    with cut.open("r+b") as f:
        f.truncate(size // 2)
    middle = over.stat().st_size // 2 - 2048
    with over.open("r+b") as f:
        f.seek(middle)
        f.write(random.Random(20).randbytes(4096))
    head, _ = read_header(zero)
    with zero.open("r+b") as f:
        f.write(bytes(len(head)))
    ranges = {cut: (size // 2, size), over: (middle, middle + 4096),
              zero: (0, zero.stat().st_size)}
    return Damaged(cache, files, {"cut": cut, "overwritten": over, "zeroed": zero}, ranges,
                   entries, SECONDS * PER_BLOCK)
