"""What ``speeddata status``, ``captures`` and ``tags`` print, from their dicts (as
``--json`` gives them), with no process, clock or disk: speeddata/cli/render.py."""

from __future__ import annotations

from typing import Any

from speeddata.cli.render import captures_lines, result_lines, status_lines, tags_lines
from speeddata.snapshots import parse
from speeddata.status import Seen

S = 10**9
NOW = 1_800_000_000 * S
T0 = 1_700_000_000 * S  # 2023-11-14T22:13:20Z

LOSS = {"source": "10.0.0.7:4000", "channel": "motor", "sent": 1000, "lost": 10,
        "lost_percent": 1.0, "recent_sent": 100, "recent_lost": 2, "failed": 0}
RELAY = {
    "service": "relay", "running": True, "age_seconds": 0.4, "pid": 4242,
    "written": NOW / S, "started": NOW / S - 90, "listen": "0.0.0.0:26000",
    "datagrams": 12000, "batches": 300, "kernel_drops": 0, "multicast_send_errors": 1,
    "cache_dropped": 0, "io": "mmsg", "rcvbuf": 32 * 2**20,
    "cache": {"deleted_files": 2, "deleted_bytes": 3 * 2**20, "damaged_files": 1,
              "moved_aside": 0},
    "loop_stalls": {"bounds_ms": [1, 10], "counts": [5, 1, 0], "longest_ms": 4.5},
    "control": {"group": "239.1.1.3:6003", "joined": False, "received": 3,
                "refused": {"bad_mac": 1, "stale": 0}, "sent": 2},
    "schema_errors": ["schema schemas/bad.avsc: field 'x' has unknown type 'dobule'"],
    "rejected": {"unknown_schema": 5, "too_long": 0},
    "unknown_fingerprints": {"00112233aabbccdd": {"count": 5, "source": "10.0.0.9:4001",
                                                  "last_seen_ns": NOW - 12 * S}},
    "channels": {"motor": {"datagrams": 11000, "rate_hz": 1000.0, "bytes": 700000,
                           "decimated": 500},
                 "env": {"datagrams": 1000, "rate_hz": 1.0, "bytes": 40000, "decimated": 1000}},
    "senders": [LOSS],
    "sender_reports": {"refused": {"implausible": 2, "epoch_conflict": 0}},
}


def seen(**snapshots: dict[str, Any]) -> dict[str, Seen]:
    """Status files' JSON as ``status.read`` gives them: typed, with running and age."""
    return {name: Seen(parse(raw), raw.pop("running"), raw.pop("age_seconds"))
            for name, raw in ((n, dict(r)) for n, r in snapshots.items())}


def test_a_relay_snapshot_reads_as_status_prints_it() -> None:
    assert status_lines(seen(relay=RELAY), NOW) == [
        "relay: running, pid 4242, up 90 s, listening 0.0.0.0:26000",
        "  12000 datagrams in 300 batches, kernel drops 0, multicast send errors 1, "
        "not cached 0",
        "  io mmsg, receive buffer 32.0 MiB, retention deleted 2 files (3.0 MiB)",
        "  loop stalls (ms): <=1:5 <=10:1; longest 4.5 ms",
        "  control group 239.1.1.3:6003 (not joined): 3 received, refused {'bad_mac': 1}, "
        "2 sent",
        "  schema error (channel skipped): schema schemas/bad.avsc: field 'x' has unknown "
        "type 'dobule'",
        "  rejected: {'unknown_schema': 5}",
        "  unknown schema 00112233aabbccdd: 5 datagrams from 10.0.0.9:4001, last 12 s ago "
        "(add its .avsc to the channels dir)",
        "  channel            datagrams        rate         bytes  decimated",
        "  env                     1000      1.0 /s         40000       1000",
        "  motor                  11000     1.0 k/s        700000        500",
        "  sender 10.0.0.7:4000 motor: sent 1000, lost 10 (1.0 %); last 10 s: 2 of 100",
        "  sender reports refused: {'implausible': 2}",
        "  cache damage found at start: 1 files with damaged blocks (skipped by readers), "
        "0 unreadable files moved into <channel>/damaged/",
    ]


def test_an_idle_relay_says_none_and_leaves_out_what_it_has_not() -> None:
    idle = {"service": "relay", "running": True, "age_seconds": 0.1, "pid": 1,
            "written": NOW / S, "started": NOW / S, "datagrams": 0, "batches": 0, "kernel_drops": 0,
            "multicast_send_errors": 0, "cache_dropped": 0, "rejected": {"too_long": 0},
            "channels": {}}
    assert status_lines(seen(**{"relay-w0": idle}), NOW) == [
        "relay-w0: running, pid 1, up 0 s",
        "  0 datagrams in 0 batches, kernel drops 0, multicast send errors 0, not cached 0",
        "  rejected: none",
        "  channel            datagrams        rate         bytes  decimated",
    ]


