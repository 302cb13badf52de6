"""The relay as a real process: real sockets, real multicast on loopback, real files."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import avro.datafile
import avro.io
import fastavro

from speeddata import Sender, loss, multicast
from speeddata.schemas import load_file
from speeddata.sender import Encoder
from tests.helpers import (
    SCHEMAS,
    TIMEOUT,
    RelayProcess,
    relay_settings,
    start_relay,
    wait_until,
)

EXAMPLE = load_file(SCHEMAS / "example.avsc")


def example(i: int) -> dict:
    return {"time": 1_795_000_000_000_000_000 + i, "message": f"m{i}", "counter": i,
            "sine_wave": 0.5, "ramp": float(i), "square_wave": 1.0, "noise": 0.0}


def cached_counters(cache: Path, channel: str = "example") -> list[int]:
    """Counters of every cached record. While the relay writes, a reader can meet a
    block that is still being appended: what follows it counts as not there yet."""
    counters = []
    for path in sorted((cache / channel).glob("*.avro")):
        with path.open("rb") as f:
            try:
                for record in fastavro.reader(f):
                    counters.append(record["counter"])
            except (EOFError, ValueError, StopIteration, OSError):
                pass
    return counters


def test_sender_to_relay_to_cache_files_readable_by_both_libraries(relay: RelayProcess) -> None:
    with Sender(EXAMPLE, port=relay.port) as sender:
        for i in range(500):
            sender.send(example(i))
    wait_until(lambda: len(cached_counters(relay.cache_dir)) == 500, what="500 cached records")
    assert relay.stop() == 0  # SIGTERM: flush, fsync, close, exit 0
    assert sorted(cached_counters(relay.cache_dir)) == list(range(500))
    apache = []
    for path in sorted((relay.cache_dir / "example").glob("*.avro")):
        with avro.datafile.DataFileReader(path.open("rb"), avro.io.DatumReader()) as reader:
            apache += [r["counter"] for r in reader]
    assert sorted(apache) == list(range(500))
    assert "relay stopped: 500 datagrams" in relay.log()


def test_both_multicast_groups_receive(relay: RelayProcess) -> None:
    full = multicast.listener(relay.full, "127.0.0.1")
    decimated = multicast.listener(relay.decimated, "127.0.0.1")
    full.settimeout(TIMEOUT)
    decimated.settimeout(0.5)
    sent = []
    with Sender(EXAMPLE, port=relay.port) as sender:
        for i in range(200):
            datagram = sender.encoder.encode(example(i))
            sent.append(datagram)
            sender.send_datagram(datagram)
    got, reports = [], []
    while len(got) < 200:  # beside the data, once a second, what the relay forwarded
        datagram = full.recv(2048)
        (reports if datagram.startswith(loss.FORWARD_REPORT_HEADER) else got).append(datagram)
    assert sorted(got) == sorted(sent)  # every datagram, unchanged
    thinned = []
    try:
        while True:
            thinned.append(decimated.recv(2048))
    except TimeoutError:
        pass
    thinned = [d for d in thinned if not d.startswith(loss.FORWARD_REPORT_HEADER)]
    assert 1 <= len(thinned) < 200  # rate-limited (50/s default) and unchanged
    assert set(thinned) <= set(sent)
    full.close()
    decimated.close()


def test_legacy_bare_bodies_on_the_relay_port_are_cached(relay: RelayProcess,
                                                        udp: socket.socket) -> None:
    with Sender(EXAMPLE, port=relay.port) as sender:
        for i in range(20):
            udp.sendto(sender.encoder.encode(example(i))[10:], ("127.0.0.1", relay.port))
    wait_until(lambda: len(cached_counters(relay.cache_dir)) == 20, what="20 legacy records")


def test_bad_datagrams_are_counted_and_never_cached(relay: RelayProcess,
                                                    udp: socket.socket) -> None:
    bad = [b"", b"\xc3", b"hello world, not avro", b"\xc3\x01" + bytes(8) + b"body"]
    for datagram in bad:
        udp.sendto(datagram, ("127.0.0.1", relay.port))
    with Sender(EXAMPLE, port=relay.port) as sender:
        sender.send(example(1))
    wait_until(lambda: len(cached_counters(relay.cache_dir)) == 1, what="the good record")
    snap = wait_until(lambda: (s := relay.snapshot()) and sum(s["rejected"].values()) == 4 and s,
                      what="4 rejections in status")
    assert snap["rejected"]["bad_legacy_body"] >= 1  # on the legacy port, garbage is this
    assert cached_counters(relay.cache_dir) == [1]
    relay.stop()
    assert "rejected" in relay.log()


def test_kill_9_and_restart_loses_nothing_accepted(tmp_path: Path, io_path: str) -> None:
    settings = relay_settings(tmp_path, relay={"io": io_path})
    relay = start_relay(tmp_path, settings)
    with Sender(EXAMPLE, port=relay.port) as sender:
        for i in range(1000):
            sender.send(example(i))
        wait_until(lambda: len(cached_counters(relay.cache_dir)) == 1000, what="1000 records")
        # keep sending while the relay dies: whatever it had accepted must survive
        for i in range(1000, 1500):
            sender.send(example(i))
        relay.stop(signal.SIGKILL)
    [path] = (relay.cache_dir / "example").glob("*.avro")
    with path.open("ab") as f:
        f.write(b"\x10\x80\x01torn block")  # as if the kill came mid-write
    settings["relay"]["port"] = relay.port
    again = start_relay(tmp_path, settings)
    assert "repaired cache file" in again.log()
    with Sender(EXAMPLE, port=again.port) as sender:
        for i in range(2000, 2010):
            sender.send(example(i))
    wait_until(lambda: len([c for c in cached_counters(again.cache_dir) if c >= 2000]) == 10,
               what="records after the restart")
    assert again.stop() == 0
    counters = cached_counters(again.cache_dir)
    assert set(range(1000)) <= set(counters)
    assert len(counters) == len(set(counters))  # nothing duplicated or torn


def test_invalid_schema_is_reported_and_the_relay_serves_the_others(tmp_path: Path,
                                                                   io_path: str) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "example.avsc").write_text((SCHEMAS / "example.avsc").read_text())
    (schemas / "broken.avsc").write_text('{"type": "record", "name": "broken", "fields": [')
    relay = start_relay(tmp_path, relay_settings(tmp_path, channels={"dir": str(schemas)},
                                                 relay={"io": io_path}))
    with Sender(EXAMPLE, port=relay.port) as sender:
        sender.send(example(7))
    wait_until(lambda: cached_counters(relay.cache_dir) == [7], what="record on the good channel")
    relay.stop()
    assert "broken.avsc: not valid JSON" in relay.log()
    assert f"io {io_path}" in relay.log()  # the path under test is the one that ran


def test_bad_config_stops_at_start_with_the_key_named(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text("[relay]\nprot = 1\n")
    result = subprocess.run([sys.executable, "-m", "speeddata", "relay", "--config", str(bad)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert "unknown key [relay] prot" in result.stderr


def test_rollover_under_a_running_relay_keeps_every_record(tmp_path: Path, io_path: str) -> None:
    relay = start_relay(tmp_path, relay_settings(tmp_path, cache={"rotate_bytes": 4000},
                                                 relay={"io": io_path}))
    with Sender(EXAMPLE, port=relay.port) as sender:
        # three bursts, each cached before the next: at least three blocks of 4.6 kB, so
        # the second and third roll over (one burst of 300 could come as two batches,
        # the first under 4000 bytes: one file, whose size was checked before the second)
        for burst in range(3):
            for i in range(burst * 100, burst * 100 + 100):
                sender.send(example(i))
            wait_until(lambda n=burst * 100 + 100: len(cached_counters(relay.cache_dir)) == n,
                       what=f"{burst * 100 + 100} records")
    relay.stop()
    assert len(list((relay.cache_dir / "example").glob("*.avro"))) > 1
    assert sorted(cached_counters(relay.cache_dir)) == list(range(300))


def test_only_allowed_hosts_are_cached(tmp_path: Path, io_path: str) -> None:
    """[relay] allow: datagrams from 127.0.0.2 are cached, from 127.0.0.1 rejected."""
    relay = start_relay(tmp_path, relay_settings(
        tmp_path, relay={"io": io_path, "allow": ["127.0.0.2/32"]}))
    try:
        encode = Encoder(EXAMPLE).encode
        for source, first in (("127.0.0.1", 0), ("127.0.0.2", 100)):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((source, 0))
                for i in range(first, first + 50):
                    sock.sendto(encode(example(i)), ("127.0.0.1", relay.port))
        wait_until(lambda: relay.snapshot().get("rejected", {}).get("not_allowed") == 50
                   and len(cached_counters(relay.cache_dir)) == 50, what="50 cached, 50 refused")
        assert sorted(cached_counters(relay.cache_dir)) == list(range(100, 150))
        assert "127.0.0.1" in relay.snapshot()["last_rejection"]["not_allowed"]
    finally:
        relay.stop()
