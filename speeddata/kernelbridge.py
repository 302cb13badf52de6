"""What a notebook widget's front end may ask the kernel to do for it, checked.

The widget draws in the notebook's page, whose origin is Jupyter's, not the stripchart
server's: the server's guard refuses another site's WebSocket, and its token must not
reach the notebook's page (a saved notebook, an extension, a shared screen). So the page
modules' network goes through the kernel, which holds the token: a WebSocket to ``/ws``
relayed message for message, and GETs of the read-only API. This module is that
conversation without sockets: a front end's message read into a typed request (or
refused, counted by reason), the server's address and token read from what the user
gave, and the answers as the front end expects them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from speeddata.errors import SpeeddataError

# GETs the page makes (refusal reasons, channels, scroll-back, badges): nothing that
# changes the server, nothing that exports
ALLOWED_PATHS = ("api/channels", "api/range", "api/alarms", "api/status", "api/loss",
                 "api/captures")
MAX_QUERY = 4096  # characters of a GET's query: a range request needs under 200
MAX_TEXT = 65536  # characters of a text message to /ws: a subscription of many signals
MAX_FETCHES = 8  # GETs under way at once; the page has one per signal of a paused chart


class BridgeError(SpeeddataError):
    """A widget given an address or a token it cannot use."""


@dataclass(frozen=True)
class WsOpen:
    """Open (or open again) the WebSocket to the server's /ws; ``n`` names it in what
    comes back (the front end drops what a socket it gave up still gets)."""
    n: int


@dataclass(frozen=True)
class WsSend:
    text: str


@dataclass(frozen=True)
class WsClose:
    pass


@dataclass(frozen=True)
class Fetch:
    id: int
    path: str  # one of ALLOWED_PATHS
    query: str


@dataclass(frozen=True)
class Modules:
    """The page's modules and stylesheet, asked once when the widget renders."""


Request = WsOpen | WsSend | WsClose | Fetch | Modules


@dataclass(frozen=True)
class Server:
    """A stripchart server's address (``http://host:port/``, no token) and its token."""
    base: str
    token: str | None

    @property
    def ws_url(self) -> str:
        return "ws" + self.base[4:] + "ws"

    def url(self, fetch: Fetch) -> str:
        return self.base + fetch.path + (f"?{fetch.query}" if fetch.query else "")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def server(url: str, token: str | None = None, config: str | Path | None = None) -> Server:
    """The server at ``url`` and the token to give it: ``token`` when given, else the
    ``?token=`` of a link ``speeddata status --url`` printed, else the one of the data
    directory (``config``'s, or the default's): ``[web] token``, or the token file the
    server keeps in its cache directory. None where there is none (a loopback server)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BridgeError(f"stripchart url {url!r}: write it as http://host:port/, as "
                          "'speeddata status --url' prints it")
    query = parse_qsl(parts.query)
    given = [v for k, v in query if k == "token"]
    rest = urlencode([(k, v) for k, v in query if k != "token"])
    if rest:
        raise BridgeError(f"stripchart url {url!r}: only ?token= may follow the address")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    found = token or (given[0] if given else None) or stored(config)
    return Server(base, found or None)


def stored(config: str | Path | None) -> str | None:
    """The token of a data directory's server, as ``speeddata status --url`` finds it."""
    from speeddata import config as settings
    from speeddata.stripchart.guard import stored_token

    try:
        found = settings.build(Path(config) if config is not None else None)
    except SpeeddataError:
        return None  # no usable config here: the server says "token needed" if it needs one
    if found.web.token not in ("", "off"):
        return found.web.token
    return stored_token(found.cache.dir)


class Bridge:
    """Reads what a front end sends; counts what it refuses, by reason."""

    def __init__(self) -> None:
        self.refused: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.fetching = 0  # GETs under way (the I/O loop says when one ends)

    def read(self, message: Any) -> Request | None:
        """The request ``message`` (a custom message's content) makes, or None (refused,
        counted): the front end runs in a browser page and is not trusted more than one."""
        request, why = self._read(message)
        if request is None:
            self.refused[why] += 1
        else:
            self.requests[type(request).__name__] += 1
        return request

    def _read(self, message: Any) -> tuple[Request | None, str]:
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            return None, "not an operation"
        op = message["op"]
        if op == "modules":
            return Modules(), ""
        if op == "ws-open":
            n = message.get("n")
            if not isinstance(n, int) or isinstance(n, bool):
                return None, "ws-open: no socket number"
            return WsOpen(n), ""
        if op == "ws-close":
            return WsClose(), ""
        if op == "ws-send":
            text = message.get("data")
            if not isinstance(text, str) or len(text) > MAX_TEXT:
                return None, "ws-send: not text, or too long"
            return WsSend(text), ""
        if op == "fetch":
            return self._fetch(message)
        return None, "unknown operation"

    def _fetch(self, message: dict) -> tuple[Request | None, str]:
        ident, path = message.get("id"), message.get("path")
        if not isinstance(ident, int) or isinstance(ident, bool) or not isinstance(path, str):
            return None, "fetch: no id or path"
        if self.fetching >= MAX_FETCHES:
            return None, "fetch: too many under way"
        where, _, query = path.lstrip("/").partition("?")
        if where not in ALLOWED_PATHS:
            return None, "fetch: not a path of the read-only API"
        if len(query) > MAX_QUERY:
            return None, "fetch: query too long"
        self.fetching += 1
        return Fetch(ident, where, query), ""

    def fetched(self) -> None:
        """A GET has its answer (or its error)."""
        self.fetching = max(0, self.fetching - 1)

    def statistics(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "refused": dict(self.refused),
                "fetching": self.fetching}


def answer(fetch: Fetch, status: int, body: bytes, content_type: str) -> dict[str, Any]:
    """A GET's answer as the front end builds its ``Response`` from it."""
    return {"op": "fetch", "id": fetch.id, "status": status,
            "body": body.decode("utf-8", "replace"), "type": content_type}


def failure(fetch: Fetch, error: str) -> dict[str, Any]:
    """No answer (the server is down): the front end's fetch rejects, as a browser's."""
    return {"op": "fetch", "id": fetch.id, "error": error}


def page_modules(web: Path) -> dict[str, str]:
    """The page's ES modules and stylesheet by name, as the front end loads them."""
    found = {p.name: p.read_text(encoding="utf-8") for p in sorted((web / "js").glob("*.js"))}
    found["style.css"] = (web / "css" / "style.css").read_text(encoding="utf-8")
    return found