def test_a_stopped_server_and_an_archive_show_damage_refusals_and_loss() -> None:
    serve = {"service": "serve", "running": False, "age_seconds": 7.5, "pid": 99,
             "written": NOW / S - 7.5, "started": NOW / S - 10, "listen": "127.0.0.1:8080", "url": "http://127.0.0.1:8080/",
             "cache_damage": {"blocks": 2, "records": 50, "files": 1,
                              "last": "motor/x.avro: bad sync"},
             "refused": {"ws": {"page_cap": 1}}, "feed_errors": 0,
             "multicast_loss": {"full": [{**LOSS, "name": "", "recent_sent": 0}],
                                "decimated": [{**LOSS, "name": "rig2", "failed": 3}]}}
    archive = {"service": "archive", "running": True, "age_seconds": 0.1, "pid": 7,
               "written": NOW / S, "started": NOW / S - 5, "endpoint": "http://store:8333",
               "bucket": "speeddata",
               "host": "rig1", "store": "up", "archived_files": 3, "archived_bytes": 3 * 2**20,
               "backlog_files": 1, "backlog_bytes": 2**19, "errors": 1, "last_error": "timeout"}
    assert status_lines(seen(archive=archive, serve=serve), NOW) == [
        "archive: running, pid 7, up 5 s",
        "  to http://store:8333 bucket speeddata as rig1: store up, 3 files (3.0 MiB) "
        "archived, backlog 1 files (0.5 MiB), 1 errors, last: timeout",
        "serve: NOT running (last seen 7.5 s ago), pid 99, up 10 s, listening "
        "127.0.0.1:8080, url http://127.0.0.1:8080/",
        "  cache damage skipped by scroll-back: 2 blocks (50 records) in 1 files; last: "
        "motor/x.avro: bad sync ('speeddata verify' lists all)",
        "  refused: {'ws page_cap': 1}, batches that failed: 0",
        "  full group from relay at 10.0.0.7:4000 motor: sent 1000, lost 10 (1.0 %)",
        "  decimated group from rig2 at 10.0.0.7:4000 motor: sent 1000, lost 10 (1.0 %); "
        "last 10 s: 2 of 100, 3 sends failed at the sender",
    ]


def test_captures_show_each_channel_the_cache_and_the_tags() -> None:
    view = {
        "channels": {"motor": {"bytes": 3 * 2**20, "files": 2, "first_ns": T0,
                               "last_ns": T0 + 3600 * S + 999 * 10**6,
                               "growth_bytes_per_s": 2500.0}},
        "quota": 10 * 2**30, "bytes": 3 * 2**20, "growth_bytes_per_s": 2500.0,
        "hours_left": 12.5, "limit": "retention",
        "tags": [{"name": "run1", "start": "2023-11-14T22:20:00.000Z",
                  "end": "2023-11-14T22:30:00.000Z", "bytes": 2**20, "exported": None},
                 {"name": "run2", "start": "2023-11-14T22:40:00.000Z", "end": "open",
                  "bytes": 0, "exported": "2023-11-14T23:00:00.000Z",
                  "retention_reaches_hours": 3.0}],
    }
    assert captures_lines(view) == [
        "channel                MiB  files  from                 to                   "
        "       grows",
        "motor                  3.0      2  2023-11-14T22:13:20  2023-11-14T23:13:20  "
        "     2.5 kB/s",
        "cache 3.0 MiB of 10.00 GiB, growing 2.5 kB/s; retention starts deleting the oldest "
        "in about 12.5 h",
        "tag run1: 2023-11-14T22:20:00.000Z to 2023-11-14T22:30:00.000Z, 1.0 MiB, not "
        "exported (kept by retention)",
        "tag run2: 2023-11-14T22:40:00.000Z to open, 0.0 MiB, exported "
        "2023-11-14T23:00:00.000Z; retention reaches its cached data in about 3.0 h",
    ]


def test_captures_before_any_relay_ran_and_with_the_disk_filling_first() -> None:
    empty = {"channels": {}, "quota": 0, "bytes": 0, "growth_bytes_per_s": 0.0,
             "hours_left": None, "limit": "retention", "tags": []}
    assert captures_lines(empty)[1:] == [
        "cache 0.0 MiB of an unknown quota (no relay ran yet), growing 0.0 kB/s; "
        "retention is not in sight"]
    full = {**empty, "quota": 2**30, "hours_left": 2.0, "limit": "disk"}
    assert captures_lines(full)[1:] == [
        "cache 0.0 MiB of 1.00 GiB, growing 0.0 kB/s; the disk is full in about 2.0 h, "
        "before the quota is reached: free space or lower [cache] max_bytes"]


