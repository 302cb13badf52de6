"""A laptop on the LAN, played by a network namespace joined to this host by a veth pair:
it reaches the page with the printed URL's token and is refused without it, and its
datagrams reach the relay's cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pytest

from speeddata.bench.services import free_port
from speeddata.config import write_file
from speeddata.schemas import load_file
from speeddata.sender import Encoder
from tests.helpers import (
    SCHEMAS,
    relay_settings,
    run_or_skip,
    start_relay,
    start_serve,
    wait_until,
)

pytestmark = pytest.mark.e2e

HOST_ADDRESS, LAPTOP_ADDRESS = "10.213.7.1", "10.213.7.2"


@pytest.fixture
def laptop() -> Iterator[str]:
    """A namespace named for this process, its veth end at LAPTOP_ADDRESS."""
    name = f"sdlaptop{os.getpid()}"
    host_end, laptop_end = f"sdh{os.getpid()}"[:15], f"sdl{os.getpid()}"[:15]
    steps = [["ip", "netns", "add", name],
             ["ip", "link", "add", host_end, "type", "veth", "peer", "name", laptop_end],
             ["ip", "link", "set", laptop_end, "netns", name],
             ["ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", host_end],
             ["ip", "link", "set", host_end, "up"],
             ["ip", "-n", name, "addr", "add", f"{LAPTOP_ADDRESS}/24", "dev", laptop_end],
             ["ip", "-n", name, "link", "set", laptop_end, "up"],
             ["ip", "-n", name, "link", "set", "lo", "up"]]
    try:
        run_or_skip(steps, "a network namespace")
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def on_laptop(namespace: str, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", code, *args],
                          capture_output=True, text=True, timeout=30)


GET = """
import sys, urllib.request, urllib.error
headers = {"Authorization": "Bearer " + sys.argv[2]} if len(sys.argv) > 2 else {}
try:
    with urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers=headers),
                                timeout=10) as response:
        print(response.status, response.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
"""

SEND = """
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
    for _ in range(int(sys.argv[3])):
        out.sendto(bytes.fromhex(sys.argv[4]), (sys.argv[1], int(sys.argv[2])))
"""


def test_a_laptop_on_the_lan_needs_the_token_and_its_datagrams_are_cached(
        laptop: str, tmp_path: Path) -> None:
    settings = relay_settings(tmp_path, relay={"host": "0.0.0.0", "port": free_port()},
                              web={"host": "0.0.0.0"})
    relay = start_relay(tmp_path, settings)
    serve = start_serve(tmp_path, write_file(tmp_path / "serve.toml", settings))
    try:
        url = subprocess.run(
            [sys.executable, "-m", "speeddata", "status", "--url", "--config",
             str(relay.config_path)], capture_output=True, text=True, check=True).stdout.strip()
        _, _, token = url.partition("/?token=")
        assert token, url
        base = f"http://{HOST_ADDRESS}:{settings['web']['port']}"
        refused = on_laptop(laptop, GET, f"{base}/api/channels")
        assert refused.stdout.startswith("401 "), refused
        page = on_laptop(laptop, GET, f"{base}/", token)
        assert page.stdout.startswith("200 ") and "speeddata stripchart" in page.stdout, page
        channels = on_laptop(laptop, GET, f"{base}/api/channels", token)
        assert channels.stdout.startswith("200 "), channels
        assert "motor" in {c["name"] for c in json.loads(channels.stdout[4:])["channels"]}

        datagram = Encoder(load_file(SCHEMAS / "env.avsc")).encode(
            {"humidity": 40.0, "pressure": 1013.0, "state": "IDLE", "message": "from a laptop"})
        sent = on_laptop(laptop, SEND, HOST_ADDRESS, str(relay.port), "25", datagram.hex())
        assert sent.returncode == 0, sent.stderr
        wait_until(lambda: relay.snapshot().get("channels", {}).get("env", {}).get(
            "datagrams", 0) == 25, what="25 datagrams from the laptop counted")
    finally:
        assert serve.stop() == 0
        assert relay.stop() == 0
    records = []
    for path in sorted((relay.cache_dir / "env").glob("*.avro")):  # any Avro reader opens it
        with path.open("rb") as f:
            records += list(fastavro.reader(f))
    assert [r["message"] for r in records] == ["from a laptop"] * 25
