"""Beyond one host, in network namespaces joined by a bridge (multicast crosses it): two
relay hosts with their own sources, a viewer host with the stripchart, a store host with
SeaweedFS. The viewer's page has both relays' channels, a tag made on the viewer reaches
both relays, the store stopped for 30 s under load costs no datagram of either cache and
the backlog drains, and ``pivot --archive`` on the viewer gives exactly what each relay
cached.

Needs root and iproute2; skipped, with the reason, where namespaces cannot be made.
Run it alone: ``.venv/bin/pytest tests/test_multihost.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import pytest

from speeddata import status
from speeddata.bench.services import fresh_group
from speeddata.cache import ledger as archive_ledger
from speeddata.config import write_file
from speeddata.tags import TagStore
from tests.harness.store import Store, StoreMissing
from tests.helpers import SCHEMAS, run_or_skip, wait_until

pytestmark = pytest.mark.e2e
NET = "10.214.9"
ROLES = {"relay1": 1, "relay2": 2, "viewer": 3, "store": 4}


@pytest.fixture
def lan() -> Iterator[dict[str, tuple[str, str]]]:
    """A namespace per role, each with one veth end on a bridge in this namespace (which
    has the address .254, so the test reaches every host)."""
    pid = os.getpid()
    bridge = f"sdbr{pid}"[:15]
    hosts = {role: (f"sdmh{n}x{pid}"[:15], f"{NET}.{n}") for role, n in ROLES.items()}
    steps = [["ip", "link", "add", bridge, "type", "bridge", "mcast_snooping", "0"],
             ["ip", "addr", "add", f"{NET}.254/24", "dev", bridge],
             ["ip", "link", "set", bridge, "up"]]
    for role, (namespace, address) in hosts.items():
        here, there = f"sdv{ROLES[role]}x{pid}"[:15], f"sdp{ROLES[role]}x{pid}"[:15]
        steps += [["ip", "netns", "add", namespace],
                  ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
                  ["ip", "link", "set", there, "netns", namespace],
                  ["ip", "link", "set", here, "master", bridge],
                  ["ip", "link", "set", here, "up"],
                  ["ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", there],
                  ["ip", "-n", namespace, "link", "set", there, "up"],
                  ["ip", "-n", namespace, "link", "set", "lo", "up"],
                  ["ip", "-n", namespace, "route", "add", "224.0.0.0/4", "dev", there]]
    try:
        run_or_skip(steps, "the network namespaces")
        yield hosts
    finally:
        for namespace, _ in hosts.values():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


DEPLOYMENT_KEY = "multihost-test-control-key-0123456789abcdef"

SOURCE = """
import sys, time
from speeddata import Sender
channel, host, seconds, count_file = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
fields = {"motor": dict(torque=0.0, current=0.0, voltage=0.0, position=0.0, temperature=0.0),
          "env": dict(pressure=1000.0, state="RUNNING", message="")}[channel]
signal = {"motor": "speed", "env": "humidity"}[channel]
with Sender(channel, host=host, port=26000) as sender:
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        for _ in range(10):
            sender.send(**{signal: float(i)}, **fields)
            i += 1
        time.sleep(0.02)
