"""What speeddata survives, measured from the outside: the reliability scenarios.

Each scenario runs the real processes on loopback (relay, stripchart server, load
generators in processes of their own), does something hostile or unlucky to them, and
returns a ``Row`` of figures: sent, accepted, lost, counted, memory before and after,
and whether everything survived. The e2e tests in ``tests/reliability/`` run them small
and assert on the rows; ``benchmarks/reliability.py`` runs them at full size and prints
the table that the README shows.
"""

from __future__ import annotations

import base64
import io
import json
import multiprocessing
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from speeddata import multicast, status, wire
from speeddata.bench import services
from speeddata.config import Config, Group, build, write_file
from speeddata.schemas import copy_demo_channels

MARK = -1234.5  # the temperature of every numbered valid motor record
T0 = 1_763_000_000_000_000_000  # 2025-11-13: the time of valid record 0
STOPPED = (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a graceful shutdown


@dataclass
class Row:
    """One scenario's figures (``details`` has the scenario's own)."""

    scenario: str
    sent: int = 0
    accepted: int = 0
    lost: int = 0
    counted: int = 0
    rss_before: int = 0
    rss_after: int = 0
    survived: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "details": dict(self.details)}


# -- set-up -----------------------------------------------------------------------------


def demo_schemas(work: Path) -> Path:
    """The demo channels (motor, env, example) in ``work/schemas``."""
    return copy_demo_channels(work / "schemas")


def settings(work: Path, **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A relay and server of their own (ports, groups), the demo channels, and
    ``example`` taking bare bodies on the relay port as in the default configuration."""
    values = services.default_settings(work, demo_schemas(work))
    values["channels"]["legacy"] = ["example"]
    values["cache"]["fsync_seconds"] = 0.5
    values["exports"] = {"dir": str(work / "exports")}
    for section, items in extra.items():
        values.setdefault(section, {}).update(items)
    return values


def launch(name: str, config: Path, work: Path) -> subprocess.Popen:
    """Start ``speeddata NAME`` without waiting for it (a full disk has no status file)."""
    log = (work / f"{name}.log").open("a")
    return subprocess.Popen([sys.executable, "-m", "speeddata", name, "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)


def snapshot(cache: Path, name: str = "relay", newer_than: float = 0.0,
             timeout: float = 30.0) -> dict[str, Any]:
    """A service's status, written after ``newer_than`` (time.time())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = status.read_all(cache).get(name, {})
        if snap.get("running") and snap.get("written", 0) > newer_than:
            return snap
        time.sleep(0.05)
    raise RuntimeError(f"{name} wrote no status for {timeout:.0f} s")


def motor_encoder(schemas: Path) -> Callable[[int], bytes]:
    """Numbered valid motor datagrams: speed = the number, temperature = MARK."""
    from speeddata.schemas import load_file
    from speeddata.sender import Encoder

    encoder = Encoder(load_file(schemas / "motor.avsc"))

    def encode(i: int) -> bytes:
        return encoder.encode({"time": T0 + i, "speed": float(i), "torque": 0.0,
                               "current": 0.0, "voltage": 48.0, "position": 0.0,
                               "temperature": MARK})

    return encode


def numbered(records: Iterator[dict[str, Any]]) -> list[int]:
    """The numbers of the valid motor records among ``records``."""
    return [int(r["speed"]) for r in records if r.get("temperature") == MARK]


def read_cache(cache: Path) -> dict[str, Any]:
    """Every cache file read with fastavro and with Apache Avro (when installed)."""
    files = sorted(cache.glob("*/*.avro"))
    records: dict[str, list[dict[str, Any]]] = {}
    unreadable = []
    apache_counts = 0
    try:
        import avro.datafile
        import avro.io
    except ImportError:  # the benchmark without the test tools: fastavro only
        avro = None  # type: ignore[assignment]
    for path in files:
        try:
            with path.open("rb") as f:
                got = list(fastavro.reader(f))
            if avro is not None:
                with path.open("rb") as f, avro.datafile.DataFileReader(
                        f, avro.io.DatumReader()) as reader:
                    apache = sum(1 for _ in reader)
                if apache != len(got):
                    raise ValueError(f"Apache Avro read {apache} records, fastavro {len(got)}")
                apache_counts += apache
        except Exception as exc:
            unreadable.append(f"{path.name}: {exc}")
            continue
        records.setdefault(path.parent.name, []).extend(got)
    return {"files": len(files), "unreadable": unreadable, "records": records,
            "apache_checked": avro is not None}


class Listener:
    """Counts (and keeps) what a multicast group carries, in a thread."""

    def __init__(self, group: Group) -> None:
        self.sock = multicast.listener(group, "127.0.0.1", rcvbuf=32 * 2**20)
        self.sock.settimeout(0.2)
        self.datagrams: list[bytes] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                self.datagrams.append(self.sock.recv(65535))
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()

    def motor_numbers(self, schemas: Path) -> list[int]:
        from speeddata.schemas import load_file

        motor = load_file(schemas / "motor.avsc")
        head = wire.header(motor.fingerprint)
        out = []
        for d in list(self.datagrams):
            if d[:10] == head:
                with suppress(Exception):
                    out.extend(numbered([fastavro.schemaless_reader(
                        io.BytesIO(d[10:]), motor.parsed, None)]))
        return out


def paced(send: Callable[[int], None], rate: float, seconds: float, first: int = 0,
          stop: Callable[[], bool] = lambda: False) -> int:
    """Call ``send(i)`` for i = first, first+1, ... at ``rate`` a second; returns count."""
    start = time.monotonic()
    i = 0
    while (elapsed := time.monotonic() - start) < seconds and not stop():
        due = int(elapsed * rate) + 1
        while i < due:
            send(first + i)
            i += 1
        time.sleep(0.001)
    return i


def sender_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 2**20)
    return sock


