"""Tags shared by every relay: messages on the control group, applied idempotently."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from speeddata import control
from speeddata.config import write_file
from speeddata.tagrecord import parse_record
from speeddata.tags import DB_NAME, TagStore
from tests.helpers import relay_settings, start_relay, wait_until

S = 10**9
T0 = 1_795_000_000 * S
KEY = "test-control-key-" + "0" * 32  # every host of a test deployment has it


def test_a_change_is_announced_and_applying_it_elsewhere_is_idempotent(tmp_path: Path
                                                                       ) -> None:
    heard = []
    here = TagStore(tmp_path / "here", heard.append)
    there = TagStore(tmp_path / "there")  # a relay on another host: applies, never announces
    here.add("run42", T0, None, "cold start", ("motor",), T0)
    here.stop("run42", T0 + 60 * S)
    assert [m.action for m in heard] == ["add", "stop"]
    opener = control.Opener(KEY.encode())
    wire = [control.parse(opener.open(control.seal(KEY.encode(), m.as_message(), T0,
                                                   bytes([i]) * 16), T0))
            for i, m in enumerate(heard)]  # through the datagram form
    assert wire == heard
    assert [there.apply(m, T0 + S) for m in wire] == ["added", "stopped"]
    assert [there.apply(m, T0 + 2 * S) for m in wire] == ["older", "known"]  # repeats
    tag = there.get("run42")
    assert (tag.start_ns, tag.end_ns, tag.note, tag.channels) == (T0, T0 + 60 * S,
                                                                  "cold start", ("motor",))
    assert tag.origin == heard[0].origin and tag.received_ns == T0 + S
    assert tag.as_dict()["origin"] == heard[0].origin
    here.delete("run42")
    assert there.apply(heard[-1], T0) == "deleted" and there.list() == []
    assert there.apply(heard[-1], T0) == "known"
    assert there.apply(heard[0], T0) == "older"  # a stale add never undoes the delete


def test_a_store_from_before_sharing_is_upgraded_in_place(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as db, db:
        db.execute("CREATE TABLE tags (name TEXT PRIMARY KEY, start_ns INTEGER NOT NULL, "
                   "end_ns INTEGER, note TEXT NOT NULL DEFAULT '', channels TEXT NOT NULL "
                   "DEFAULT '[]', created_ns INTEGER NOT NULL, exported_ns INTEGER)")
        db.execute("INSERT INTO tags VALUES ('old', 1, 2, '', '[]', 3, NULL)")
    tag = TagStore(tmp_path).get("old")
    assert (tag.start_ns, tag.end_ns, tag.origin, tag.received_ns) == (1, 2, "", None)


@pytest.mark.e2e
def test_a_tag_made_on_one_host_is_listed_by_every_relay(tmp_path: Path) -> None:
    """Two relays with their own caches and one control group; the tag is made by the
    command line with a third cache directory (a viewer host): all three list it."""
    first = relay_settings(tmp_path / "a")
    shared = {"control": first["multicast"]["control"], "control_key": KEY}
    first["multicast"].update(shared)
    second = relay_settings(tmp_path / "b", multicast=shared)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    relays = [start_relay(tmp_path / "a", first), start_relay(tmp_path / "b", second)]
    viewer = relay_settings(tmp_path / "v", multicast=shared)
    config = write_file(tmp_path / "viewer.toml", viewer)
    try:
        for args in (["tag", "start", "shared"], ["tag", "stop", "shared"]):
            done = subprocess.run([sys.executable, "-m", "speeddata", *args, "--config",
                                   str(config)], capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
        mine = TagStore(Path(viewer["cache"]["dir"])).get("shared")

        def everywhere() -> bool:
            stores = [TagStore(r.cache_dir) for r in relays]
            tags = [s.get("shared") for s in stores if "shared" in {t.name for t in s.list()}]
            return len(tags) == 2 and all(
                (t.start_ns, t.end_ns) == (mine.start_ns, mine.end_ns) for t in tags)

        wait_until(everywhere, what="the tag, started and stopped, at both relays")
        listed = subprocess.run([sys.executable, "-m", "speeddata", "tags", "--config",
                                 str(relays[1].config_path)], capture_output=True, text=True)
        assert "shared" in listed.stdout
        assert "tag shared from" in relays[0].log() and ": added" in relays[0].log()
        subprocess.run([sys.executable, "-m", "speeddata", "untag", "shared", "--config",
                        str(config)], check=True, capture_output=True)
        wait_until(lambda: all(TagStore(r.cache_dir).list() == [] for r in relays),
                   what="the tag deleted at both relays")
    finally:
        for relay in relays:
            relay.stop()


def _cli(config: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "speeddata", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.e2e
def test_a_relay_down_while_tags_are_made_deleted_and_remade_catches_up(tmp_path: Path
                                                                        ) -> None:
    first = relay_settings(tmp_path / "a")
    shared = {"control": first["multicast"]["control"], "control_key": KEY}
    first["multicast"].update(shared)
    second = relay_settings(tmp_path / "b", multicast=shared)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    a = start_relay(tmp_path / "a", first)
    b = start_relay(tmp_path / "b", second)
    try:
        _cli(a.config_path, "tag", "start", "early")
        wait_until(lambda: TagStore(b.cache_dir).find("early"), what="'early' at b")
        b.stop()
        _cli(a.config_path, "tag", "stop", "early")
        _cli(a.config_path, "tag", "start", "gone")
        _cli(a.config_path, "untag", "gone")
        _cli(a.config_path, "tag", "start", "again")
        _cli(a.config_path, "untag", "again")
        _cli(a.config_path, "tag", "start", "again")
        _cli(a.config_path, "untag", "early")
        _cli(a.config_path, "tag", "start", "early")  # made again: not the old one
        b = start_relay(tmp_path / "b", second)
        wait_until(lambda: TagStore(b.cache_dir).digest() == TagStore(a.cache_dir).digest(),
                   timeout=10, what="b's tag set equal to a's within 10 s of its restart")
        names = {t.name: t.end_ns for t in TagStore(b.cache_dir).list()}
        assert names == {"early": None, "again": None}
        wait_until(lambda: (b.snapshot().get("control") or {}).get("added"),
                   what="b's status counting what it added")
    finally:
        a.stop()
        b.stop()


@pytest.mark.e2e
def test_forged_replayed_and_flooded_control_messages_change_nothing(tmp_path: Path) -> None:
    """Without the key, a delete does not delete; a valid message sent again is refused;
    a flood of 100,000 datagrams leaves the relay running and its data cached."""
    from speeddata import Sender, multicast
    from speeddata.configvalues import parse_group
    from tests.relay.test_relay_process import cached_counters

    settings = relay_settings(tmp_path, multicast={"control_key": KEY})
    relay = start_relay(tmp_path, settings)
    group = parse_group(settings["multicast"]["control"])
    out = multicast.sender("127.0.0.1", 1)
    out.setblocking(True)
    try:
        _cli(relay.config_path, "tag", "start", "keep")
        store = TagStore(relay.cache_dir)
        record = parse_record({**store.records()[0].as_message()})
        delete = {"kind": "tag", "action": "delete", "name": "keep",
                  "changed_ns": record.changed_ns + S, "origin": "evil"}
        import time

        now = time.time_ns()
        forged = control.seal(b"not the key, but long enough...!", delete, now, b"f" * 16)
        legacy = b"SDTAG" + json.dumps({**delete, "start_ns": float("inf")}).encode()
        valid = control.seal(KEY.encode(), record.as_message(), now, b"v" * 16)
        for datagram in (forged, legacy, valid, valid):
            out.sendto(datagram, (group.host, group.port))
        wait_until(lambda: relay.snapshot()["control"]["refused"].get("replayed"),
                   what="the second copy refused as replayed")
        with Sender("example", port=relay.port) as sender:
            for i in range(2000):
                if i % 20 == 0:
                    for _ in range(1000):
                        out.sendto(forged, (group.host, group.port))
                sender.send({"time": time.time_ns(), "message": "m", "counter": i,
                             "sine_wave": 0.0, "ramp": 0.0, "square_wave": 0.0, "noise": 0.0})
        wait_until(lambda: max(cached_counters(relay.cache_dir), default=-1) == 1999,
                   what="every data datagram cached")
        assert sorted(cached_counters(relay.cache_dir)) == list(range(2000))
        stats = relay.snapshot()["control"]
        assert stats["refused"]["bad_mac"] >= 1 and stats["refused"]["bad_marker"] == 1
        assert relay.process.poll() is None and TagStore(relay.cache_dir).find("keep")
        assert stats.get("deleted", 0) == 0
    finally:
        out.close()
        relay.stop()
