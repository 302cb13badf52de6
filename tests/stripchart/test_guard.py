"""The cross-site and DNS-rebinding guard: the decision on literal headers, then the real
server answering what a hostile page's browser would send."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from speeddata.errors import ForbiddenError, TooLargeError
from speeddata.stripchart.guard import host_allowed, local_names, refusal
from tests.helpers import relay_settings, start_relay, start_serve
from tests.stripchart.conftest import Stack

NAMES = local_names(["rig.example"])


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1:8080", True), ("localhost:8080", True), ("[::1]:8080", True),
    ("192.168.1.20:8080", True), ("rig.example", True), ("RIG.example:80", True),
    ("attacker.example", False), ("attacker.example:8080", False), ("", False),
])
def test_host_names(host: str, allowed: bool) -> None:
    assert host_allowed(host, NAMES) is allowed


def test_refusals() -> None:
    local = {"host": "127.0.0.1:8080"}
    assert refusal("GET", local, NAMES, websocket=False) is None
    assert refusal("POST", local, NAMES, websocket=False) is None  # curl, scripts, the CLI
    assert refusal("POST", {**local, "origin": "http://127.0.0.1:8080"}, NAMES, False) is None
    cross = refusal("POST", {**local, "origin": "http://evil.example"}, NAMES, False)
    assert isinstance(cross, ForbiddenError) and "cross-site" in str(cross)
    assert "cross-site" in str(refusal("DELETE", {**local, "sec-fetch-site": "cross-site"},
                                       NAMES, False))
    assert refusal("POST", {**local, "sec-fetch-site": "same-site"}, NAMES, False)
    assert refusal("POST", {**local, "origin": "http://127.0.0.1:9999"}, NAMES, False)
    assert refusal("GET", {**local, "origin": "http://evil.example"}, NAMES, False) is None
    assert refusal("GET", {**local, "origin": "http://evil.example"}, NAMES, True)
    assert "DNS rebinding" in str(refusal("GET", {"host": "attacker.example"}, NAMES, False))
    large = refusal("POST", {**local, "content-length": str(2**21)}, NAMES, False)
    assert isinstance(large, TooLargeError) and large.http_status == 413
    # a kiosk with no token on the network reads, and changes nothing
    assert refusal("GET", local, NAMES, False, read_only=True) is None
    assert refusal("GET", local, NAMES, True, read_only=True) is None  # the live WebSocket
    assert "read-only" in str(refusal("POST", local, NAMES, False, read_only=True))
    assert refusal("DELETE", local, NAMES, False, read_only=True).http_status == 403


def call(stack: Stack, method: str, path: str, body: object = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(stack.serve.url.rstrip("/") + path, data=data,
                                     method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_server_refuses_what_another_site_makes_a_browser_send(stack: Stack) -> None:
    assert call(stack, "POST", "/api/tags", {"name": "run1"})[0] == 201
    # DNS rebinding: the attacker's name in Host, even for a read
    code, body = call(stack, "GET", "/api/tags", headers={"Host": "attacker.example"})
    assert code == 403 and "DNS rebinding" in body["detail"]
    # a cross-site "simple" POST (no preflight) must not stop the tag
    code, _ = call(stack, "POST", "/api/tags/run1/stop",
                   headers={"Origin": "http://evil.example"})
    assert code == 403
    assert call(stack, "GET", "/api/tags")[1][0]["end"] == "open"
    # a WebSocket opened from another site gets no data
    ws_url = stack.ws_url
    with pytest.raises(InvalidStatus):
        connect(ws_url, origin="http://evil.example", open_timeout=30)
    with connect(ws_url, origin=stack.serve.url.rstrip("/"), open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "hello"
    # the page itself (same origin) still works
    code, body = call(stack, "POST", "/api/tags/run1/stop",
                      headers={"Origin": stack.serve.url.rstrip("/")})
    assert code == 200 and body["end"] != "open"


def test_status_shows_no_pids_or_paths(stack: Stack) -> None:
    code, body = call(stack, "GET", "/api/status")
    text = json.dumps(body)
    assert code == 200 and '"pid"' not in text and str(stack.tmp) not in text
    assert body["services"]["serve"]["kernel_drops"] == 0  # the groups' listeners' drops


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("hostile")
    relay = start_relay(tmp, relay_settings(tmp))
    serve = start_serve(tmp, relay.config_path)
    yield Stack(relay, serve, tmp)
    serve.stop()
    relay.stop()


def test_a_large_body_is_refused_before_it_is_read(shared_stack: Stack) -> None:
    import http.client
    from urllib.parse import urlsplit

    address = urlsplit(shared_stack.serve.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    conn.putrequest("POST", "/api/tags")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(5_000_000))
    conn.endheaders()  # not one byte of the body sent: the answer comes anyway
    response = conn.getresponse()
    assert response.status == 413
    assert "over 1048576 bytes" in json.loads(response.read())["detail"]
    conn.close()


def test_pivot_jobs_are_bounded_and_can_be_cancelled(shared_stack: Stack) -> None:
    """Many pivots at once: the queue takes 16, says 503 to the next, cancels the waiting
    ones, and forgets none that waits or runs."""
    stack = shared_stack
    ids = []
    for _ in range(16):
        code, job = call(stack, "POST", "/api/pivot", {"start": "-1m"})
        assert code == 202, job
        ids.append(job["id"])
    code, answer = call(stack, "POST", "/api/pivot", {"start": "-1m"})
    assert code == 503 and "cancel one" in answer["detail"]
    states = {call(stack, "DELETE", f"/api/pivot/{i}")[1]["state"] for i in ids[1:]}
    assert states <= {"cancelled", "cancelling", "failed"}
    listed = {j["id"]: j for j in call(stack, "GET", "/api/pivot")[1]}
    assert set(ids) <= set(listed)
    assert call(stack, "POST", "/api/pivot", {"start": "-1m"})[0] == 202  # room again


def test_the_token_is_made_once_for_the_network_and_not_for_loopback(tmp_path) -> None:
    import stat

    from speeddata.stripchart.guard import TOKEN_FILE, resolve_token, stored_token

    assert resolve_token("", "127.0.0.1", tmp_path) is None
    assert resolve_token("off", "0.0.0.0", tmp_path) is None
    assert resolve_token("mine", "127.0.0.1", tmp_path) == "mine"
    made = resolve_token("", "0.0.0.0", tmp_path)
    assert made and len(made) >= 32 and resolve_token("", "192.168.1.5", tmp_path) == made
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600
    assert stored_token(tmp_path) == made


@pytest.fixture
def token_stack(tmp_path) -> Iterator[Stack]:
    relay = start_relay(tmp_path, relay_settings(tmp_path, web={"token": "s3cret-token"}))
    serve = start_serve(tmp_path, relay.config_path)  # its readiness probe gets a 401: up
    yield Stack(relay, serve, tmp_path)
    serve.stop()
    relay.stop()


def test_a_server_with_a_token_refuses_everything_without_it(token_stack: Stack) -> None:
    import http.client
    import subprocess
    import sys
    from urllib.parse import urlsplit

    stack = token_stack
    code, body = call(stack, "GET", "/api/channels")
    assert code == 401 and "?token=" in body["detail"]
    assert call(stack, "GET", "/")[0] == 401
    assert call(stack, "GET", "/api/channels",
                headers={"Authorization": "Bearer s3cret-token"})[0] == 200
    assert call(stack, "GET", "/api/channels", headers={"Authorization": "Bearer nope"})[0] == 401
    # ?token= once: a cookie, and the same page without the token in the address
    address = urlsplit(stack.serve.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    conn.request("GET", "/exports.html?token=s3cret-token&x=1")
    response = conn.getresponse()
    response.read()
    assert response.status == 303 and response.getheader("Location") == "/exports.html?x=1"
    cookie = response.getheader("Set-Cookie").split(";")[0]
    assert cookie == "speeddata_token=s3cret-token"
    assert "HttpOnly" in response.getheader("Set-Cookie")
    assert call(stack, "GET", "/api/tags", headers={"Cookie": cookie})[0] == 200
    # opened only to say why it closes
    with connect(stack.ws_url, open_timeout=30) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=30)
    assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason.startswith("token")
    with connect(stack.ws_url, additional_headers={"Cookie": cookie}, open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "hello"
    url = subprocess.run([sys.executable, "-m", "speeddata", "status", "--url", "--config",
                          str(stack.relay.config_path)], capture_output=True, text=True,
                         timeout=30).stdout.strip()
    assert url.endswith("/?token=s3cret-token")


def test_every_route_of_the_api_needs_the_token(token_stack: Stack) -> None:
    """The routes come from the server's own OpenAPI schema, so a new one cannot slip
    through; each answers 401 without the token and something else with it."""
    bearer = {"Authorization": "Bearer s3cret-token"}
    schema = call(token_stack, "GET", "/openapi.json", headers=bearer)[1]
    routes = [(method.upper(), path.replace("{", "").replace("}", ""))
              for path, methods in schema["paths"].items() for method in methods]
    assert len(routes) >= 10 and ("POST", "/api/tags") in routes

    def status(method: str, path: str, headers: dict[str, str]) -> int:
        data = b"{}" if method in ("POST", "PUT") else None
        request = urllib.request.Request(token_stack.serve.url.rstrip("/") + path, data=data,
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    for method, path in [*routes, ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/")]:
        assert status(method, path, {}) == 401, (method, path)
        assert status(method, path, bearer) != 401, (method, path)


def test_a_chunked_body_is_cut_off_at_the_limit(shared_stack: Stack) -> None:
    """No length to check: uvicorn hands the chunks on, the guard counts them and
    answers 413 at 1 MiB, while the client is still sending (the rest is never read)."""
    import http.client
    from urllib.parse import urlsplit

    address = urlsplit(shared_stack.serve.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    conn.putrequest("POST", "/api/channels")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"x" * 65536
    sent = 0
    with contextlib.suppress(OSError):  # the server stops reading at the limit
        while sent < 200 * 2**20:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    response = conn.getresponse()
    assert response.status == 413 and "over 1048576 bytes" in response.read().decode()
    assert sent < 50 * 2**20
    conn.close()
    assert call(shared_stack, "GET", "/api/channels")[0] == 200
