"""The stripchart app in process, with Starlette's TestClient: REST and the page's
WebSocket, no relay, no browser. Data reaches the hub by ``hub.ingest`` on the app's
event loop (``client.portal``), as the feed would give it."""

from __future__ import annotations

import functools
import inspect
import json
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from speeddata import config as configuration
from speeddata.config import write_file
from speeddata.sender import Encoder
from speeddata.stripchart import frames
from speeddata.stripchart.app import create_app
from speeddata.stripchart.server import StripchartServer
from tests.helpers import SCHEMAS, TIMEOUT, relay_settings, wait_until

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note on httpx versions
    from starlette.testclient import TestClient, WebSocketTestSession

RIG = {"type": "record", "name": "rig", "fields": [
    {"name": "time", "type": "long"}, {"name": "pressure", "type": "double"},
    {"name": "flow", "type": "double"}]}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    """The app with its lifespan (its own groups, ports and data directory)."""
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    settings = relay_settings(tmp_path, channels={"dir": str(schemas)})
    cfg = configuration.build(write_file(tmp_path / "serve.toml", settings))
    with TestClient(create_app(cfg), base_url=f"http://127.0.0.1:{cfg.web.port}") as client:
        yield client


def server_of(client: TestClient) -> StripchartServer:
    return client.app.state.server  # type: ignore[attr-defined]


def on_loop(client: TestClient, fn: Any, *args: Any, **kw: Any) -> Any:
    """Call ``fn`` on the app's event loop, where the hub lives."""
    assert client.portal is not None
    return client.portal.call(functools.partial(fn, *args, **kw))


def ingest(client: TestClient, channel: str, *records: dict[str, float]) -> None:
    server = server_of(client)
    encode = Encoder(server.registry[channel]).encode
    on_loop(client, server.hub.ingest, [encode(r) for r in records], now_ns=time.time_ns())


def receive(ws: WebSocketTestSession) -> dict | tuple[dict, dict]:
    """The next message, within TIMEOUT: a JSON one as a dict, a frame decoded; a close
    as {"type": "close", ...}. (The session's own receive() waits forever.)"""
    async def get() -> Any:
        with anyio.fail_after(TIMEOUT):
            return await ws._send_rx.receive()  # what WebSocketTestSession.receive awaits

    message = ws.portal.call(get)
    if message["type"] == "websocket.close":
        return {"type": "close", "code": message.get("code"), "reason": message.get("reason")}
    if message.get("text") is not None:
        return json.loads(message["text"])
    return frames.decode(message["bytes"])


def until(ws: WebSocketTestSession, condition: Any, what: str) -> list:
    """Messages received until ``condition(message)``; the last one is the one."""
    seen: list = []
    deadline = time.monotonic() + TIMEOUT
    while not seen or not condition(seen[-1]):
        assert time.monotonic() < deadline, f"no {what} in {seen[-5:]}"
        seen.append(receive(ws))
    return seen


def is_type(kind: str) -> Any:
    return lambda m: isinstance(m, dict) and m["type"] == kind


def has(signal: str, value: float) -> Any:
    """A frame whose finest level of ``signal`` has ``value`` as a last."""
    return lambda m: (isinstance(m, tuple) and (signal, 0) in m[1]
                      and value in m[1][(signal, 0)]["last"].tolist())


def open_page(client: TestClient) -> Any:
    """A page's WebSocket (to the host the guard knows: not TestClient's 'testserver')."""
    return client.websocket_connect("/ws", headers={"host": "127.0.0.1"})


def subscribe(ws: WebSocketTestSession, *signals: str) -> dict:
    ws.send_text(json.dumps({"type": "subscribe", "signals": list(signals), "window": 60}))
    return until(ws, is_type("subscribed"), "subscribed")[-1]


