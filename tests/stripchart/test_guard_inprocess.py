"""The guard in process (Starlette's TestClient): bodies counted as they arrive, origins
by scheme, host and port, the token file's damage, and what a browser without the token
sees."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from speeddata.errors import ConfigError
from speeddata.stripchart.guard import MAX_BODY, TOKEN_FILE, Guard, resolve_token, stored_token

BASE = "http://127.0.0.1:8080"
WS = "ws://127.0.0.1:8080/ws"


def make_client(token: str | None = None) -> tuple[TestClient, list[int]]:
    """A client of a small app behind the guard, and the sizes of the bodies it read."""
    read: list[int] = []

    async def echo(request: Request) -> JSONResponse:
        read.append(len(await request.body()))
        return JSONResponse({"read": read[-1]}, status_code=201)

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "hello"})
        await websocket.close()

    app = Starlette(routes=[Route("/api/echo", echo, methods=["GET", "POST"]),
                            WebSocketRoute("/ws", stream)])
    return TestClient(Guard(app, token=token), base_url=BASE), read


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    client, read = make_client()
    answer = client.post("/api/echo", content=chunks(200 * MAX_BODY))  # 200 MiB, no length
    assert answer.status_code == 413 and f"over {MAX_BODY} bytes" in answer.json()["detail"]
    assert read == []  # the app never saw it
    answer = client.post("/api/echo", content=chunks(MAX_BODY))  # the limit itself passes
    assert answer.status_code == 201 and answer.json() == {"read": MAX_BODY}
    assert client.post("/api/echo", content=b"{}").json() == {"read": 2}


@pytest.mark.parametrize(("headers", "allowed"), [
    ({}, True),  # curl, scripts, the CLI
    ({"Origin": BASE}, True),
    ({"Origin": "http://127.0.0.1:9999"}, False),  # Jupyter, Grafana on another port
    ({"Origin": "http://127.0.0.1"}, False),  # port 80
    ({"Origin": "https://127.0.0.1:8080"}, False),
    ({"Origin": "http://localhost:8080"}, False),  # another host name is another origin
    ({"Origin": "null"}, False),
    ({"Origin": "garbage"}, False),
    ({"Sec-Fetch-Site": "same-origin", "Origin": BASE}, True),
    ({"Sec-Fetch-Site": "none"}, True),  # typed by the user
    ({"Sec-Fetch-Site": "same-site"}, False),
    ({"Sec-Fetch-Site": "cross-site"}, False),
])
def test_writes_are_taken_from_this_origin_only(headers: dict[str, str],
                                                allowed: bool) -> None:
    client, _ = make_client()
    answer = client.post("/api/echo", content=b"{}", headers=headers)
    assert answer.status_code == (201 if allowed else 403), answer.text
    assert client.get("/api/echo", headers=headers).status_code == 201  # reads pass


def test_a_websocket_from_another_port_is_refused() -> None:
    client, _ = make_client()
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(
            WS, headers={"Origin": "http://127.0.0.1:9999"}):
        pass
    assert refused.value.code == 1008 and not refused.value.reason  # it learns nothing
    with client.websocket_connect(WS, headers={"Origin": BASE}) as ws:
        assert ws.receive_json() == {"type": "hello"}


def test_a_page_without_the_token_is_told_why() -> None:
    client, read = make_client(token="s3cret-token")
    # accepted only to say why it closes
    with client.websocket_connect(WS) as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    assert closed.value.code == 1008 and closed.value.reason.startswith("token needed")
    answer = client.get("/api/echo?start=-5m&x=%22%3E", headers={"Accept": "text/html"})
    assert answer.status_code == 401 and answer.headers["content-type"].startswith("text/html")
    assert 'name="token"' in answer.text and "speeddata status --url" in answer.text
    assert '<input type="hidden" name="start" value="-5m">' in answer.text  # the view kept
    assert 'value="&quot;&gt;"' in answer.text  # escaped
    answer = client.get("/api/echo")
    assert answer.status_code == 401 and "?token=" in answer.json()["detail"]
    assert read == []
    answer = client.get("/api/echo?start=-5m&token=s3cret-token", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/api/echo?start=-5m"


def test_an_empty_token_is_never_taken_for_no_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty web token"):
        Guard(None, token="")
    (tmp_path / TOKEN_FILE).write_text("")  # disk full between create and write
    assert stored_token(tmp_path) is None
    made = resolve_token("", "0.0.0.0", tmp_path)
    assert made and len(made) >= 32 and stored_token(tmp_path) == made
    (tmp_path / TOKEN_FILE).write_bytes(b"\xff\xfe\x00 junk")
    remade = resolve_token("", "0.0.0.0", tmp_path)
    assert remade and remade != made and stored_token(tmp_path) == remade
    assert not list(tmp_path.glob("*.part"))


def test_servers_starting_at_once_agree_on_one_token(tmp_path: Path) -> None:
    tokens: list[str | None] = []
    threads = [threading.Thread(target=lambda: tokens.append(
        resolve_token("", "0.0.0.0", tmp_path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tokens) == 8 and len(set(tokens)) == 1 and tokens[0]


def test_a_token_path_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / TOKEN_FILE).mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        resolve_token("", "0.0.0.0", tmp_path)