def test_tags_are_a_table_or_a_hint() -> None:
    assert tags_lines([]) == ["no tags yet: 'speeddata tag start NAME' marks from now on"]
    rows = [{"name": "run1", "start": "2023-11-14T22:20:00.000Z",
             "end": "2023-11-14T22:30:00.000Z", "bytes": 3 * 2**19, "channels": [],
             "exported": None, "origin": None, "note": "first light"},
            {"name": "run2", "start": "2023-11-14T22:40:00.000Z", "end": "open",
             "bytes": 0, "channels": ["motor", "env"], "exported": "2023-11-14T23:00:00.000Z",
             "origin": "rig2", "note": ""}]
    assert tags_lines(rows) == [
        "name                start                     end                            MiB  "
        "channels      exported                  made on         note",
        "run1                2023-11-14T22:20:00.000Z  2023-11-14T22:30:00.000Z       1.5  "
        "all           no                        this host       first light",
        "run2                2023-11-14T22:40:00.000Z  open                           0.0  "
        "motor,env     2023-11-14T23:00:00.000Z  rig2            ",
    ]


def test_a_status_file_that_is_not_its_snapshot_is_refused_by_field() -> None:
    import pytest

    from speeddata.snapshots import RelaySnapshot, SnapshotError

    for bad, where in (({**RELAY, "datagrams": "12000"}, "RelaySnapshot.datagrams"),
                       ({**RELAY, "channels": {"motor": {"datagrams": 1.5}}},
                        "RelaySnapshot.channels[motor].datagrams"),
                       ({**RELAY, "service": "toaster"}, "known service"),
                       ({k: v for k, v in RELAY.items() if k != "pid"}, "missing pid")):
        with pytest.raises(SnapshotError, match=where.replace("[", r"\[")):
            parse(bad)
    newer = parse({**RELAY, "a_counter_from_a_newer_relay": 3})  # left out, not refused
    assert isinstance(newer, RelaySnapshot) and newer.datagrams == 12000


def test_status_files_that_are_not_snapshots_are_left_out(tmp_path) -> None:
    from speeddata import status
    from speeddata.snapshots import Snapshot

    folder = status.directory(tmp_path)
    status.write(tmp_path, "relay", Snapshot("relay", 1, NOW / S, NOW / S))
    for name, text in (("list", "[1, 2]"), ("torn", '{"pid": 1'), ("pid", '{"pid": "x", '
                       '"written": 1}'), ("nan", '{"pid": 1, "written": "later"}'),
                       ("huge", '{"pid": 1e999, "written": 1}'), ("unknown", '{"service": '
                       '"relay", "pid": 1, "written": 1, "started": 1, "datagrams": "many"}')):
        (folder / f"{name}.json").write_text(text)
    assert set(status.read_all(tmp_path, NOW / S)) == {"relay", "unknown"}
    assert set(status.read(tmp_path, NOW / S)) == {"relay"}  # "unknown" is no RelaySnapshot


def test_a_measured_clock_reads_as_the_page_shows_it() -> None:
    from speeddata.cli.render import format_clock, format_loss
    from speeddata.snapshots import LossRow

    assert format_clock(3_200_000_000, 100_000) == "clock +3.2 s (± 0.1 ms)"
    assert format_clock(3_200_000_000, 100_001) == "clock +3.2 s (± 0.2 ms)"  # rounded up
    assert format_clock(-1_700_000_000, 12) == "clock -1.7 s (± 0.1 ms)"
    assert format_clock(-2_500_000, 2_000_000) == "clock -2.5 ms (± 2.0 ms)"
    assert format_clock(40_000, 3 * 10**9) == "clock +40 µs (± 3.0 s)"
    row = {"source": "10.0.0.5:4000", "channel": "motor", "sent": 10, "lost": 0,
           "lost_percent": 0.0, "recent_sent": 0, "recent_lost": 0,
           "clock_offset_ns": 3_200_000_000, "clock_uncertainty_ns": 80_000}
    assert format_loss(LossRow(**row)).endswith("(0.0 %), clock +3.2 s (± 0.1 ms)")


def test_the_relay_says_what_time_probes_it_answered_and_refused() -> None:
    snap = {**RELAY, "time_probes": {"answered": 12, "addresses": 1,
                                     "refused": {"rate": 280, "garbled": 0}}}
    lines = status_lines(seen(relay=snap), NOW)
    assert lines[-1] == "  time probes: 12 answered, refused {'rate': 280}"
    quiet = {**RELAY, "time_probes": {"answered": 0, "refused": {"rate": 0}}}
    assert not any("time probes" in line for line in status_lines(seen(relay=quiet), NOW))


def test_a_query_result_aligns_text_left_and_numbers_right() -> None:
    lines = result_lines(["state", "n", "mean"], [["IDLE", "RUNNING", None],
                                                  ["3", "40", "5"], ["1.5", None, "-2.25"]])
    assert lines == ["state    n   mean",
                     "-------  --  -----",
                     "IDLE      3    1.5",
                     "RUNNING  40",
                     "          5  -2.25"]
    assert result_lines(["x"], [[]]) == ["x", "-"]