def test_subscribe_unsubscribe_pause_and_resume(app: TestClient) -> None:
    now = time.time_ns()
    with open_page(app) as ws:
        assert receive(ws)["type"] == "hello"
        assert subscribe(ws, "motor.speed", "motor.torque")["signals"] == [
            "motor.speed", "motor.torque"]
        ingest(app, "motor", {"time": now, "speed": 1.0, "torque": 2.0, "current": 0.0,
                              "voltage": 0.0, "position": 0.0, "temperature": 0.0})
        until(ws, has("motor.torque", 2.0), "the first torque")
        ws.send_text('{"type": "unsubscribe", "signals": ["motor.torque"]}')
        assert until(ws, is_type("unsubscribed"), "unsubscribed")[-1]["signals"] == [
            "motor.speed"]
        ws.send_text('{"type": "pause"}')
        until(ws, is_type("paused"), "paused")
        ingest(app, "motor", {"time": now + 10**8, "speed": 5.0, "torque": 6.0,
                              "current": 0.0, "voltage": 0.0, "position": 0.0,
                              "temperature": 0.0})
        (page,) = server_of(app).pages
        ticked = time.monotonic() + 3 / 30  # three ticks after the data
        wait_until(lambda: page.wake_at > ticked, what="three ticks of the paused page")
        ws.send_text('{"type": "ping"}')
        between = until(ws, is_type("pong"), "pong")
        assert not any(isinstance(m, tuple) for m in between)  # no frame while paused
        ws.send_text('{"type": "resume"}')
        after = until(ws, has("motor.speed", 5.0), "the speed sent while paused")
        assert is_type("resumed")(after[0]) and after[-1][0]["type"] == "history"
        assert ("motor.torque", 0) not in after[-1][1]  # unsubscribed
    stats = server_of(app).statistics()
    assert stats.clients == 0 and stats.subscribes == 1


def test_a_schema_edit_tells_the_page_and_its_other_signals_go_on(app: TestClient) -> None:
    """Before, removing a subscribed signal raised KeyError in Hub.frame: the push task
    died, the socket stayed open and no frame came again."""
    assert app.post("/api/channels", json=RIG).status_code == 201
    now = time.time_ns()
    with open_page(app) as ws:
        assert receive(ws)["type"] == "hello"
        subscribe(ws, "rig.pressure", "rig.flow")
        ingest(app, "rig", {"time": now, "pressure": 1.0, "flow": 2.0})
        until(ws, has("rig.flow", 2.0), "the flow")
        edited = {**RIG, "fields": RIG["fields"][:2]}
        answer = app.post("/api/channels", json={"schema": edited, "replace": True})
        assert answer.status_code == 201
        pruned = until(ws, is_type("pruned"), "the pruned notice")[-1]
        assert pruned["signals"] == ["rig.flow"] and "rig.flow" in pruned["message"]
        for i in range(1, 4):  # the frames go on, for what is left
            ingest(app, "rig", {"time": now + i * 10**8, "pressure": 1.0 + i})
            frame = until(ws, has("rig.pressure", 1.0 + i), f"pressure {1.0 + i}")[-1]
            assert ("rig.flow", 0) not in frame[1]
    assert server_of(app).statistics().pruned_subscriptions == 1
    assert server_of(app).statistics().push_failures == 0