# -- hostile datagrams ------------------------------------------------------------------


class Hostile:
    """Hostile datagrams for the relay's port, and the oracle that says which of them
    a correct relay accepts (fastavro: the datagram decodes to exactly one valid record
    of a known channel, or, without a known header, of the legacy channel)."""

    KINDS = ("random", "truncated", "extended", "garbled", "random_body", "legacy",
             "unknown")

    def __init__(self, schemas: Path, seed: int, max_datagram: int = 16384) -> None:
        from speeddata.schemas import Registry

        self.rng = random.Random(seed)
        self.registry, _ = Registry.load_dir(schemas)
        self.max_datagram = max_datagram
        self.legacy = self.registry["example"]
        motor, env = self.registry["motor"], self.registry["env"]
        self.samples = [self._datagram(c) for c in (motor, env) for _ in range(64)]
        self.legacy_bodies = [self._datagram(self.legacy)[10:] for _ in range(64)]

    def _datagram(self, channel: Any) -> bytes:
        rng = self.rng
        record = {}
        for f in channel.schema["fields"]:
            kind = f["type"] if isinstance(f["type"], str) else f["type"]["type"]
            record[f["name"]] = {
                "long": lambda: rng.randrange(2**62), "double": lambda: rng.uniform(-1e6, 1e6),
                "float": lambda: rng.uniform(-1e3, 1e3), "string": lambda: "é" * rng.randrange(9),
                "enum": lambda f=f: rng.choice(f["type"]["symbols"])}[kind]()
        body = io.BytesIO()
        fastavro.schemaless_writer(body, channel.parsed, record)
        return wire.header(channel.fingerprint) + body.getvalue()

    def make(self) -> tuple[str, bytes]:
        rng = self.rng
        kind = rng.choice(self.KINDS)
        sample = rng.choice(self.samples)
        if kind == "random":
            size = rng.choice((rng.randrange(65), rng.randrange(65, 2000),
                               rng.randrange(2000, 65508)))
            return kind, rng.randbytes(size)
        if kind == "truncated":
            return kind, sample[: 10 + rng.randrange(len(sample) - 10)]
        if kind == "extended":
            return kind, sample + rng.randbytes(rng.randrange(1, 21))
        if kind == "garbled":
            data = bytearray(sample)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(10, len(data))] = rng.randrange(256)
            return kind, bytes(data)
        if kind == "random_body":
            return kind, sample[:10] + rng.randbytes(rng.randrange(121))
        if kind == "legacy":
            body = rng.choice(self.legacy_bodies)
            return kind, rng.choice((rng.randbytes(rng.randrange(101)),
                                     body[: rng.randrange(len(body))],
                                     body + rng.randbytes(rng.randrange(1, 9))))
        return kind, b"\xc3\x01" + rng.randbytes(8 + rng.randrange(80))

    def accepted(self, datagram: bytes) -> bool:
        """The oracle, independent of the relay's own check."""
        if len(datagram) > self.max_datagram:
            return False
        channel = self.registry.by_fingerprint(datagram[2:10]) if (
            datagram[:2] == wire.MARKER and len(datagram) >= 10) else None
        if channel is not None:
            return _decodes_exactly(channel.parsed, datagram[10:])
        return _decodes_exactly(self.legacy.parsed, datagram)


def _decodes_exactly(schema: Any, body: bytes) -> bool:
    """fastavro reads one valid record ending on the last byte, and every enum index is
    in range (fastavro takes a negative index as Python does, from the end: its enum
    fields are read again as the ints they are on the wire)."""
    stream = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(stream, schema, None)
    except Exception:
        return False
    if stream.tell() != len(body) or not fastavro.validation.validate(
            record, schema, raise_errors=False):
        return False
    enums = {f["name"]: len(f["type"]["symbols"]) for f in schema["fields"]
             if isinstance(f["type"], dict) and f["type"].get("type") == "enum"}
    if not enums:
        return True
    as_ints = fastavro.parse_schema({**schema, "name": schema["name"] + "_ints", "fields": [
        {**f, "type": "int"} if f["name"] in enums else f for f in schema["fields"]]},
        _write_hint=False)
    indexes = fastavro.schemaless_reader(io.BytesIO(body), as_ints, None)
    return all(0 <= indexes[name] < count for name, count in enums.items())


