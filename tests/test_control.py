"""The control plane's protocol: sealed messages, the replay window, validated tag
records, convergence of stores by version and tombstone, and the key file."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest

from speeddata import control
from speeddata.errors import ConfigError, ControlError
from speeddata.tagrecord import TagRecord, parse_record
from speeddata.tags import DB_NAME, TagStore

S = 10**9
T0 = 1_795_000_000 * S
KEY = b"k" * 32


def sealed(body: dict, now_ns: int = T0, nonce: bytes = b"n" * 16, key: bytes = KEY) -> bytes:
    return control.seal(key, body, now_ns, nonce)


def reason(opener: control.Opener, datagram: bytes, now_ns: int = T0) -> str:
    with pytest.raises(ControlError) as refused:
        control.parse(opener.open(datagram, now_ns))
    return refused.value.reason


def test_only_fresh_first_seen_messages_sealed_with_the_key_are_opened() -> None:
    opener = control.Opener(KEY, window_seconds=30)
    body = {"kind": "tag", "action": "delete", "name": "run42", "changed_ns": T0,
            "origin": "a"}
    assert opener.open(sealed(body), T0) == body
    assert reason(opener, sealed(body), T0 + S) == "replayed"  # the same datagram again
    forged = sealed(body, nonce=b"f" * 16, key=b"x" * 32)  # a forged delete, without the key
    assert reason(opener, forged) == "bad_mac"
    tampered = bytearray(sealed(body, nonce=b"t" * 16))
    tampered[30] ^= 1
    assert reason(opener, bytes(tampered)) == "bad_mac"
    assert reason(opener, sealed(body, T0 - 31 * S, b"o" * 16)) == "stale"
    assert reason(opener, sealed(body, T0 + 31 * S, b"p" * 16)) == "stale"
    assert reason(opener, b"SDTAG" + json.dumps(body).encode()) == "bad_marker"
    assert reason(opener, control.MARKER + b"short") == "malformed"
    assert reason(opener, b"SDCTL1" + b"x" * 70000) == "too_long"
    assert reason(opener, sealed({"kind": "what"}, nonce=b"w" * 16)) == "unknown_kind"
    raw = control.MARKER + control._HEAD.pack(T0, b"j" * 16) + b"[" * 50000
    deep = raw + __import__("hmac").new(KEY, raw, "sha256").digest()
    assert reason(opener, deep) == "malformed"  # nesting never raises RecursionError


def test_the_replay_window_is_bounded_and_forgets_what_would_be_stale() -> None:
    window = control.ReplayWindow(10 * S, capacity=3)
    assert [window.admit(bytes([i]), T0, T0) for i in range(3)] == [None] * 3
    assert window.admit(b"\x09", T0, T0) == "busy" and window.admit(b"\x00", T0, T0) == "replayed"
    assert window.admit(b"\x09", T0 + 11 * S, T0 + 11 * S) is None and len(window) == 1


BASE = {"kind": "tag", "action": "add", "name": "x", "changed_ns": T0, "origin": "a",
        "start_ns": T0, "end_ns": None, "note": "", "channels": [], "created_ns": T0}


@pytest.mark.parametrize(("change", "why"), [
    ({"start_ns": float("inf")}, "bad_type"),   # Infinity crashed every relay
    ({"created_ns": 10**30}, "bad_time"),       # so did an int64 overflow
    ({"end_ns": "soon"}, "bad_type"),           # a text end_ns broke /api/tags and retention
    ({"end_ns": True}, "bad_type"),
    ({"start_ns": 1.0 * T0}, "bad_type"),
    ({"start_ns": -1}, "bad_time"),
    ({"end_ns": T0 - 1}, "end_before_start"),
    ({"action": "drop"}, "unknown_action"),
    ({"name": "../etc"}, "bad_name"),
    ({"note": "n" * 4097}, "too_long"),
    ({"channels": ["motor"] * 257}, "bad_channels"),
    ({"channels": "motor"}, "bad_channels"),
    ({"channels": [1]}, "bad_channels"),
    ({"origin": 5}, "too_long"),
])
def test_a_tag_message_with_a_bad_field_is_refused_by_reason(change: dict, why: str) -> None:
    with pytest.raises(ControlError) as refused:
        parse_record({**BASE, **change})
    assert refused.value.reason == why


def test_the_largest_record_fits_one_datagram() -> None:
    record = TagRecord("add", "n" * 128, T0, "h" * 255, T0, T0, "é" * 4096,
                       tuple(f"c{i:0127d}" for i in range(256)), T0)
    assert len(sealed(record.as_message())) < control.MAX_MESSAGE
    assert parse_record(json.loads(json.dumps(record.as_message()))) == record


def test_stores_converge_deletes_included_whatever_the_order(tmp_path: Path) -> None:
    """Host a makes, stops, deletes and re-makes tags while host b is away; b hears the
    records in any order, stale re-announces included, and ends with a's set."""
    heard: list[TagRecord] = []
    a = TagStore(tmp_path / "a", heard.append)
    b = TagStore(tmp_path / "b")
    a.add("kept", T0, None, now_ns=T0)
    b.apply(heard[0], T0)  # b heard the first one before it went away
    stale = heard[0]
    a.stop("kept", T0 + 5 * S)
    a.add("gone", T0, T0 + S, now_ns=T0)
    a.delete("gone")
    a.add("again", T0, None, now_ns=T0)
    a.delete("again")
    a.add("again", T0 + S, None, now_ns=T0 + 2 * S)  # re-made after its delete
    for record in reversed(a.records()):
        b.apply(record, T0)
    assert b.apply(stale, T0) == "older"  # a peer's stale re-announce changes nothing
    assert b.digest() == a.digest()
    assert {t.name: t.end_ns for t in b.list()} == {"kept": T0 + 5 * S, "again": None}
    assert b.apply(heard[2], T0) == "older"  # the old add of 'gone' stays deleted
    assert [b.apply(r, T0) for r in a.records()] == ["known"] * 3


