"""The stripchart server with a real relay, real multicast and real WebSockets."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
from websockets.sync.client import connect

from speeddata import Sender
from speeddata.stripchart import frames
from tests.helpers import TIMEOUT, wait_until
from tests.stripchart.conftest import Stack

T0 = time.time_ns()


def example(i: int, ramp: float) -> dict:
    return {"time": T0 + i * 1_000_000, "message": f"m{i}", "counter": i, "sine_wave": 0.0,
            "ramp": ramp, "square_wave": 1.0, "noise": 0.0}


def receive_until(ws, condition, what: str):
    """Read messages until ``condition(collected)`` holds; returns the collected frames."""
    collected = {"series": {}, "text": {}, "errors": []}
    deadline = time.monotonic() + TIMEOUT
    while not condition(collected):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {collected['errors']}")
        message = ws.recv(timeout=TIMEOUT)
        if isinstance(message, str):
            parsed = json.loads(message)
            if parsed["type"] == "error":
                collected["errors"].append(parsed)
            continue
        header, series = frames.decode(message)
        for key, arrays in series.items():
            collected["series"].setdefault(key, []).append(arrays)
        for name, values in header["text"].items():
            collected["text"].setdefault(name, []).extend(v for _, v in values)
    return collected


def subscribe(ws, **message) -> None:
    hello = json.loads(ws.recv(timeout=TIMEOUT))
    assert hello["type"] == "hello" and hello["source"] == "full"  # every sample, by default
    ws.send(json.dumps({"type": "subscribe", **message}))
    assert json.loads(ws.recv(timeout=TIMEOUT))["type"] == "subscribed"


def test_values_on_the_websocket_equal_what_the_source_sent(stack: Stack) -> None:
    with connect(stack.ws_url) as ws:
        subscribe(ws, signals=["example.ramp", "example.message"], window=60)
        with Sender("example", port=stack.relay.port) as sender:
            def got_probe(c):
                sender.send(example(-1000, -1.0))  # a second before the data
                return "example.message" in c["text"]
            receive_until(ws, got_probe, "a first value")
            ramps = [float(i) for i in range(200)]
            ramps[57] = 1e6  # a one-sample spike: the envelope must keep it
            for i, value in enumerate(ramps, start=1):
                sender.send(example(i, value))

        def complete(c) -> bool:
            lasts = [a["last"] for a in c["series"].get(("example.ramp", 0), [])]
            return bool(lasts) and 199.0 in np.concatenate(lasts)

        collected = receive_until(ws, complete, "the last value")
    fine = collected["series"][("example.ramp", 0)]
    highs = np.concatenate([a["high"] for a in fine])
    lows = np.concatenate([a["low"] for a in fine])
    assert highs.max() == 1e6
    assert lows[lows >= 0].min() == 0.0
    assert "m200" in collected["text"]["example.message"]


def test_bad_messages_get_clear_errors_and_the_connection_stays(stack: Stack) -> None:
    with connect(stack.ws_url) as ws:
        json.loads(ws.recv(timeout=TIMEOUT))  # hello
        for garbage, expected in [
            ("not json at all", "not a JSON object"),
            ("[1, 2]", "not a JSON object"),
            ('{"type": "dance"}', "unknown message type 'dance'"),
            ('{"type": "subscribe", "signals": "motor.speed"}', "'signals' must be a list"),
        ]:
            ws.send(garbage)
            reply = json.loads(ws.recv(timeout=TIMEOUT))
            assert reply["type"] == "error" and expected in reply["message"], reply
        ws.send(b"\x00\x01binary")
        assert "JSON text" in json.loads(ws.recv(timeout=TIMEOUT))["message"]
        ws.send(json.dumps({"type": "subscribe", "signals": ["example.ramp", "no.such"]}))
        assert json.loads(ws.recv(timeout=TIMEOUT))["signals"] == ["example.ramp"]
        error = json.loads(ws.recv(timeout=TIMEOUT))
        assert error["unknown"] == ["no.such"] and "/api/channels" in error["message"]
        ws.send('{"type": "ping"}')
        while (reply := ws.recv(timeout=TIMEOUT)) and not isinstance(reply, str):
            pass
        assert json.loads(reply)["type"] == "pong"


def test_a_stalled_page_does_not_slow_the_others(stack: Stack) -> None:
    stop = threading.Event()

    def source() -> None:
        with Sender("example", port=stack.relay.port) as sender:
            i = 0
            while not stop.is_set():
                sender.send(example(i, float(i)))
                i += 1
                time.sleep(0.001)

    feeder = threading.Thread(target=source)
    with connect(stack.ws_url, close_timeout=0.5) as stalled:  # subscribes, never reads
        stalled.send(json.dumps({"type": "subscribe", "window": 600,
                                 "signals": [f"example.{s}" for s in
                                             ("ramp", "sine_wave", "noise", "square_wave")]}))
        feeder.start()
        try:
            with connect(stack.ws_url) as ws:
                subscribe(ws, signals=["example.ramp"], window=10)
                start = time.monotonic()
                count = 0
                while time.monotonic() - start < 2.0:
                    if not isinstance(ws.recv(timeout=TIMEOUT), str):
                        count += 1
            assert count >= 20  # ~30 frames/s while the other page reads nothing
        finally:
            stop.set()
            feeder.join()


def test_rest_endpoints(stack: Stack) -> None:
    with Sender("example", port=stack.relay.port) as sender:
        sender.send(example(1, 1.0))

    def get(path: str):
        with urllib.request.urlopen(stack.serve.url + path, timeout=TIMEOUT) as response:
            return response.status, response.read()

    _, body = get("api/channels")
    channels = {c["name"]: c for c in json.loads(body)["channels"]}
    assert set(channels) == {"motor", "env", "example", "power"}  # power: derived
    assert channels["power"]["signals"][0]["expression"] == "motor.current * motor.voltage"
    speed = next(s for s in channels["motor"]["signals"] if s["name"] == "speed")
    assert (speed["unit"], speed["kind"], speed["type"]) == ("rpm", "number", "double")

    def relay_seen():
        overview = json.loads(get("api/status")[1])
        relay = overview["services"].get("relay", {})
        return overview if relay.get("running") and relay["datagrams"] >= 1 else None

    overview = wait_until(relay_seen, what="relay figures in /api/status")
    assert overview["cache"]["bytes"] > 0 and overview["cache"]["free_disk_bytes"] > 0
    assert overview["services"]["serve"]["running"]
    assert get("docs")[0] == 200
    assert b"<sd-chart" in get("")[1]


def _http(url: str, method: str = "GET", body: dict | None = None):
    request = urllib.request.Request(url, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            data = response.read()
            return response.status, (json.loads(data) if data and response.headers.get(
                "content-type", "").startswith("application/json") else data)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_tag_and_pivot_over_the_api(stack: Stack) -> None:
    import io

    import h5py

    base = stack.serve.url
    assert _http(base + "api/tags", "POST", {"name": "api1", "start": "now"})[0] == 201
    with Sender("example", port=stack.relay.port) as sender:
        for i in range(50):
            sender.send(example(i, float(i)))
    wait_until(lambda: (s := stack.relay.snapshot()) and s["datagrams"] >= 50, what="cached")
    code, tag = _http(base + "api/tags/api1/stop", "POST", {})
    assert code == 200 and tag["end"] != "open"
    assert _http(base + "api/tags", "POST", {"name": "api1"})[0] == 409
    code, job = _http(base + "api/pivot", "POST", {"tag": "api1"})
    assert code == 202
    done = wait_until(lambda: (j := _http(base + f"api/pivot/{job['id']}")[1])["state"] in (
        "done", "failed") and j, what="the pivot job")
    assert done["state"] == "done", done
    assert done["skipped"] == []  # no damaged cache range left out
    assert done["records"] == 50 and done["file"] == "api1.h5"
    exports = _http(base + "api/exports")[1]
    assert exports[0]["name"] == "api1.h5" and exports[0]["bytes"] > 0
    code, content = _http(base + "api/exports/api1.h5")
    with h5py.File(io.BytesIO(content)) as h5:
        assert h5["example"]["counter"][()].tolist() == list(range(50))
    assert _http(base + "api/tags")[1][0]["exported"]
    assert _http(base + "api/exports/api1.h5", "DELETE")[0] == 204
    assert _http(base + "api/exports")[1] == []
    # the same tag as CSV: a directory, listed and downloaded as a zip
    code, job = _http(base + "api/pivot", "POST", {"tag": "api1", "format": "csv"})
    assert code == 202
    done = wait_until(lambda: (j := _http(base + f"api/pivot/{job['id']}")[1])["state"] in (
        "done", "failed") and j, what="the CSV pivot job")
    assert done["state"] == "done" and done["file"] == "api1", done
    (listed,) = _http(base + "api/exports")[1]
    assert listed["name"] == "api1.zip" and listed["format"] == "csv"
    import csv
    import zipfile

    code, content = _http(base + "api/exports/api1.zip")
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert sorted(archive.namelist()) == ["example.csv", "export.json"]
        rows = list(csv.DictReader(io.TextIOWrapper(archive.open("example.csv"))))
    assert [int(r["counter"]) for r in rows] == list(range(50))
    assert _http(base + "api/exports/api1.zip", "DELETE")[0] == 204
    assert _http(base + "api/exports")[1] == []
    assert _http(base + "api/exports/..%2Fx.h5")[0] == 404
    code, error = _http(base + "api/pivot", "POST", {"tag": "ghost"})
    assert code == 404 and "no tag named 'ghost'" in error["detail"]


def test_scroll_back_refuses_what_it_cannot_answer(stack: Stack) -> None:
    base = stack.serve.url
    for query, code, says in [
            ("signal=motor.speed&start_ms=0&end_ms=1e300", 400, "end_ms is outside 1970"),
            ("signal=motor.speed&start_ms=-5&end_ms=1", 400, "start_ms is outside 1970"),
            ("signal=motor.speed&start_ms=nan&end_ms=1", 400, "finite"),
            ("signal=motor.speed&start_ms=5&end_ms=1", 400, "end is after its start"),
            ("signal=motor.speed&start_ms=0&end_ms=1&columns=0", 400, "columns must be"),
            ("signal=../../etc&start_ms=0&end_ms=1", 404, "no channel ''"),
            ("signal=motor.nope&start_ms=0&end_ms=1", 404, "not a numeric signal"),
            ("signal=" + "x" * 300 + "&start_ms=0&end_ms=1", 422, "")]:
        got, answer = _http(base + "api/range?" + query)
        assert got == code, (query, answer)
        assert says in json.dumps(answer), (query, answer)
    assert _http(base + "api/range?signal=motor.speed&start_ms=0&end_ms=1")[0] == 200
