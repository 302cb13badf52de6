"""What a notebook widget's front end may ask of the kernel (speeddata.kernelbridge):
requests read into types, hostile ones refused by reason; the server's address and its
token read from what the user gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from speeddata import kernelbridge as kb
from speeddata.config import write_file
from speeddata.packaged import web_dir


def test_requests_are_read_into_their_types() -> None:
    bridge = kb.Bridge()
    assert bridge.read({"op": "modules"}) == kb.Modules()
    assert bridge.read({"op": "ws-open", "n": 3}) == kb.WsOpen(3)
    assert bridge.read({"op": "ws-send", "data": '{"type":"subscribe"}'}) == kb.WsSend(
        '{"type":"subscribe"}')
    assert bridge.read({"op": "ws-close"}) == kb.WsClose()
    fetch = bridge.read({"op": "fetch", "id": 7, "path": "api/range?signal=motor.speed"})
    assert fetch == kb.Fetch(7, "api/range", "signal=motor.speed")
    # the page asks "/api/channels" too: the same path of the server
    assert bridge.read({"op": "fetch", "id": 8, "path": "/api/channels"}) == kb.Fetch(
        8, "api/channels", "")
    assert bridge.statistics()["fetching"] == 2 and bridge.refused == {}


@pytest.mark.parametrize(("message", "reason"), [
    ("ws-open", "not an operation"),
    ({"op": 5}, "not an operation"),
    ({"op": "exec"}, "unknown operation"),
    ({"op": "ws-open"}, "ws-open: no socket number"),
    ({"op": "ws-open", "n": True}, "ws-open: no socket number"),
    ({"op": "ws-send", "data": b"x"}, "ws-send: not text, or too long"),
    ({"op": "ws-send", "data": "x" * (kb.MAX_TEXT + 1)}, "ws-send: not text, or too long"),
    ({"op": "fetch", "id": "1", "path": "api/range"}, "fetch: no id or path"),
    ({"op": "fetch", "id": 1, "path": "api/pivot"}, "fetch: not a path of the read-only API"),
    ({"op": "fetch", "id": 1, "path": "../../etc/passwd"},
     "fetch: not a path of the read-only API"),
    ({"op": "fetch", "id": 1, "path": "http://elsewhere/api/range"},
     "fetch: not a path of the read-only API"),
    ({"op": "fetch", "id": 1, "path": "api/range?" + "x" * (kb.MAX_QUERY + 1)},
     "fetch: query too long"),
])
def test_hostile_requests_are_refused_and_counted_by_reason(message: object,
                                                            reason: str) -> None:
    bridge = kb.Bridge()
    assert bridge.read(message) is None
    assert bridge.refused == {reason: 1} and bridge.fetching == 0


def test_gets_under_way_are_bounded() -> None:
    bridge = kb.Bridge()
    for n in range(kb.MAX_FETCHES):
        assert bridge.read({"op": "fetch", "id": n, "path": "api/alarms"}) is not None
    assert bridge.read({"op": "fetch", "id": 99, "path": "api/alarms"}) is None
    assert bridge.refused == {"fetch: too many under way": 1}
    bridge.fetched()
    assert bridge.read({"op": "fetch", "id": 100, "path": "api/alarms"}) is not None


def test_the_token_comes_from_the_argument_the_link_or_the_data_directory(
        tmp_path: Path) -> None:
    config = write_file(tmp_path / "c.toml", {"cache": {"dir": str(tmp_path / "cache")}})
    empty = kb.server("http://127.0.0.1:8050", config=config)
    assert empty == kb.Server("http://127.0.0.1:8050/", None)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / ".web-token").write_text("from-the-file\n")
    assert kb.server("http://127.0.0.1:8050/", config=config).token == "from-the-file"
    link = kb.server("http://10.0.0.2:8050/?token=from-the-link", config=config)
    assert link == kb.Server("http://10.0.0.2:8050/", "from-the-link")
    assert kb.server(link.base + "?token=x", token="given", config=config).token == "given"
    configured = write_file(tmp_path / "d.toml", {"cache": {"dir": str(tmp_path / "cache")},
                                                  "web": {"token": "from-the-config"}})
    assert kb.server("http://h:1/", config=configured).token == "from-the-config"
    assert link.ws_url == "ws://10.0.0.2:8050/ws"
    assert link.headers() == {"Authorization": "Bearer from-the-link"}
    assert link.url(kb.Fetch(1, "api/range", "a=1")) == "http://10.0.0.2:8050/api/range?a=1"


@pytest.mark.parametrize("url", ["127.0.0.1:8050", "ftp://h/", "http:///", "http://h/?x=1"])
def test_an_address_it_cannot_use_is_said(url: str) -> None:
    with pytest.raises(kb.BridgeError, match="stripchart url"):
        kb.server(url, token="t")


def test_answers_are_what_the_front_end_builds_a_response_from() -> None:
    fetch = kb.Fetch(4, "api/range", "")
    assert kb.answer(fetch, 404, b'{"detail": "no"}', "application/json") == {
        "op": "fetch", "id": 4, "status": 404, "body": '{"detail": "no"}',
        "type": "application/json"}
    assert kb.failure(fetch, "refused") == {"op": "fetch", "id": 4, "error": "refused"}


def test_the_page_modules_are_the_pages_own() -> None:
    found = kb.page_modules(web_dir())
    for name in ("chart.js", "chartmath.js", "store.js", "protocol.js", "connection.js",
                 "style.css"):
        assert found[name] == ((web_dir() / ("css" if name.endswith(".css") else "js") / name)
                               .read_text())