def _fuzz_sender(schemas: Path, port: int, hostile: int, valid: int, rate: float, seed: int,
                 conn: Any) -> None:
    """The load of ``fuzz_relay``, in a process of its own."""
    source = Hostile(schemas, seed)
    encode = motor_encoder(schemas)
    sock = sender_socket()
    total = hostile + valid
    every = max(1, total // max(valid, 1))
    counts = dict.fromkeys(Hostile.KINDS, 0)
    acceptable = sent_valid = send_errors = 0
    start = time.monotonic()
    for i in range(total):
        if (i % every == every - 1 and sent_valid < valid) or total - i <= valid - sent_valid:
            datagram = encode(sent_valid)
            sent_valid += 1
        else:
            kind, datagram = source.make()
            counts[kind] += 1
            acceptable += source.accepted(datagram)
        try:
            sock.sendto(datagram, ("127.0.0.1", port))
        except OSError:
            send_errors += 1
        if i % 256 == 255:
            ahead = start + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    conn.send({"sent": total - send_errors, "valid": sent_valid, "acceptable": acceptable,
               "kinds": counts, "send_errors": send_errors,
               "seconds": time.monotonic() - start})


# -- scenarios --------------------------------------------------------------------------


def fuzz_relay(work: Path, hostile: int = 1_000_000, valid: int = 10_000,
               rate: float = 40_000, seed: int = 1) -> Row:
    """Hostile datagrams with numbered valid ones among them: every valid one is cached,
    no hostile one is unless it is a well-formed record (the oracle counts those), every
    cache file reads with fastavro and Apache Avro, and the relay never stops."""
    config = write_file(work / "relay.toml", settings(work))
    cfg = build(config)
    relay = services.start("relay", config, work)
    before = services.rss_bytes(relay.process.pid)
    port = cfg.relay.port
    receiver, sender = multiprocessing.get_context("spawn").Pipe(duplex=False)
    load = multiprocessing.get_context("spawn").Process(
        target=_fuzz_sender, args=(cfg.channels.dir, port, hostile, valid, rate, seed, sender))
    load.start()
    result = receiver.recv()
    load.join()
    sent = result["sent"]
    deadline = time.monotonic() + 60
    while True:  # until the relay has taken (or counted as dropped) all that was sent
        snap = snapshot(cfg.cache.dir, newer_than=time.time())
        if snap["datagrams"] + snap["kernel_drops"] >= sent or time.monotonic() > deadline:
            break
    after = services.rss_bytes(relay.process.pid)
    relay.stop()
    cache = read_cache(cfg.cache.dir)
    found = numbered(cache["records"].get("motor", []))
    records = sum(len(r) for r in cache["records"].values())
    rejected = sum(snap["rejected"].values())
    missing = valid - len(set(found) & set(range(valid)))
    unexpected = records - len(found) - result["acceptable"]
    return Row(
        "fuzz: relay", sent=sent, accepted=records, lost=missing,
        counted=rejected + snap["kernel_drops"], rss_before=before, rss_after=after,
        survived=(relay.process.returncode == 0 and not cache["unreadable"]
                  and unexpected == 0 and missing == 0),
        details={"valid": valid, "hostile": hostile, "hostile_well_formed": result["acceptable"],
                 "unexpected_records": unexpected, "rejected": snap["rejected"],
                 "kernel_drops": snap["kernel_drops"], "files": cache["files"],
                 "unreadable": cache["unreadable"], "apache_checked": cache["apache_checked"],
                 "kinds": result["kinds"], "send_seconds": round(result["seconds"], 1),
                 "accounted": records + rejected + snap["kernel_drops"] == sent})


class Forger:
    """Forged and malformed reserved messages, as a host on the LAN without the key makes
    them: control messages (the old unsealed form, sealed with another key, cut short,
    garbled, a captured genuine one replayed), sender reports for the relay port, and
    forward reports and replay notices for the full-rate group (the server's feed)."""

    KINDS = ("control_legacy", "control_wrong_key", "control_short", "control_garbled",
             "control_replayed", "sender_report", "forward_report", "replay_notice")

    def __init__(self, seed: int, captured: bytes, real_relay_name: str,
                 channel: bytes) -> None:
        from speeddata import control, loss

        self.rng = rng = random.Random(seed)
        now = time.time_ns()
        other_key = rng.randbytes(32)
        tag = {"kind": "tag", "action": "delete", "name": "genuine", "changed_ns": now + 10**12}
        infinite = ['{"action":"add","name":"x","start_ns":Infinity,"end_ns":null}',
                    '{"action":"delete","name":"genuine","created_ns":1e30}',
                    '{"kind":"tag","action":"add","name":"' + "x" * 5000 + '"}']
        self.pools: dict[str, list[bytes]] = {
            "control_legacy": [b"SDTAG" + t.encode() for t in infinite],
            "control_wrong_key": [control.seal(other_key, {**tag, "changed_ns": now + i},
                                               now, rng.randbytes(16)) for i in range(64)],
            "control_short": [control.MARKER + rng.randbytes(rng.randrange(60))
                              for _ in range(64)],
            "control_garbled": [],
            "control_replayed": [captured],
            "sender_report": [],
            "forward_report": [],
            "replay_notice": [b"SDREPLAY" + t.encode() for t in (
                '{"channels":[],"first_ns":Infinity,"wall_ns":0,"speed":1}',
                '{"channels":[],"first_ns":0,"wall_ns":0,"speed":Infinity}',
                '{"channels":[],"first_ns":0,"wall_ns":0,"speed":true}',
                '{"channels":["zz"],"first_ns":1e30,"wall_ns":0}', "[" * 10000, "null",
                '{"channels":' + json.dumps(["00" * 8] * 5000) + "}")]}
        for _ in range(64):
            garbled = bytearray(captured)
            garbled[rng.randrange(len(garbled))] ^= 1 << rng.randrange(8)
            self.pools["control_garbled"].append(bytes(garbled))
            fp = rng.choice((channel, rng.randbytes(8)))  # the real channel's, or none
            self.pools["sender_report"] += [
                loss.sender_report(now, rng.getrandbits(63), fp, 2**63 - 1, 2**62),
                loss.SENDER_REPORT_HEADER + rng.randbytes(rng.randrange(200))]
            self.pools["forward_report"] += [
                *loss.forward_reports(now, rng.getrandbits(63), real_relay_name,
                                      {fp: 2**63 - 1}),
                loss.FORWARD_REPORT_HEADER + rng.randbytes(rng.randrange(200))]

    def make(self) -> tuple[str, bytes]:
        kind = self.rng.choice(self.KINDS)
        return kind, self.rng.choice(self.pools[kind])


def _forging_sender(schemas: Path, targets: dict[str, tuple[str, int]], forged: int,
                    forged_rate: float, data_rate: float, captured: bytes, conn: Any) -> None:
    """The load of ``forged_messages``, in a process of its own: numbered valid data to
    the relay at ``data_rate`` and forged messages at ``forged_rate``, interleaved."""
    from speeddata.schemas import load_file

    forger = Forger(7, captured, "relay", load_file(schemas / "motor.avsc").fingerprint)
    encode = motor_encoder(schemas)
    data_sock, forge_sock = sender_socket(), multicast.sender("127.0.0.1", 1)
    forge_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 2**20)
    counts = dict.fromkeys(Forger.KINDS, 0)
    aim = {"control": targets["control"], "sender": targets["relay"],
           "forward": targets["full"], "replay": targets["full"]}
    sent_data = sent_forged = send_errors = 0
    seconds = forged / forged_rate
    start = time.monotonic()
    while sent_forged < forged:
        elapsed = time.monotonic() - start
        while sent_data < min(int(elapsed * data_rate) + 1, int(seconds * data_rate)):
            try:
                data_sock.sendto(encode(sent_data), targets["relay"])
            except OSError:
                send_errors += 1
            sent_data += 1
        while sent_forged < min(int(elapsed * forged_rate) + 1, forged):
            kind, datagram = forger.make()
            counts[kind] += 1
            with suppress(OSError):  # a forged one the kernel would not take: not data
                forge_sock.sendto(datagram, aim[kind.partition("_")[0]])
            sent_forged += 1
        time.sleep(0.0005)
    conn.send({"data": sent_data, "data_send_errors": send_errors, "forged": sent_forged,
               "kinds": counts, "seconds": time.monotonic() - start,
               "forger": f"127.0.0.1:{forge_sock.getsockname()[1]}"})


