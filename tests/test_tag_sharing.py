"""Tags shared by every relay: messages on the control group, applied idempotently."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from speeddata.config import write_file
from speeddata import control
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
