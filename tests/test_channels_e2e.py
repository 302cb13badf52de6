"""Channels registered and retired while relay and server run: no restart, and no
datagram of the other channels lost while the relay reloads."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from speeddata.config import write_file
from speeddata.pivot import pivot
from speeddata.schemas import channel_from_schema, load_file
from speeddata.sender import Encoder
from tests.helpers import SCHEMAS, relay_settings, start_relay, start_serve, wait_until

pytestmark = pytest.mark.e2e

RIG = {"type": "record", "name": "rig", "doc": "a rig added at run time", "fields": [
    {"name": "time", "type": "long"},
    {"name": "pressure", "type": "double", "unit": "bar"}]}


def call(base: str, method: str, path: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_a_channel_added_and_retired_while_running(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)  # the test's own copy: registration writes into it
    settings = relay_settings(tmp_path, channels={"dir": str(schemas), "legacy": ["example"]})
    relay = start_relay(tmp_path, settings)
    serve = start_serve(tmp_path, write_file(tmp_path / "serve.toml", settings))
    base = serve.url.rstrip("/")
    motor = Encoder(load_file(schemas / "motor.avsc"))
    rig = Encoder(channel_from_schema(RIG))
    target = ("127.0.0.1", relay.port)
    sent = {"motor": 0}
    stop = threading.Event()

    def steady_motor() -> None:  # 2 kHz of another channel through every reload
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            while not stop.is_set():
                for _ in range(20):
                    out.sendto(motor.encode({"speed": 1.0, "torque": 0.0, "current": 0.0,
                                             "voltage": 0.0, "position": 0.0,
                                             "temperature": 0.0}), target)
                    sent["motor"] += 1
                time.sleep(0.01)

    sender = threading.Thread(target=steady_motor)
    sender.start()
    rig_sent = 0
    try:
        time.sleep(0.5)
        code, described = call(base, "POST", "/api/channels", RIG)
        assert code == 201, described
        assert described["name"] == "rig" and described["signals"][0]["unit"] == "bar"
        # the server draws it at once; the relay takes it within about a second
        assert "rig" in {c["name"] for c in call(base, "GET", "/api/channels")[1]["channels"]}
        registered = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            def rig_cached() -> bool:
                nonlocal rig_sent
                out.sendto(rig.encode({"pressure": float(rig_sent)}), target)
                rig_sent += 1
                time.sleep(0.02)
                return relay.snapshot().get("channels", {}).get("rig", {}).get("datagrams", 0)

            wait_until(rig_cached, what="the relay taking the new channel")
            print(f"the relay took the new channel {time.monotonic() - registered:.2f} s "
                  "after it was registered")
            early = relay.snapshot()["rejected"]["unknown_schema"]
            for _ in range(100):
                out.sendto(rig.encode({"pressure": float(rig_sent)}), target)
                rig_sent += 1
            wait_until(lambda: relay.snapshot()["channels"]["rig"]["datagrams"]
                       == rig_sent - early, what="every rig datagram after the reload")
        # a malformed schema is refused with the reason, and nothing is stored
        code, answer = call(base, "POST", "/api/channels", {"type": "record", "name": "x"})
        assert code == 400 and answer["detail"]
        assert not (schemas / "x.avsc").exists()
        # retired: no new data accepted, what is cached stays
        assert call(base, "DELETE", "/api/channels/rig")[0] == 204
        assert call(base, "DELETE", "/api/channels/rig")[0] == 404
        code, answer = call(base, "DELETE", "/api/channels/..%2F..%2Fetc%2Fpasswd")
        assert 400 <= code < 500 and str(tmp_path) not in str(answer)  # no path, no 500
        code, answer = call(base, "DELETE", "/api/channels/nope")
        assert code == 404 and "channels: env, example, motor" in answer["detail"]
        assert str(tmp_path) not in answer["detail"]  # the server's paths stay its own
        assert call(base, "DELETE", "/api/channels/" + "a" * 300)[0] == 422
        assert not (schemas / "rig.avsc").exists()
        assert [p.name.split(".")[0] for p in (schemas / "retired").iterdir()] == ["rig"]
    finally:
        stop.set()
        sender.join()
    wait_until(lambda: relay.snapshot()["channels"]["motor"]["datagrams"] == sent["motor"],
               what=f"all {sent['motor']} motor datagrams counted")
    snapshot = relay.snapshot()
    assert snapshot["kernel_drops"] == 0
    assert snapshot["channels"]["motor"]["bad_body"] == 0
    serve.stop()
    assert relay.stop() == 0
    result = pivot(relay.cache_dir, tmp_path / "all.h5", 0, time.time_ns() + 10**9)
    assert result.channels["motor"] == sent["motor"]  # none lost through the reloads
    assert result.channels["rig"] == rig_sent - early


def test_a_sender_registers_its_own_schema_with_the_printed_url(tmp_path: Path) -> None:
    from speeddata import Sender
    from speeddata.sender import register_channel

    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    settings = relay_settings(tmp_path, channels={"dir": str(schemas), "legacy": []},
                              web={"token": "s3cret-token"})
    relay = start_relay(tmp_path, settings)
    serve = start_serve(tmp_path, write_file(tmp_path / "serve.toml", settings))
    url = f"{serve.url}?token=s3cret-token"  # as 'speeddata status --url' prints it
    try:
        with Sender(RIG, port=relay.port, register=url) as sender:
            for i in range(50):
                sender.send(pressure=float(i))
        assert (schemas / "rig.avsc").exists()
        wait_until(lambda: relay.snapshot().get("channels", {}).get("rig", {}).get(
            "datagrams", 0) == 50, what="the 50 datagrams sent right after registering")
        assert relay.snapshot()["rejected"]["unknown_schema"] == 0
        assert register_channel(url, channel_from_schema(RIG)) is False  # known: no POST
        from speeddata.errors import SpeeddataError

        with pytest.raises(SpeeddataError, match="HTTP 401"):
            register_channel(serve.url, channel_from_schema(RIG))  # no token
    finally:
        serve.stop()
        relay.stop()