def forged_messages(work: Path, forged: int = 1_000_000, forged_rate: float = 40_000,
                    data_rate: float = 20_000) -> Row:
    """A host without the key forges control, report and notice datagrams while data
    flows at ``data_rate``: the relay and the server never stop, no forged control
    message is applied (a captured genuine one is applied once, its replays never), the
    genuine tag survives the forged deletes, and every data datagram is cached."""
    from speeddata import control
    from speeddata.tagrecord import TagRecord
    from speeddata.tags import TagStore

    config = write_file(work / "relay.toml", settings(work))
    cfg = build(config)
    assert cfg.multicast.full is not None and cfg.multicast.control is not None
    relay = services.start("relay", config, work)
    serve = services.start("serve", config, work)
    before = services.rss_bytes(relay.process.pid)
    key = control.load_key("", cfg.cache.dir)  # what the relay made at its first start
    now = time.time_ns()
    genuine = TagRecord("add", "genuine", now, "bench", start_ns=T0, end_ns=T0 + 10**15,
                        created_ns=now)
    captured = control.seal(key, genuine.as_message(), now, os.urandom(16))
    out = multicast.sender("127.0.0.1", 1)
    group = cfg.multicast.control
    out.sendto(captured, (group.host, group.port))  # the genuine one, once
    deadline = time.monotonic() + 20
    while TagStore(cfg.cache.dir).find("genuine") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    targets = {"relay": ("127.0.0.1", cfg.relay.port), "control": (group.host, group.port),
               "full": (cfg.multicast.full.host, cfg.multicast.full.port)}
    receiver, sender = multiprocessing.get_context("spawn").Pipe(duplex=False)
    load = multiprocessing.get_context("spawn").Process(target=_forging_sender, args=(
        cfg.channels.dir, targets, forged, forged_rate, data_rate, captured, sender))
    load.start()
    result = receiver.recv()
    load.join()
    deadline = time.monotonic() + 60
    while True:  # until the relay has taken (or counted as dropped) all that was sent
        snap = snapshot(cfg.cache.dir, newer_than=time.time())
        motor = snap.get("channels", {}).get("motor", {}).get("datagrams", 0)
        if motor >= result["data"] or time.monotonic() > deadline:
            break
    served = snapshot(cfg.cache.dir, "serve", newer_than=time.time())
    serve_alive = serve.process.poll() is None
    after = services.rss_bytes(relay.process.pid)
    tags = {t.name: t for t in TagStore(cfg.cache.dir).list()}
    relay.stop()
    serve.stop()
    cache = read_cache(cfg.cache.dir)
    found = set(numbered(cache["records"].get("motor", [])))
    lost = result["data"] - len(found & set(range(result["data"])))
    ctl = snap.get("control") or {}
    applied = {k: v for k, v in ctl.items()
               if k in ("added", "replaced", "deleted", "stopped") and v}
    survived_tag = "genuine" in tags and tags["genuine"].end_ns == genuine.end_ns
    hop_rows = [row for rows in served.get("multicast_loss", {}).values() for row in rows]
    forger_rows = [row for row in [*hop_rows, *snap.get("senders", [])]
                   if row.get("source") == result["forger"]]
    relay_rows = [row for row in hop_rows if row.get("source") != result["forger"]]
    real_lost = sum(r["lost"] for r in relay_rows)
    return Row(
        "forged control, reports, notices", sent=result["forged"] + result["data"],
        accepted=len(found), lost=lost,
        counted=sum(ctl.get("refused", {}).values()) + ctl.get("kernel_drops", 0),
        rss_before=before, rss_after=after,
        survived=(relay.process.returncode == 0 and serve_alive
                  and serve.process.returncode in STOPPED and lost == 0
                  and set(tags) == {"genuine"} and survived_tag
                  and applied == {"added": 1} and all(r["report_only"] for r in forger_rows)
                  and served.get("feed_errors", 0) == 0
                  # what the real relay's rows say was lost, the server's kernel dropped:
                  # no forged report moved them
                  and real_lost <= served.get("kernel_drops", 0)
                  and not cache["unreadable"]),
        details={"forged": result["forged"], "kinds": result["kinds"], "data": result["data"],
                 "data_rate": data_rate, "forged_rate": forged_rate,
                 "send_seconds": round(result["seconds"], 1), "tags": sorted(tags),
                 "genuine_tag_intact": survived_tag, "control_applied": applied,
                 "control_refused": ctl.get("refused", {}),
                 "control_kernel_drops": ctl.get("kernel_drops", 0),
                 "relay_rejected": snap.get("rejected", {}),
                 "relay_kernel_drops": snap.get("kernel_drops", 0),
                 "server_refused": served.get("refused", {}),
                 "server_feed_errors": served.get("feed_errors", 0),
                 "server_kernel_drops": served.get("kernel_drops", 0),
                 "forger_loss_rows": len(forger_rows),
                 "forger_rows_report_only": all(r["report_only"] for r in forger_rows),
                 "real_relay_rows": len(relay_rows),
                 "real_relay_rows_lost": real_lost})