open(count_file, "w").write(str(i))
"""


def test_two_relay_hosts_one_viewer_one_store(lan: dict[str, tuple[str, str]],
                                              tmp_path: Path) -> None:
    groups = {key: str(fresh_group()) for key in ("full", "decimated", "control")}
    store_ns, store_ip = lan["store"]
    try:
        store = Store(tmp_path / "store", ip=store_ip, namespace=store_ns).start()
    except StoreMissing as exc:
        pytest.skip(str(exc))
    processes: list[subprocess.Popen] = []

    def config(role: str, **extra: dict[str, Any]) -> Path:
        _, address = lan[role]
        settings = {
            "channels": {"dir": str(SCHEMAS)},
            "cache": {"dir": str(tmp_path / role / "cache"), "rotate_seconds": 1.0},
            "relay": {"host": "0.0.0.0", "port": 26000},
            # one deployment, one control key on every host (as the README says to set it)
            "multicast": {**groups, "interface": address, "control_key": DEPLOYMENT_KEY},
            "web": {"host": address, "port": 8080, "token": "off"},
            "exports": {"dir": str(tmp_path / role / "exports")},
            "archive": {"endpoint": store.endpoint, "host": role, "prefix": "lab"},
        }
        for section, values in extra.items():
            settings[section].update(values)
        return write_file(tmp_path / f"{role}.toml", settings)

    def run(role: str, *args: str, background: bool = False, **kwargs: Any) -> Any:
        argv = ["ip", "netns", "exec", lan[role][0], sys.executable, *args]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "lab", "AWS_SECRET_ACCESS_KEY": "secret"}
        if background:
            log = (tmp_path / f"{role}-{len(processes)}.log").open("w")
            processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                              env=env))
            return processes[-1]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                              **kwargs)

    try:
        for role in ("relay1", "relay2"):
            run(role, "-m", "speeddata", "relay", "--config", str(config(role)),
                background=True)
            run(role, "-m", "speeddata", "archive", "--config", str(config(role)),
                background=True)
        viewer = config("viewer")
        run("viewer", "-m", "speeddata", "serve", "--config", str(viewer), background=True)
        for role in ("relay1", "relay2"):
            wait_until(lambda role=role: status.read_all(tmp_path / role / "cache")
                       .get("relay", {}).get("running"), what=f"the relay on {role}")
        url = f"http://{lan['viewer'][1]}:8080/"
        wait_until(lambda: _get(url + "api/channels"), what="the viewer's stripchart server")
        sources = [run(role, "-c", SOURCE, channel, lan[role][1], "45",
                       str(tmp_path / f"{role}.sent"), background=True)
                   for role, channel in (("relay1", "motor"), ("relay2", "env"))]
        time.sleep(2)
        for action in ("start", "stop"):
            done = run("viewer", "-m", "speeddata", "tag", action, "shared", "--config",
                       str(viewer))
            assert done.returncode == 0, done.stderr
            time.sleep(3)

        # the viewer's page draws the channels of both relays
        rates = {c["name"]: c["rate_hz"] for c in _get(url + "api/channels")["channels"]}
        assert rates["motor"] > 100 and rates["env"] > 100, rates
        # the tag made on the viewer is in both relays' stores, stamped with its origin
        mine = TagStore(tmp_path / "viewer" / "cache").get("shared")
        for role in ("relay1", "relay2"):
            tag = wait_until(lambda role=role: _tag(tmp_path / role / "cache"),
                             what=f"the tag at {role}")
            assert (tag.start_ns, tag.end_ns) == (mine.start_ns, mine.end_ns)
            assert tag.origin and tag.received_ns
        # the store goes away for 30 s under load: the relays cache on, the backlog grows
        store.stop()
        time.sleep(30)
        for role in ("relay1", "relay2"):
            snap = status.read_all(tmp_path / role / "cache")["archive"]
            assert snap["store"] == "down" and snap["errors"] >= 1, snap
            assert snap["backlog_files"] >= 20, snap  # files roll every second
        store.start()
        for source in sources:
            assert source.wait(60) == 0
        for role, channel in (("relay1", "motor"), ("relay2", "env")):
            sent = int((tmp_path / f"{role}.sent").read_text())
            cache = tmp_path / role / "cache"
            wait_until(lambda cache=cache, channel=channel, sent=sent: _cached(cache, channel)
                       == sent, what=f"all {sent} {channel} datagrams in {role}'s cache")
            wait_until(lambda cache=cache: _drained(cache), timeout=60,
                       what=f"{role}'s archive backlog drained")
        for role in ("relay1", "relay2"):  # the files holding the tag closed and archived
            wait_until(lambda role=role: _archived_past(tmp_path / role / "cache",
                                                        mine.end_ns),
                       timeout=60, what=f"{role}'s tagged range archived")
        # one pivot on the viewer, from the archive, against each relay's own cache
        out = tmp_path / "viewer" / "exports"
        done = run("viewer", "-m", "speeddata", "pivot", "--tag", "shared", "--archive",
                   "--config", str(viewer))
        assert done.returncode == 0, done.stderr
        assert "of 2 relay hosts (relay1, relay2)" in done.stdout, done.stdout
        with h5py.File(out / "shared.h5") as h5:
            merged = {"motor": h5["motor"]["speed"][()].tolist(),
                      "env": h5["env"]["humidity"][()].tolist()}
        for role, channel, signal in (("relay1", "motor", "speed"),
                                      ("relay2", "env", "humidity")):
            local = tmp_path / role / "local"
            done = run(role, "-m", "speeddata", "pivot", "--tag", "shared", "--channels",
                       channel, "--out", str(local), "--config", str(config(role)))
            assert done.returncode == 0, done.stderr
            with h5py.File(local / "shared.h5") as h5:
                cached = h5[channel][signal][()].tolist()
            assert len(cached) > 500 and merged[channel] == cached
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        store.stop()


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)
    except OSError:
        return None


def _tag(cache: Path) -> Any:
    store = TagStore(cache)
    return next((t for t in store.list() if t.name == "shared" and t.end_ns), None)


def _cached(cache: Path, channel: str) -> int:
    """Records in the cache files of ``channel``, from their indexes."""
    from speeddata.cache import index

    return sum(e.count for p in (cache / channel).glob("*.idx")
               for e in index.unpack(p.read_bytes()))


def _drained(cache: Path) -> bool:
    snap = status.read_all(cache).get("archive", {})
    return snap.get("store") == "up" and snap.get("backlog_files") == 0


def _archived_past(cache: Path, end_ns: int) -> bool:
    """Every cache file that starts before ``end_ns`` is archived (and one after it is)."""
    from speeddata.cache.catalogue import scan

    ledger = archive_ledger.Ledger(cache / archive_ledger.LEDGER)
    files = scan(cache)
    covered = archive_ledger.covered(ledger, cache)
    needed = [f for f in files if f.start_ns <= end_ns]
    return bool(needed) and all(covered(f) for f in needed) and any(
        f.start_ns > end_ns and covered(f) for f in files)
