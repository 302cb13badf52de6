"""Refusing requests a page on another site made the browser send.

Two attacks reach a server on 127.0.0.1 or the LAN through the user's own browser:
- **DNS rebinding**: a site's name is made to resolve to this server, so its scripts
  read and call the API as same-origin. Its requests carry that name in ``Host``: only
  names this server is known by (and any IP address, which cannot be rebound) pass.
- **Cross-site requests**: a form or ``fetch`` from another site (a "simple" POST needs
  no preflight) or a WebSocket opened from it. Browsers send ``Origin`` (and
  ``Sec-Fetch-Site``) with them: a state-changing request or a WebSocket whose origin is
  not this server is refused.
Tools that are not browsers (curl, the CLI, scripts) send neither header and pass.
Bodies over 1 MiB are refused before they are read.

A server reachable from the network also wants a token (as Jupyter does): every request
and WebSocket must carry it, as ``Authorization: Bearer TOKEN``, as the cookie the
server sets, or once as ``?token=TOKEN`` in the URL, which sets the cookie and redirects
to the same page without it (so the token does not stay in the address bar).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.responses import JSONResponse, RedirectResponse

from speeddata.errors import ForbiddenError, SpeeddataError, TooLargeError

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
COOKIE = "speeddata_token"
TOKEN_FILE = ".web-token"
MAX_BODY = 2**20  # bytes: no request of the API needs more


def local_names(extra: Iterable[str] = ()) -> set[str]:
    """Host names this server answers to besides IP addresses."""
    name = socket.gethostname().lower()
    return {"localhost", name, f"{name}.local", *(e.lower() for e in extra)}


def host_of(value: str) -> str:
    """The host part of a ``Host`` header or an origin's netloc, lower case, no port."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8080
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(host_header: str, names: set[str]) -> bool:
    host = host_of(host_header)
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host in names


def refusal(method: str, headers: dict[str, str], names: set[str], websocket: bool,
            read_only: bool = False) -> SpeeddataError | None:
    """Why a request must be refused, or None. ``headers`` have lower-case names."""
    host = headers.get("host", "")
    if not host_allowed(host, names):
        return ForbiddenError(
            f"host {host_of(host)[:100]!r} is not a name of this server (DNS rebinding "
            "guard); add it to [web] allowed_hosts if it is yours")
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY:
        return TooLargeError(f"request body over {MAX_BODY} bytes")
    if websocket or method not in SAFE_METHODS:
        if headers.get("sec-fetch-site") == "cross-site":
            return ForbiddenError("cross-site request refused")
        origin = headers.get("origin")
        if origin and origin != "null" and host_of(urlsplit(origin).netloc) != host_of(host):
            return ForbiddenError(
                f"origin {origin[:100]!r} is not this server: cross-site request refused")
        if origin == "null":
            return ForbiddenError("requests from an opaque origin are refused")
    if read_only and method not in SAFE_METHODS:
        return ForbiddenError(
            "this server is read-only: it needs no token on the network ([web] token = "
            "'off'), so it takes no changes; set [web] open_writes = true to allow them")
    return None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def reachable_address(host: str) -> str:
    """The address to print for a server listening on ``host``: for all interfaces, this
    host's LAN address (the one its default route leaves from), which a laptop can reach
    where the host name may not resolve."""
    if host not in ("0.0.0.0", "::", ""):
        return f"[{host}]" if ":" in host else host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, a route is chosen
            return probe.getsockname()[0]
        except OSError:  # no route off this host
            return "127.0.0.1"


def resolve_token(setting: str, host: str, cache_dir: Path) -> str | None:
    """The token the server requires, or None. ``setting``: "" = one on any address but
    loopback, made once and kept (owner-only) in ``<cache>/.web-token``; "off" = none."""
    if setting == "off" or (not setting and is_loopback(host)):
        return None
    if setting:
        return setting
    stored = cache_dir / TOKEN_FILE
    try:
        return stored.read_text().strip()
    except FileNotFoundError:
        token = secrets.token_urlsafe(24)
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token


def stored_token(cache_dir: Path) -> str | None:
    """The token kept in the cache directory (for 'speeddata status --url'), if any."""
    try:
        return (cache_dir / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def presented(headers: dict[str, str], query: str) -> tuple[str, str]:
    """(the token a request carries, how: "header", "cookie", "query" or "")."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), "header"
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value, "cookie"
    for name, value in parse_qsl(query):
        if name == "token":
            return value, "query"
    return "", ""


class Guard:
    """ASGI middleware applying ``refusal`` to every HTTP request and WebSocket, and the
    token when the server has one."""

    def __init__(self, app: Any, allowed_hosts: Iterable[str] = (),
                 token: str | None = None, read_only: bool = False) -> None:
        self.app = app
        self.names = local_names(allowed_hosts)
        self.token = token
        self.read_only = read_only
        self.refused = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in reversed(scope["headers"])}
            why = refusal(scope.get("method", "GET"), headers, self.names,
                          scope["type"] == "websocket", self.read_only)
            if why is not None:
                self.refused += 1
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008,
                                "reason": str(why)[:120]})
                else:
                    await JSONResponse({"detail": str(why)}, status_code=why.http_status)(
                        scope, receive, send)
                return
            if self.token is not None:
                query = scope.get("query_string", b"").decode("latin-1")
                given, how = presented(headers, query)
                if not hmac.compare_digest(given.encode(), self.token.encode()):
                    self.refused += 1
                    if scope["type"] == "websocket":
                        await send({"type": "websocket.close", "code": 1008,
                                    "reason": "token needed"})
                    else:
                        await JSONResponse({"detail": (
                            "this server needs its token: open the URL that './start' or "
                            "'speeddata status --url' prints on the server's host (it ends "
                            "in ?token=...), or send 'Authorization: Bearer TOKEN'")},
                            status_code=401)(scope, receive, send)
                    return
                if how == "query" and scope["type"] == "http":
                    rest = urlencode([(k, v) for k, v in parse_qsl(query) if k != "token"])
                    response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""),
                                                status_code=303)
                    response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