@dataclass
class Rig:
    """A relay of its own, a listener on its full-rate group, and a numbered source."""

    config: Path
    cfg: Config
    listener: Listener
    relay: services.Service
    rss_before: int
    encode: Callable[[int], bytes]
    sock: socket.socket

    @classmethod
    def start(cls, work: Path, **extra: dict[str, Any]) -> Rig:
        config = write_file(work / "relay.toml", settings(work, **extra))
        cfg = build(config)
        assert cfg.multicast.full is not None
        listener = Listener(cfg.multicast.full)
        relay = services.start("relay", config, work)
        return cls(config, cfg, listener, relay, services.rss_bytes(relay.process.pid),
                   motor_encoder(cfg.channels.dir), sender_socket())

    def send(self, i: int) -> None:
        """Send valid motor record ``i`` (a relay that is down refuses it: not an error)."""
        with suppress(OSError):
            self.sock.sendto(self.encode(i), ("127.0.0.1", self.cfg.relay.port))


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small filesystem of its own (root only), unmounted after."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> Path:
    """Another program fills the disk: write until ENOSPC."""
    ballast = folder / "ballast"
    with suppress(OSError), ballast.open("wb") as f:
        block = b"\0" * 65536
        while True:
            f.write(block)
            f.flush()
    return ballast


def _taken(cache: Path, channel: str, count: int, timeout: float = 30.0) -> int:
    """Wait until the relay has taken ``count`` datagrams of ``channel`` (each is cached,
    or counted as not, in the batch it arrives in); returns how many it had. The disk must
    not fill while the last ones sent on free space still wait in the socket buffer: a
    relay a few ms behind then counted them lost (17 in one run, 529 for 0.1 s behind)."""
    deadline = time.monotonic() + timeout
    taken = 0
    while time.monotonic() < deadline:
        snap = status.read_all(cache).get("relay", {})
        taken = snap.get("channels", {}).get(channel, {}).get("datagrams", 0)
        if taken >= count:
            break
        time.sleep(0.05)
    return taken


def _settled(cache: Path, channel: str, timeout: float = 30.0) -> dict[str, Any]:
    """The relay's status once it has taken all that was sent: its count of ``channel``
    the same in two status files written after the sending stopped. A relay stopped
    while it was 0.26 s behind had that tail counted lost (1,285 in one run of five)."""
    deadline = time.monotonic() + timeout
    since, last = time.time(), None
    while time.monotonic() < deadline:
        snap = status.read_all(cache).get("relay", {})
        if snap.get("running") and snap.get("written", 0) > since:
            count = snap.get("channels", {}).get(channel, {}).get("datagrams", 0)
            if count == last:
                return snap
            since, last = snap["written"], count
        time.sleep(0.05)
    raise RuntimeError(f"the relay's count of {channel} did not settle in {timeout:.0f} s")


def _lagging(process: subprocess.Popen, lag: float, ending: float) -> Callable[[], None]:
    """A loaded host: ``process`` stops ``lag`` s before ``ending`` s from now; the call
    returned resumes it ``lag`` s after it is made (nothing, for no lag)."""
    if not lag:
        return lambda: None
    threading.Timer(ending - lag, process.send_signal, (signal.SIGSTOP,)).start()
    return lambda: threading.Timer(lag, process.send_signal, (signal.SIGCONT,)).start()


