"""Cache files: Avro container blocks, index, roll-over, repair after a torn write."""

from __future__ import annotations

import io
import os
import resource
import signal
from pathlib import Path

import avro.datafile
import avro.io
import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speeddata.cache import avrofile, index
from speeddata.cache.layout import file_name, index_path, start_of
from speeddata.cache.store import CacheWriter, needs_rollover, repair
from speeddata.schemas import load_file
from speeddata.sender import Encoder
from tests.helpers import SCHEMAS

EXAMPLE = load_file(SCHEMAS / "example.avsc")
T0 = 1_795_000_000_000_000_000


def bodies(start: int, count: int) -> list[bytes]:
    encoder = Encoder(EXAMPLE)
    return [
        encoder.encode({"time": T0 + i, "message": f"m{i}", "counter": i, "sine_wave": 0.5,
                        "ramp": float(i), "square_wave": 1.0, "noise": 0.0})[10:]
        for i in range(start, start + count)
    ]


def read_fastavro(path: Path) -> list[dict]:
    with path.open("rb") as f:
        return list(fastavro.reader(f))


def read_apache(path: Path) -> list[dict]:
    with avro.datafile.DataFileReader(path.open("rb"), avro.io.DatumReader()) as reader:
        return list(reader)


def test_varint_round_trip_literal_bytes() -> None:
    assert avrofile.encode_long(0) == b"\x00"
    assert avrofile.encode_long(-1) == b"\x01"
    assert avrofile.encode_long(64) == b"\x80\x01"
    for value in (0, 1, -1, 63, -64, 2**40, -(2**63), 2**63 - 1):
        assert avrofile.decode_long(avrofile.encode_long(value), 0)[0] == value


def test_file_names_sort_by_time_and_read_back() -> None:
    name = file_name(T0 + 123_456_000)
    assert name == "20261118T110640.123456Z.avro"  # date -u -d @1795000000
    assert start_of(Path(name)) == T0 + 123_456_000
    assert start_of(Path(file_name(T0, worker=3))) == T0


def test_blocks_are_readable_by_fastavro_and_apache_avro(tmp_path: Path) -> None:
    writer = CacheWriter(tmp_path, 2**30, 600)
    writer.append(EXAMPLE, bodies(0, 3), T0)
    writer.append(EXAMPLE, bodies(3, 2), T0 + 10)
    [path] = writer.open_paths()
    # readable while still open, and after closing
    assert [r["counter"] for r in read_fastavro(path)] == [0, 1, 2, 3, 4]
    writer.close()
    assert [r["counter"] for r in read_apache(path)] == [0, 1, 2, 3, 4]
    with path.open("rb") as f:
        meta = fastavro.reader(f).metadata
    assert meta["speeddata.channel"] == "example"
    assert meta["speeddata.host"]
    entries = index.unpack(index_path(path).read_bytes())
    assert [(e.count, e.recv_ns) for e in entries] == [(3, T0), (2, T0 + 10)]
    assert entries[-1].offset + entries[-1].length == path.stat().st_size


def test_rollover_decision() -> None:
    assert not needs_rollover(10, T0, T0 + 1, rotate_bytes=100, rotate_seconds=1)
    assert needs_rollover(100, T0, T0 + 1, rotate_bytes=100, rotate_seconds=1)
    assert needs_rollover(10, T0, T0 + 10**9, rotate_bytes=100, rotate_seconds=1)


def test_writer_rolls_over_by_size_and_age(tmp_path: Path) -> None:
    writer = CacheWriter(tmp_path, rotate_bytes=2000, rotate_seconds=5)
    now = T0
    for i in range(40):  # ~70 bytes a record: several files by size
        writer.append(EXAMPLE, bodies(i, 1), now)
        now += 1000
    writer.roll_expired(now + 6 * 10**9)  # and the last one by age, with no new data
    assert writer.open_paths() == set()
    files = sorted((tmp_path / "example").glob("*.avro"))
    assert len(files) >= 2
    counters = [r["counter"] for f in files for r in read_fastavro(f)]
    assert counters == list(range(40))


def test_a_periodic_fsync_never_waits_for_a_busy_syncer(tmp_path: Path) -> None:
    """The receive loop hands fsyncs over without blocking: while a round is still under
    way (a stalled disk), the next periodic round is skipped and counted."""
    writer = CacheWriter(tmp_path, rotate_bytes=2**30, rotate_seconds=600)
    writer.append(EXAMPLE, bodies(0, 1), T0)
    writer.syncer._submitted += 1  # as if one round had not finished yet
    writer.fsync()
    assert writer.statistics()["fsync_stalls"] == 1
    writer.syncer._submitted -= 1
    writer.fsync()  # the syncer is free again: this round goes through
    writer.close()
    assert writer.statistics()["fsync_stalls"] == 1


