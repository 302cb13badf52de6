"""Damage found, skipped and reported: the checked block reader, restart repair, and the
index entry written after its block."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speeddata.cache import avrofile, index, reader, store
from speeddata.cache.catalogue import scan
from speeddata.cache.check import BlockReader, Damage, Skipped, block_data
from speeddata.cache.layout import DAMAGED_DIR, index_path
from speeddata.cache.store import CacheWriter, repair
from speeddata.sender import Encoder
from tests.damage import (
    PER_BLOCK,
    REGISTRY,
    T0,
    make,
    motor_record,
    recv_second,
    write_cache,
)

SYNC = bytes(range(16))


def test_block_data_checks_count_size_and_sync_on_literal_bytes() -> None:
    good = b"\x04\x06abc" + SYNC  # 2 records, 3 bytes
    assert block_data(good, 2, SYNC) == b"abc"
    assert block_data(good, None, SYNC) == b"abc"
    assert block_data(good, 3, SYNC) == "prefix"  # the index says 3 records
    assert block_data(b"\x04\x08abc" + SYNC, 2, SYNC) == "prefix"  # size past the data
    assert block_data(b"\x08\x06abc" + SYNC, 4, SYNC) == "prefix"  # 4 records in 3 bytes
    assert block_data(b"\x04\x06abc" + bytes(16), 2, SYNC) == "sync"
    assert block_data(b"\xff" * 12, 2, SYNC) == "prefix"  # a varint that never ends
    assert block_data(b"", 2, SYNC) == "prefix"


def test_walk_resyncs_after_damage_and_finds_the_torn_tail() -> None:
    one = b"\x02\x02a" + SYNC
    two = b"\x02\x04bc" + SYNC
    data = b"H" + one + b"\xff\xff garbage" + SYNC + two + b"\x02\x10part"
    blocks, bad, tail = avrofile.walk_blocks(data, 1, SYNC)
    assert [(b.offset, b.count) for b in blocks] == [(1, 1), (1 + len(one) + 26, 1)]
    assert bad == [(1 + len(one), 1 + len(one) + 26)]
    assert tail == len(data) - 6  # the partial block after the last whole one


def test_skipped_merges_adjacent_blocks_of_a_file() -> None:
    skipped = Skipped()
    path = Path("motor/a.avro")
    skipped.add(Damage(path, 100, 200, "missing", 5))
    skipped.add(Damage(path, 200, 300, "missing", 5))
    skipped.add(Damage(path, 500, 600, "sync", 1))
    assert [(d.start, d.end, d.records) for d in skipped.damage] == [(100, 300, 10),
                                                                      (500, 600, 1)]
    assert skipped.blocks == 3 and skipped.records == 11
    assert skipped.statistics()["by_reason"] == {"missing": 2, "sync": 1}
    assert "bytes 100-300" in skipped.lines()[1]


def test_the_three_damage_kinds_are_skipped_and_the_rest_read_exactly(tmp_path: Path) -> None:
    cache = make(tmp_path)
    skipped = Skipped()
    got = [r["speed"] for _, r in reader.records(cache.cache, "motor", 0, 2**62, skipped)]
    assert got == cache.expected_speeds()
    assert 0 < cache.lost() == skipped.records
    assert {d.path for d in skipped.damage} == set(cache.kinds.values())
    reasons = {d.path: d.reason for d in skipped.damage}
    assert reasons[cache.kinds["cut"]] == "missing"
    assert reasons[cache.kinds["zeroed"]] == "header"
    for path, (start, end) in cache.ranges.items():  # each reported range meets the damage
        assert any(d.path == path and d.start < end and d.end > start for d in skipped.damage)


def test_a_block_overwritten_inside_its_data_is_skipped_by_decoding(tmp_path: Path) -> None:
    write_cache(tmp_path, seconds=3)
    [path] = (tmp_path / "motor").glob("*.avro")
    entries = index.unpack(index_path(path).read_bytes())
    middle = entries[1]
    with path.open("r+b") as f:  # the count, size and sync marker stay: only data changes
        f.seek(middle.offset + 10)
        f.write(b"\xff" * (middle.length - 40))
    skipped = Skipped()
    got = [r["speed"] for _, r in reader.records(tmp_path, "motor", 0, 2**62, skipped)]
    assert got == [float(v) for v in [*range(100), *range(200, 300)]]
    [bad] = skipped.damage
    assert (bad.reason, bad.start, bad.end, bad.records) == (
        "decode", middle.offset, middle.offset + middle.length, PER_BLOCK)


def test_restart_repair_handles_each_damage_kind(tmp_path: Path) -> None:
    cache = make(tmp_path)
    writer = CacheWriter(cache.cache, 2**30, 600)
    reports = {r.path: r for r in writer.repair_all()}
    zeroed, cut, over = (cache.kinds[k] for k in ("zeroed", "cut", "overwritten"))
    # an unreadable header: moved aside with its index, out of the readers' and
    # retention's sight
    assert not zeroed.exists() and reports[zeroed].moved_to == (
        zeroed.parent / DAMAGED_DIR / zeroed.name)
    assert index_path(reports[zeroed].moved_to).exists()
    # cut in half: the torn tail cut back to whole blocks, the index matching them
    assert reports[cut].cut_bytes > 0
    kept = index.unpack(index_path(cut).read_bytes())
    assert kept[-1].offset + kept[-1].length == cut.stat().st_size
    # overwritten in the middle: found, left in place, its index entries kept
    start, end = cache.ranges[over]
    assert any(s <= end and t >= start for s, t in reports[over].damaged)
    assert index_path(over).read_bytes() == b"".join(e.pack() for e in cache.entries[over])
    stats = writer.statistics()
    assert (stats["moved_aside"], stats["damaged_files"], stats["repaired_files"]) == (1, 1, 1)
    # readers still get every intact record, and no longer meet the zeroed file
    skipped = Skipped()
    got = [r["speed"] for _, r in reader.records(cache.cache, "motor", 0, 2**62, skipped)]
    assert got == cache.expected_speeds()
    assert {d.path for d in skipped.damage} == {over}
    again = {r.path for r in CacheWriter(cache.cache, 2**30, 600).repair_all()}
    assert again == {over}  # only the damage that stays is reported again


def test_restart_repair_walks_only_within_its_budget(tmp_path: Path) -> None:
    cache = make(tmp_path)
    ticks = iter(range(100))
    writer = CacheWriter(cache.cache, 2**30, 600)
    # the cheap pass catches the cut and the zeroed file; no time for a full walk
    found = {r.path for r in writer.repair_all(full_seconds=0.5, clock=lambda: next(ticks))}
    assert found == {cache.kinds["cut"], cache.kinds["zeroed"]}


def test_each_append_writes_the_block_before_its_index_entry(tmp_path: Path,
                                                             monkeypatch) -> None:
    writes: list[int] = []
    real = store._write_all

    def spy(fd: int, *parts: bytes) -> None:
        writes.append(fd)
        real(fd, *parts)

    writer = CacheWriter(tmp_path, 2**30, 600)
    monkeypatch.setattr(store, "_write_all", spy)
    bodies = [b"\x02" + bytes(56)] * 3
    writer.append(REGISTRY["motor"], bodies, T0)  # creates the file: header, then block
    opened = writer._open["motor"]
    writes.clear()
    for i in range(3):
        writer.append(REGISTRY["motor"], bodies, T0 + i)
    assert writes == [opened._fd, opened._index_fd] * 3
    writer.close()


def test_a_reader_racing_the_writer_never_sees_an_entry_without_its_bytes(
        tmp_path: Path) -> None:
    writer = CacheWriter(tmp_path, 2**30, 600)
    body = [Encoder(REGISTRY["motor"]).encode(motor_record(0, 0))[10:]]
    writer.append(REGISTRY["motor"], body, T0)
    [path] = writer.open_paths()
    done = threading.Event()
    seen: list[int] = []
    skipped = Skipped()

    def read() -> None:
        with BlockReader(skipped) as blocks:
            while True:
                last_round = done.is_set()  # after the writer's last entry: read it all
                entries = index.unpack(index_path(path).read_bytes())
                for entry in entries[len(seen):]:
                    if blocks.body(path, entry) is not None:
                        seen.append(entry.offset)
                if skipped or last_round:
                    return

    thread = threading.Thread(target=read)
    thread.start()
    for i in range(1, 5000):
        writer.append(REGISTRY["motor"], body * (1 + i % 7), T0 + i)
    done.set()
    thread.join()
    writer.close()
    assert not skipped, skipped.lines()
    assert len(seen) == 5000


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.one_of(st.none(), st.integers(min_value=0, max_value=60_000)),
       at=st.integers(min_value=0, max_value=60_000),
       garbage=st.binary(max_size=5000))
def test_the_reader_on_random_damage_never_raises_and_invents_nothing(
        tmp_path: Path, cut: int | None, at: int, garbage: bytes) -> None:
    source = tmp_path / "src"
    if not source.exists():
        write_cache(source, seconds=10)
    [original] = (source / "motor").glob("*.avro")
    data = bytearray(original.read_bytes())
    head, _ = reader.read_header(original)
    entries = index.unpack(index_path(original).read_bytes())
    if cut is not None:  # a truncation...
        del data[cut:]
        spoiled = (cut, 2**62)
    else:  # ...or an overwrite
        at = min(at, len(data))
        data[at : at + len(garbage)] = garbage[: len(data) - at]
        spoiled = (at, at + len(garbage))
    case = tmp_path / "case"
    case.mkdir(exist_ok=True)
    folder = case / "motor"
    folder.mkdir(exist_ok=True)
    (folder / original.name).write_bytes(bytes(data))
    index_path(folder / original.name).write_bytes(index_path(original).read_bytes())
    skipped = Skipped()
    got: dict[int, list[float]] = {}
    for recv, record in reader.records(case, "motor", 0, 2**62, skipped):
        # a byte overwritten in the header's schema may rename a field: the records then
        # decode under that name, which only the assertions on an intact header rule out
        got.setdefault(recv, []).append(record.get("speed"))
    header_whole = spoiled[0] >= len(head)
    for entry in entries:
        speeds = got.get(entry.recv_ns)
        touched = entry.offset < spoiled[1] and entry.offset + entry.length > spoiled[0]
        if header_whole and not touched:  # every intact block, exactly
            assert speeds == [float(recv_second(entry) * PER_BLOCK + i)
                              for i in range(entry.count)]
        elif cut is not None:  # nothing from bytes that are not there
            assert speeds is None
        if speeds is not None:  # a block whole or not at all
            assert len(speeds) == entry.count
    assert sum(map(len, got.values())) + skipped.records == sum(e.count for e in entries)


def test_damaged_files_are_kept_out_of_the_catalogue(tmp_path: Path) -> None:
    cache = make(tmp_path)
    repair(cache.kinds["zeroed"])
    assert cache.kinds["zeroed"] not in {f.path for f in scan(cache.cache)}
    assert len(scan(cache.cache)) == 4
    assert os.path.exists(cache.kinds["zeroed"].parent / DAMAGED_DIR)


def test_a_header_whose_schema_is_garbage_is_moved_aside_too(tmp_path: Path) -> None:
    write_cache(tmp_path, seconds=2)
    [path] = (tmp_path / "motor").glob("*.avro")
    data = bytearray(path.read_bytes())
    at = data.index(b'"fields"')
    data[at : at + 8] = b"\x00" * 8  # the header still parses; its schema does not
    path.write_bytes(bytes(data))
    skipped = Skipped()
    assert list(reader.records(tmp_path, "motor", 0, 2**62, skipped)) == []
    assert [(d.reason, d.records) for d in skipped.damage] == [("header", 2 * PER_BLOCK)]
    report = repair(path, full=False)
    assert report is not None and report.moved_to is not None and not path.exists()