def test_a_conflict_ends_the_same_everywhere(tmp_path: Path) -> None:
    one = TagRecord("add", "x", T0, "a", T0, None, "", (), T0)
    two = TagRecord("add", "x", T0, "b", T0 + S, None, "", (), T0)
    first, second = TagStore(tmp_path / "1"), TagStore(tmp_path / "2")
    first.apply_many([one, two], T0)
    second.apply_many([two, one], T0)
    assert first.digest() == second.digest()


def test_sync_announces_its_digest_and_reannounces_on_a_mismatch_at_a_bounded_rate() -> None:
    sync = control.Sync(100.0, digest_seconds=2, resync_seconds=4)
    assert sync.digest_due(100.0) and not sync.digest_due(101.0) and sync.digest_due(102.0)
    peer = control.Digest("0" * 64, 1, "peer")
    sync.heard(control.Digest("1" * 64, 1, "p"), "1" * 64)
    assert not sync.resync_due(102.0)  # equal digests: nothing to do
    sync.heard(peer, "1" * 64)
    assert sync.resync_due(102.0) and not sync.resync_due(102.5)
    sync.heard(peer, "1" * 64)
    assert sync.timeout(103.0) == 1.0 and not sync.resync_due(105.9) and sync.resync_due(106.0)


def test_the_budget_bounds_the_work_of_a_second() -> None:
    budget = control.Budget(1000, 256, 0.0)
    assert budget.take(300_000, 0.0) == 256 and budget.take(10, 0.0) == 0
    assert budget.wait(0.0) == pytest.approx(0.001)
    assert budget.take(300_000, 0.1) == 100


def test_a_bad_row_already_stored_is_repaired_and_never_raises(tmp_path: Path) -> None:
    store = TagStore(tmp_path)
    store.add("good", T0, T0 + S, now_ns=T0)
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as db, db:
        db.execute("INSERT INTO tags (name, start_ns, end_ns, created_ns) "
                   "VALUES ('bad', ?, 'soon', ?)", (T0, T0))
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as db:  # read before any repair
        assert db.execute("SELECT typeof(end_ns) FROM tags WHERE name='bad'").fetchone() == (
            "text",)
    assert (T0, 2**63 - 1) in store.protected_ranges()  # protects more, never less
    repaired = TagStore(tmp_path)
    assert {t.name: t.end_ns for t in repaired.list()} == {"good": T0 + S, "bad": None}
    assert repaired.get("bad").start_ns == T0


def test_the_key_is_made_once_owner_only_and_a_short_one_is_an_error(tmp_path: Path) -> None:
    key = control.load_key("", tmp_path)
    assert len(key) == 64 and control.load_key("", tmp_path) == key
    assert stat.S_IMODE(os.stat(tmp_path / control.KEY_FILE).st_mode) == 0o600
    assert control.load_key("s" * 40, tmp_path) == b"s" * 40
    (tmp_path / control.KEY_FILE).write_text("\n")
    with pytest.raises(ConfigError, match="fewer than 32"):
        control.load_key("", tmp_path)