def test_a_frame_that_cannot_be_made_closes_the_page_with_1011(
        app: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, the push task died silently and the page waited for frames forever."""
    server = server_of(app)
    with open_page(app) as ws:
        assert receive(ws)["type"] == "hello"
        subscribe(ws, "motor.speed")

        def broken(*_: Any) -> bytes:
            raise KeyError("motor.speed")

        monkeypatch.setattr(server.hub, "frame", broken)
        closed = until(ws, is_type("close"), "a close")[-1]
    assert closed["code"] == 1011 and "server error making a frame: KeyError" in closed[
        "reason"]
    assert server.statistics().push_failures == 1


def test_pages_past_the_limit_are_closed_with_1013(app: TestClient) -> None:
    server = server_of(app)
    server.max_pages = 2
    with open_page(app) as one, open_page(app) as two:
        assert receive(one)["type"] == receive(two)["type"] == "hello"
        with open_page(app) as three:
            closed = receive(three)
        assert closed["type"] == "close" and closed["code"] == 1013
        assert "limit of 2 pages" in closed["reason"]
        stats = app.get("/api/status").json()["services"]["serve"]
        assert (stats["clients"], stats["clients_refused"], stats["max_clients"]) == (2, 1, 2)
    with open_page(app) as again:  # room again
        assert receive(again)["type"] == "hello"


def test_subscribes_over_the_limit_are_refused_and_counted(app: TestClient) -> None:
    server = server_of(app)
    server.subscribe_rate, server.subscribe_burst = 0.001, 3  # no refill within the test
    with open_page(app) as ws:
        assert receive(ws)["type"] == "hello"
        for signal in ("motor.speed", "motor.torque", "motor.current"):
            assert subscribe(ws, signal)["signals"] == [signal]
        ws.send_text(json.dumps({"type": "subscribe", "signals": ["motor.voltage"]}))
        error = until(ws, is_type("error"), "the refusal")[-1]
        assert error["limit"] == "subscribe" and "not applied" in error["message"]
        ws.send_text('{"type": "ping"}')
        until(ws, is_type("pong"), "pong")
        (page,) = server.pages
        assert page.client.signals == ["motor.current"]  # the last one applied stays
    stats = server.statistics()
    assert stats.subscribes == 3 and stats.subscribes_limited == 1


def test_create_app_writes_nothing(tmp_path: Path) -> None:
    """Before, create_app wrote <cache>/.web-token (a server on the LAN), the control
    key and the tag database; now serve() makes them, and create_app is given the token."""
    cache = tmp_path / "cache"
    cfg = configuration.build(None, {
        ("cache", "dir"): cache, ("channels", "dir"): SCHEMAS,
        ("exports", "dir"): tmp_path / "exports", ("web", "host"): "0.0.0.0",
        ("web", "port"): 0})
    with pytest.raises(ValueError, match="needs its token"):
        create_app(cfg)  # never an open server by a forgotten token
    app = create_app(cfg, "a-token-for-this-test")
    assert not cache.exists() and not (tmp_path / "exports").exists()
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/api/channels").status_code == 401  # the token given is asked for
    auth = {"Authorization": "Bearer a-token-for-this-test"}
    assert client.get("/api/tags", headers=auth).json() == []  # the store, made now
    assert (cache / "tags.sqlite").exists() and not (cache / ".web-token").exists()


def test_the_routes_that_touch_the_hub_run_on_the_event_loop(app: TestClient) -> None:
    """A sync route runs in FastAPI's thread pool, beside the loop that ingests."""
    paths = {"/api/channels", "/api/status", "/api/loss", "/api/alarms", "/api/range",
             "/api/captures"}
    endpoints = {(route.path, method): route.endpoint for route in app.app.routes
                 if getattr(route, "path", None) in paths
                 for method in getattr(route, "methods", ())}
    assert {p for p, _ in endpoints} == paths
    assert [k for k, fn in endpoints.items() if not inspect.iscoroutinefunction(fn)] == []
    overview = app.get("/api/status").json()
    assert overview["services"]["serve"]["running"] and overview["cache"]["bytes"] == 0
    assert app.get("/api/loss").json() == {"senders": [], "multicast": {}}
    assert app.delete("/api/channels/env").status_code == 204
    assert "env" not in {c["name"] for c in app.get("/api/channels").json()["channels"]}


def test_status_shows_the_pivot_jobs_and_what_scroll_back_keeps(app: TestClient) -> None:
    assert app.post("/api/pivot", json={"tag": "nosuch"}).status_code == 404
    assert app.post("/api/pivot", json={"start": "-1m"}).status_code == 202
    wait_until(lambda: app.get("/api/status").json()["services"]["serve"]["pivot_jobs"][
        "pending"] == 0, what="the pivot job to end")
    serve = app.get("/api/status").json()["services"]["serve"]
    assert sum(serve["pivot_jobs"]["ended"].values()) == 1
    assert set(serve["scrollback"]) == {"files_known", "summaries_made", "files_forgotten"}
