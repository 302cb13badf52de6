"""``[web] compression``: which pages get permessage-deflate, decided per connection by
the server's own WebSocket protocol on a real uvicorn and a real client."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from websockets.sync.client import connect

from speeddata.bench.services import free_port
from speeddata.stripchart.app import _abortable_websocket, deflates
from speeddata.stripchart.guard import reachable_address
from tests.helpers import TIMEOUT, wait_until


@pytest.mark.parametrize(("setting", "peer", "expected"), [
    ("auto", "127.0.0.1", False), ("auto", "::1", False), ("auto", "192.168.1.20", True),
    ("auto", "10.0.0.7", True), ("auto", None, True),
    ("on", "127.0.0.1", True), ("on", "192.168.1.20", True),
    ("off", "127.0.0.1", False), ("off", "192.168.1.20", False)])
def test_who_gets_deflate(setting: str, peer: str | None, expected: bool) -> None:
    assert deflates(setting, peer) is expected


async def echo(scope: dict, receive, send) -> None:  # the smallest WebSocket app
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "bytes": bytes(10_000)})
    await receive()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[int]:
    """uvicorn on every interface with the server's protocol, ``[web] compression`` the
    test's parameter; its port."""
    port = free_port(socket.SOCK_STREAM)
    config = uvicorn.Config(echo, host="0.0.0.0", port=port, log_level="warning",
                            ws=_abortable_websocket(request.param), lifespan="on")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    wait_until(lambda: running.started, TIMEOUT, "uvicorn started")
    yield port
    running.should_exit = True
    thread.join(TIMEOUT)


def negotiated(host: str, port: int) -> str | None:
    with connect(f"ws://{host}:{port}/ws") as ws:  # the client offers deflate, as browsers do
        assert ws.recv(timeout=TIMEOUT) == bytes(10_000)
        return ws.response.headers.get("Sec-WebSocket-Extensions")


def lan_address() -> str:
    address = reachable_address("0.0.0.0")
    if address.startswith("127."):
        pytest.skip("this machine has no address but loopback")
    return address


@pytest.mark.parametrize("server", ["auto"], indirect=True)
def test_auto_spares_pages_on_this_host_and_deflates_for_the_others(server: int) -> None:
    assert negotiated("127.0.0.1", server) is None
    assert "permessage-deflate" in negotiated(lan_address(), server)


@pytest.mark.parametrize("server", ["on"], indirect=True)
def test_on_deflates_for_every_page(server: int) -> None:
    assert "permessage-deflate" in negotiated("127.0.0.1", server)


@pytest.mark.parametrize("server", ["off"], indirect=True)
def test_off_deflates_for_none(server: int) -> None:
    assert negotiated("127.0.0.1", server) is None
    assert negotiated(lan_address(), server) is None