def disk_full(work: Path, rate: float = 5000, phase: float = 3.0, lag: float = 0.0) -> Row:
    """The cache's disk fills up while the relay runs, the relay restarts on the full disk,
    then space returns: multicast never stops, caching resumes, no file is torn. ``lag``:
    the relay is stopped from that long before the disk fills to that long after, and
    again at the end (a loaded host); the verdict must not change."""
    with tmpfs(work / "small", "16m") as disk:
        rig = Rig.start(work, cache={"dir": str(disk / "cache"), "rotate_bytes": 2**20})
        cfg, config, listener, relay, before, send = (
            rig.cfg, rig.config, rig.listener, rig.relay, rig.rss_before, rig.send)
        schemas = cfg.channels.dir
        resume = _lagging(relay.process, lag, phase)
        sent = paced(send, rate, phase)  # A: normal
        full_from = sent
        resume()
        taken = _taken(cfg.cache.dir, "motor", full_from)  # all of A judged on free space
        ballast = _fill(disk)
        sent += paced(send, rate, phase, first=sent)  # B: the disk is full
        relay.process.send_signal(signal.SIGTERM)  # C: restart on the full disk
        relay.process.wait(30)
        restarted = launch("relay", config, work)
        heard = len(listener.datagrams)
        deadline = time.monotonic() + 30
        probes = sent
        while len(listener.datagrams) == heard and time.monotonic() < deadline:
            send(sent)  # probes until the restarted relay forwards again
            sent += 1
            time.sleep(0.01)
        probes = range(probes, sent)  # sent while no relay ran: not heard, however long
        started_full = restarted.poll() is None and len(listener.datagrams) > heard
        sent += paced(send, rate, 1.0, first=sent)
        ballast.unlink()  # D: space returns
        free_at = sent
        time.sleep(0.2)
        resume = _lagging(restarted, lag, phase)
        sent += paced(send, rate, phase, first=sent)
        resume()
        snap = _settled(cfg.cache.dir, "motor")  # stopped with datagrams unread: "lost"
        after = services.rss_bytes(restarted.pid)
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)
        time.sleep(0.3)
        listener.close()
        heard_numbers = set(listener.motor_numbers(schemas))
        cache = read_cache(cfg.cache.dir)
        cached = set(numbered(cache["records"].get("motor", [])))
    resumed = set(range(free_at + int(rate * 0.5), sent))  # half a second after space returned
    lost_when_free = (set(range(full_from)) | resumed) - cached
    return Row(
        "disk full", sent=sent, accepted=len(cached), lost=len(lost_when_free),
        counted=snap["cache_dropped"], rss_before=before, rss_after=after,
        survived=(started_full and restarted.returncode == 0 and not cache["unreadable"]
                  and not lost_when_free
                  and len(heard_numbers - set(probes)) >= (sent - len(probes)) * 0.99),
        details={"forwarded_while_full": len(heard_numbers & set(range(full_from, free_at))),
                 "sent_while_full": free_at - full_from, "not_cached": sent - len(cached),
                 "cache_dropped_after_restart": snap["cache_dropped"],
                 "started_on_full_disk": started_full, "unreadable": cache["unreadable"],
                 "heard": len(heard_numbers), "probes": len(probes),
                 "sent_while_free": full_from,
                 "taken_before_full": taken, "lost_first": sorted(lost_when_free)[:20]})


def crash_loop(work: Path, kills: int = 10, rate: float = 20_000, seed: int = 2) -> Row:
    """kill -9 the relay at random moments under load, restart it each time: every file
    stays readable and every datagram a listener heard before a kill is in the cache."""
    rng = random.Random(seed)
    rig = Rig.start(work)
    cfg, config, listener, relay, before = (
        rig.cfg, rig.config, rig.listener, rig.relay, rig.rss_before)
    schemas = cfg.channels.dir
    stop = threading.Event()
    counter = {"sent": 0}

    def send(i: int) -> None:
        rig.send(i)
        counter["sent"] = i + 1

    load = threading.Thread(target=paced, args=(send, rate, 3600.0), kwargs={"stop": stop.is_set},
                            daemon=True)
    load.start()
    heard_before_kills: set[int] = set()
    peak = before
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 1.5))
        peak = max(peak, services.rss_bytes(relay.process.pid))
        relay.process.kill()
        relay.process.wait()
        time.sleep(0.05)  # what the relay forwarded has reached the listener
        heard_before_kills |= set(listener.motor_numbers(schemas))
        relay = services.start("relay", config, work)
    time.sleep(1.0)
    stop.set()
    load.join()
    time.sleep(0.3)
    after = services.rss_bytes(relay.process.pid)
    relay.stop()
    time.sleep(0.2)
    listener.close()
    heard = set(listener.motor_numbers(schemas))
    cache = read_cache(cfg.cache.dir)
    cached = set(numbered(cache["records"].get("motor", [])))
    sent = counter["sent"]
    missing_heard = heard_before_kills - cached
    pivot = _kill_a_pivot(config, work)
    return Row(
        f"crash loop: {kills} x kill -9", sent=sent, accepted=len(cached),
        lost=len(missing_heard), counted=sent - len(cached), rss_before=before,
        rss_after=max(after, peak),
        survived=(not missing_heard and not cache["unreadable"] and relay.process.returncode == 0
                  and pivot["no_final_file"]),
        details={"heard": len(heard), "heard_before_kills": len(heard_before_kills),
                 "not_cached_sent_while_down_or_in_kernel_buffer": sent - len(cached),
                 "unreadable": cache["unreadable"], "files": cache["files"], "pivot": pivot})