def test_write_errors_are_counted_and_the_file_stays_whole(tmp_path: Path) -> None:
    """A write that fails (here: over the file size limit, as a full disk would) leaves
    the file at its last whole block and is counted."""
    writer = CacheWriter(tmp_path, rotate_bytes=2**30, rotate_seconds=600)
    writer.append(EXAMPLE, bodies(0, 3), T0)
    [path] = writer.open_paths()
    size = path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, hard))
    try:
        with pytest.raises(OSError):
            writer.append(EXAMPLE, bodies(3, 3), T0 + 1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    writer.append(EXAMPLE, bodies(3, 3), T0 + 2)  # room again: caching resumes
    writer.close()
    assert writer.statistics()["write_errors"] == 1
    assert [r["counter"] for r in read_fastavro(path)] == list(range(6))


def _torn_copy(src: Path, dst: Path, cut: int, extra: bytes) -> Path:
    data = src.read_bytes()[:cut] + extra
    dst.write_bytes(data)
    index_path(dst).write_bytes(index_path(src).read_bytes())
    return dst


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=2000), extra=st.binary(max_size=40))
def test_repair_cuts_back_to_the_last_whole_block(tmp_path: Path, cut: int, extra: bytes) -> None:
    source = tmp_path / "src"
    if not source.exists():
        writer = CacheWriter(source, 2**30, 600)
        for i in range(0, 20, 4):
            writer.append(EXAMPLE, bodies(i, 4), T0 + i)
        writer.close()
    [original] = (source / "example").glob("*.avro")
    size = original.stat().st_size
    cut = min(cut, size)
    torn = _torn_copy(original, tmp_path / file_name(T0 + 5), cut, extra)
    report = repair(torn)
    if report is not None and (report.removed or report.moved_to):
        assert not torn.exists()  # a header cut short: its blocks are unreadable
        assert report.moved_to is None or report.moved_to.parent.name == "damaged"
        return
    records = read_fastavro(torn)
    counters = [r["counter"] for r in records]
    assert counters == list(range(len(counters)))  # a prefix, nothing torn or invented
    if cut == size and not extra:
        assert len(counters) == 20
    assert [r["counter"] for r in read_apache(torn)] == counters
    entries = index.unpack(index_path(torn).read_bytes())
    assert sum(e.count for e in entries) == len(counters)
    assert repair(torn) is None  # repaired once, consistent after


def test_full_disk_leaves_a_valid_file_and_raises(tmp_path: Path) -> None:
    writer = CacheWriter(tmp_path, 2**30, 600)
    writer.append(EXAMPLE, bodies(0, 10), T0)
    [path] = writer.open_paths()
    limit = path.stat().st_size + 200  # room for a little more, not for a big block
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        with pytest.raises(OSError):
            writer.append(EXAMPLE, bodies(10, 50), T0 + 1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    writer.append(EXAMPLE, bodies(60, 2), T0 + 2)  # and it carries on once there is room
    writer.close()
    assert [r["counter"] for r in read_fastavro(path)] == [*range(10), 60, 61]
    assert repair(path) is None


def test_header_round_trip() -> None:
    sync = os.urandom(16)
    data = avrofile.encode_header({"a": b"1", "avro.codec": b"null"}, sync)
    header = avrofile.decode_header(data + b"rest")
    assert header.metadata == {"a": b"1", "avro.codec": b"null"}
    assert header.sync == sync and header.size == len(data)
    with pytest.raises(ValueError, match="cut short"):
        avrofile.decode_header(data[:-1])
    assert list(fastavro.reader(io.BytesIO(
        avrofile.encode_header({"avro.schema": b'"long"', "avro.codec": b"null"}, sync)))) == []


@given(st.integers(0, 2**63 - 1))
def test_a_file_is_never_named_after_its_first_block(start_ns: int) -> None:
    """Integer arithmetic: the name is its first block's time cut to the microsecond
    (a float of the ns rounded half of all names up, past the data they hold)."""
    from pathlib import Path

    named = start_of(Path(file_name(start_ns)))
    assert named <= start_ns < named + 1000 and named % 1000 == 0
    assert file_name(1_795_368_600_000_000_999) == "20261122T173000.000000Z.avro"
    assert file_name(1_795_368_600_999_999_999, 2) == "20261122T173000.999999Z-w2.avro"