def _kill_a_pivot(config: Path, work: Path) -> dict[str, Any]:
    """kill -9 a pivot while it writes: no file appears under the final name, and the
    next pivot removes the half-written one."""
    folder = work / "exports"

    def speeddata(*args: str) -> list[str]:
        return [sys.executable, "-m", "speeddata", *args, "--config", str(config)]

    for name in ("killed", "again"):
        subprocess.run(speeddata("tag", name, "--start", "2025-01-01T00:00:00Z", "--end", "now"),
                       check=True, capture_output=True)
    out = folder / "killed.h5"
    process = subprocess.Popen(speeddata("pivot", "--tag", "killed", "--out", str(folder)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen_tmp = False
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if any(folder.glob(".killed.h5.*.tmp")):
            seen_tmp = True
            break
        time.sleep(0.002)
    killed = process.poll() is None
    if killed:
        process.kill()
    process.wait()
    final_file = out.exists()
    again = subprocess.run(speeddata("pivot", "--tag", "again", "--out", str(folder)),
                           capture_output=True, text=True)
    return {"killed_mid_write": killed and seen_tmp, "no_final_file": not (killed and final_file),
            "stale_removed_by_next_pivot": not any(folder.glob(".killed.h5.*.tmp")),
            "next_pivot_exit": again.returncode}


def overload(work: Path, seconds: float = 20.0, rate: float = 2_000_000) -> Row:
    """Senders far above what one core can take: memory stays bounded, drops are counted
    in status, and a second after the load stops nothing is lost again."""
    from speeddata.bench import relay as relay_bench

    values = settings(work)
    name, _ = relay_bench.record_schema(Path(values["channels"]["dir"]), 90)
    config = write_file(work / "relay.toml", values)
    cfg = build(config)
    relay = services.start("relay", config, work)
    pid = relay.process.pid
    before = services.rss_bytes(pid)
    ctx = multiprocessing.get_context("spawn")
    result, elapsed = ctx.Value("q", 0), ctx.Value("d", 0.0)
    load = ctx.Process(target=relay_bench.load_generator, args=(
        cfg.channels.dir, name, rate, seconds, cfg.relay.port, result, elapsed))
    load.start()
    peak = before
    while load.is_alive():
        peak = max(peak, services.rss_bytes(pid))
        time.sleep(0.2)
    load.join()
    offered = result.value
    time.sleep(1.0)  # "within a second of the load dropping"
    quiet = snapshot(cfg.cache.dir, newer_than=time.time())
    encode = motor_encoder(cfg.channels.dir)
    sock = sender_socket()
    probe = paced(lambda i: sock.sendto(encode(i), ("127.0.0.1", cfg.relay.port)), 5000, 0.4)
    deadline = time.monotonic() + 10
    while True:
        snap = snapshot(cfg.cache.dir, newer_than=time.time())
        if snap["datagrams"] - quiet["datagrams"] >= probe or time.monotonic() > deadline:
            break
    probe_lost = probe - (snap["datagrams"] - quiet["datagrams"])
    relay.stop()
    return Row(
        f"overload: {rate / 1e6:g} M/s offered for {seconds:g} s", sent=offered + probe,
        accepted=snap["datagrams"], lost=probe_lost, counted=snap["kernel_drops"],
        rss_before=before, rss_after=peak,
        survived=(relay.process.returncode == 0 and probe_lost == 0 and peak < 200 * 2**20
                  and snap["datagrams"] + snap["kernel_drops"] >= offered),
        details={"offered": offered, "kernel_drops": snap["kernel_drops"],
                 "probe": probe, "probe_lost": probe_lost,
                 "drops_reported_with_the_probe": snap["kernel_drops"] - quiet["kernel_drops"]})


# -- the stripchart server ---------------------------------------------------------------


def _ws_handshake(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A WebSocket client that subscribes and then never reads (a raw socket)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(1024)
    sock.sendall(_frame(json.dumps({"type": "subscribe", "window": 600,
                                    "signals": ["motor.speed", "motor.torque", "motor.current",
                                                "motor.voltage", "motor.position"]}).encode()))
    return sock


def _frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([0x80 | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def websocket_abuse(work: Path, seconds: float = 15.0, silent: int = 50, churn: int = 500
                    ) -> Row:
    """A good page keeps its frame rate while ``silent`` clients never read, ``churn``
    clients connect and close, one sends garbage, and malformed bodies arrive on the
    group; the silent ones are dropped and the server's memory stays bounded."""
    from websockets.sync.client import connect

    config = write_file(work / "relay.toml", settings(work))
    cfg = build(config)
    relay = services.start("relay", config, work)
    serve = services.start("serve", config, work)
    encode = motor_encoder(cfg.channels.dir)
    stop = threading.Event()
    sock = sender_socket()
    source = threading.Thread(target=paced, args=(
        lambda i: sock.sendto(encode(i), ("127.0.0.1", cfg.relay.port)), 1000, 3600.0),
        kwargs={"stop": stop.is_set}, daemon=True)
    source.start()
    url = f"ws://127.0.0.1:{cfg.web.port}/ws"
    time.sleep(1.0)
    before = services.rss_bytes(serve.process.pid)
    frames: list[float] = []

    def good_client() -> None:
        with connect(url, open_timeout=30, max_size=2**24) as ws:
            ws.send(json.dumps({"type": "subscribe", "signals": ["motor.speed"]}))
            while not stop.is_set():
                with suppress(TimeoutError):
                    if isinstance(ws.recv(timeout=0.5), bytes):
                        frames.append(time.monotonic())

    good = threading.Thread(target=good_client, daemon=True)
    good.start()
    silent_socks = [_ws_handshake(cfg.web.port) for _ in range(silent)]
    closed_by_server = 0

    def garbage() -> None:
        nonlocal closed_by_server
        rng = random.Random(3)
        messages: list[str | bytes] = [
            "[" * 5000 + "]" * 5000, "{" * 100_000, "not json", "null", "[]", "7",
            json.dumps({"type": "subscribe", "signals": "motor.speed"}),
            json.dumps({"type": "subscribe", "signals": ["x"] * 5000}),
            json.dumps({"type": "subscribe", "signals": ["motor.speed"], "window": "NaN"}),
            '{"type": "subscribe", "signals": ["motor.speed"], "window": NaN}',
            '{"type": "subscribe", "signals": ["motor.speed"], "window": 1e308}',
            json.dumps({"type": "nope"}), rng.randbytes(1000)]
        for _ in range(20):
            try:
                with connect(url, open_timeout=30, max_size=2**24) as ws:
                    for m in messages:
                        ws.send(m)
                    ws.send("x" * 70_000)  # over the 64 KiB limit: the server closes
                    with suppress(Exception):
                        while True:
                            ws.recv(timeout=0.2)
            except Exception:  # the server closed it (the message over 64 KiB)
                closed_by_server += 1

    def churner() -> None:
        for _ in range(churn):
            with suppress(Exception), connect(url, open_timeout=30):
                pass

    def malformed() -> None:  # a rogue sender on both groups
        groups = [g for g in (cfg.multicast.full, cfg.multicast.decimated) if g is not None]
        mc = multicast.sender("127.0.0.1", 1)
        head = encode(0)[:10]
        rng = random.Random(4)
        while not stop.is_set():
            for _ in range(50):
                for group in groups:
                    with suppress(OSError):
                        mc.sendto(head + rng.randbytes(rng.randrange(80)),
                                  (group.host, group.port))
            time.sleep(0.01)

    helpers = [threading.Thread(target=f, daemon=True) for f in (garbage, churner, malformed)]
    for h in helpers:
        h.start()
    started = time.monotonic()
    time.sleep(seconds)
    window = [t for t in frames if started + 1 <= t <= started + seconds]
    fps = len(window) / max(seconds - 1, 1e-9)
    snap = _get(f"http://127.0.0.1:{cfg.web.port}/api/status")["services"]["serve"]
    after = services.rss_bytes(serve.process.pid)
    stop.set()
    for h in (*helpers, good, source):
        h.join(30)
    for s in silent_socks:
        s.close()
    serve.stop()
    relay.stop()
    return Row(
        "websocket: silent, churning and garbage clients", sent=silent + churn + 20 + 1,
        accepted=snap["clients"], lost=0, counted=snap["closed_slow_clients"],
        rss_before=before, rss_after=after,
        survived=(serve.process.returncode in STOPPED and fps >= 25
                  and snap["closed_slow_clients"] >= silent and after < before + 100 * 2**20),
        details={"good_client_fps": round(fps, 1), "clients_left": snap["clients"],
                 "closed_slow_clients": snap["closed_slow_clients"],
                 "malformed_rejected": snap["rejected"],
                 "garbage_connections_closed_by_server": closed_by_server})


HOSTILE_NAMES = ["..", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd",
                 "a/b", "%00", "'; DROP TABLE tags; --", '"quoted"', "x" * 10_000,
                 "ünïcödé-名前", "evil\n", "run42", ".hidden.h5", "a" * 300 + ".h5"]
HOSTILE_BODIES: list[Any] = [
    {}, [], "x", 7, None, {"name": None}, {"name": ["a"]}, {"name": "t", "start": "9999-12-31"},
    {"name": "t", "start": "0001-01-01"}, {"name": "t", "start": "-1m", "end": "-2m"},
    {"name": "t", "start": "+999999999d"}, {"tag": "../x"}, {"start": "-1m", "decimate": 0},
    {"start": "-1m", "decimate": 1e30}, {"start": "-1m", "compression": "zstd"},
    {"start": "-1m", "signals": ["a"] * 20000}, {"name": "n", "note": "z" * 5_000_000},
    {"start": "-1m", "channels": ["../../etc"]}]


def hostile_rest(work: Path, requests_per_route: int | None = None) -> Row:
    """Every route of /openapi.json with hostile path names and bodies: only 4xx (or 2xx
    where the input is harmless), never a 500, and no file outside its directory."""
    config = write_file(work / "relay.toml", settings(work))
    cfg = build(config)
    relay = services.start("relay", config, work)
    serve = services.start("serve", config, work)
    base = f"http://127.0.0.1:{cfg.web.port}"
    before = services.rss_bytes(serve.process.pid)
    outside = {p for p in work.rglob("*") if not _inside(p, cfg)}
    spec = _get(base + "/openapi.json")
    codes: dict[int, int] = {}
    failures = []
    sent = 0
    for path, methods in spec["paths"].items():
        names = HOSTILE_NAMES if "{" in path else [""]
        for method in methods:
            bodies = HOSTILE_BODIES if method in ("post", "put", "patch") else [None]
            cases = [(n, b) for n in names for b in bodies][:requests_per_route]
            for name, body in cases:
                target = path
                for param in ("{name}", "{job_id}"):
                    target = target.replace(param, urllib.request.quote(name, safe="%/"))
                code = _request(base + target, method.upper(), body)
                sent += 1
                codes[code] = codes.get(code, 0) + 1
                if code >= 500 or code == 0:
                    failures.append(f"{method.upper()} {target[:80]} {str(body)[:60]} -> {code}")
    status_after = _get(base + "/api/status")
    after = services.rss_bytes(serve.process.pid)
    serve.stop()
    relay.stop()
    created = {p for p in work.rglob("*") if not _inside(p, cfg)} - outside
    created = {p for p in created if p.suffix != ".log"}
    return Row(
        "REST: hostile names and bodies on every route", sent=sent,
        accepted=sum(n for c, n in codes.items() if c < 400), lost=len(failures),
        counted=sum(n for c, n in codes.items() if 400 <= c < 500), rss_before=before,
        rss_after=after,
        survived=not failures and not created and serve.process.returncode in STOPPED and bool(
            status_after),
        details={"codes": dict(sorted(codes.items())), "failures": failures[:20],
                 "files_outside": sorted(str(p) for p in created)[:20]})


def _inside(path: Path, cfg: Config) -> bool:
    return any(path == d or d in path.parents for d in (cfg.cache.dir, cfg.exports.dir))


def _request(url: str, method: str, body: Any) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError as exc:
        # the server answered (413) and closed before a large body was all sent
        return 413 if isinstance(exc.reason, ConnectionResetError | BrokenPipeError) else 0
    except (ConnectionResetError, BrokenPipeError):
        return 413
    except (OSError, ValueError):
        return 0


SCENARIOS: dict[str, Callable[..., Row]] = {
    "fuzz": fuzz_relay, "disk_full": disk_full, "crash_loop": crash_loop,
    "overload": overload, "websocket": websocket_abuse, "rest": hostile_rest,
    "forged": forged_messages,
}
