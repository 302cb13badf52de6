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
Bodies over 1 MiB are refused: by their ``Content-Length`` before they are read, and
by the bytes that arrive (a chunked body says no length).

A server reachable from the network also wants a token (as Jupyter does): every request
and WebSocket must carry it, as ``Authorization: Bearer TOKEN``, as the cookie the
server sets, or once as ``?token=TOKEN`` in the URL, which sets the cookie and redirects
to the same page without it (so the token does not stay in the address bar).
"""

from __future__ import annotations

import fcntl
import hmac
import html
import ipaddress
import logging
import os
import re
import secrets
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse

from speeddata.errors import (
    ConfigError,
    ForbiddenError,
    SpeeddataError,
    TooLargeError,
    UnauthorizedError,
)

log = logging.getLogger("speeddata.stripchart")

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
COOKIE = "speeddata_token"
TOKEN_FILE = ".web-token"
MAX_BODY = 2**20  # bytes: no request of the API needs more
DEFAULT_PORTS = {"http": 80, "https": 443}
TOKEN_CHARS = re.compile(r"[!-~]{1,1024}")  # what a stored token may be: ASCII, no space


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


def port_of(value: str, scheme: str) -> int | None:
    """The port of a ``Host`` header or netloc, the scheme's default where it has none,
    None where it is not a port."""
    value = value.strip()
    tail = value[value.find("]") + 1:] if value.startswith("[") else (
        value if value.count(":") == 1 else "")
    if ":" not in tail:
        return DEFAULT_PORTS.get(scheme)
    digits = tail.rsplit(":", 1)[1]
    return int(digits) if digits.isdigit() and len(digits) <= 5 else None


def same_origin(origin: str, scheme: str, host_header: str) -> bool:
    """Whether a browser's ``Origin`` is this server as the request reached it: scheme,
    host and port alike (a page on another port of this host is another site)."""
    parts = urlsplit(origin.strip())
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    if parts.scheme.lower() != scheme or not parts.netloc:
        return False
    return (host_of(parts.netloc) == host_of(host_header)
            and port_of(parts.netloc, scheme) == port_of(host_header, scheme))


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
            read_only: bool = False, scheme: str = "http") -> SpeeddataError | None:
    """Why a request must be refused, or None. ``headers`` have lower-case names;
    ``scheme`` is the one the request came by (the ASGI scope's)."""
    host = headers.get("host", "")
    if not host_allowed(host, names):
        return ForbiddenError(
            f"host {host_of(host)[:100]!r} is not a name of this server (DNS rebinding "
            "guard); add it to [web] allowed_hosts if it is yours")
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY:
        return TooLargeError(f"request body over {MAX_BODY} bytes")
    if websocket or method not in SAFE_METHODS:
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return ForbiddenError(f"{site[:20]} request refused: only this server's own "
                                  "pages may make changes or open its WebSocket")
        origin = headers.get("origin")
        if origin == "null":
            return ForbiddenError("requests from an opaque origin are refused")
        if origin and not same_origin(origin, scheme, host):
            return ForbiddenError(
                f"origin {origin[:100]!r} is not this server: cross-site request refused")
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
    loopback, made once and kept (owner-only) in ``<cache>/.web-token``; "off" = none.

    A token file that is empty or unreadable (a disk full between create and write) is
    as good as missing: a new token replaces it, never "no token". Servers starting at
    once take turns on a lock of the cache directory, so they agree on one token."""
    if setting == "off" or (not setting and is_loopback(host)):
        return None
    if setting:
        return setting
    cache_dir.mkdir(parents=True, exist_ok=True)
    stored = cache_dir / TOKEN_FILE
    lock = os.open(cache_dir, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        token = stored_token(cache_dir)
        if token is None:
            if stored.exists():
                log.warning("%s was empty or unreadable: a new token replaces it", stored)
            token = secrets.token_urlsafe(24)
            _write_atomically(stored, token + "\n")
        return token
    finally:
        os.close(lock)  # and the lock with it


def _write_atomically(path: Path, text: str) -> None:
    """Owner-only, complete or not there: written beside, synced, then renamed."""
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except IsADirectoryError:
        part.unlink(missing_ok=True)
        raise ConfigError(f"{path} is a directory: remove it, and the server makes its "
                          "token there") from None
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def stored_token(cache_dir: Path) -> str | None:
    """The token kept in the cache directory (for 'speeddata status --url'), or None
    where there is none that could be one (missing, empty, unreadable, not text)."""
    try:
        token = (cache_dir / TOKEN_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token if TOKEN_CHARS.fullmatch(token) else None


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


TOKEN_NEEDED = ("this server needs its token: open the URL that './start' or 'speeddata "
                "status --url' prints on the server's host (it ends in ?token=...), or "
                "send 'Authorization: Bearer TOKEN'")


def token_page(query: str) -> str:
    """What a browser opening a page without the token sees (a colleague given a shared
    link): why, and a field for the token. The form keeps the link's other parameters,
    and the browser its #fragment, so the token opens the view that was shared."""
    kept = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                   for k, v in parse_qsl(query) if k != "token")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>speeddata: token needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:15px system-ui,sans-serif;max-width:38em;margin:3em auto;padding:0 1em}}
code{{background:#eee;padding:0 .2em}}input[name=token]{{width:22em;font:inherit}}</style>
</head><body><h1>This speeddata server needs its token</h1>
<p>Whoever shared this link can give it to you: on the server's host,
<code>speeddata status --url</code> prints the address with the token
(it ends in <code>?token=&hellip;</code>). Or paste the token here:</p>
<form method="get">{kept}<label>Token <input name="token" autocomplete="off" required
autofocus></label> <button>Open</button></form></body></html>
"""


class Guard:
    """ASGI middleware applying ``refusal`` to every HTTP request and WebSocket, the body
    limit to the bytes that actually arrive (a chunked body has no length to check), and
    the token when the server has one."""

    def __init__(self, app: Any, allowed_hosts: Iterable[str] = (),
                 token: str | None = None, read_only: bool = False) -> None:
        if token is not None and not token:
            raise ConfigError("an empty web token would let everyone in")
        self.app = app
        self.names = local_names(allowed_hosts)
        self.token = token
        self.read_only = read_only
        self.refused = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        websocket = scope["type"] == "websocket"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in reversed(scope["headers"])}
        why = refusal(scope.get("method", "GET"), headers, self.names, websocket,
                      self.read_only, scope.get("scheme", "http"))
        query = scope.get("query_string", b"").decode("latin-1")
        given, how = presented(headers, query)
        if why is None and self.token is not None and not hmac.compare_digest(
                given.encode(), self.token.encode()):
            why = UnauthorizedError(TOKEN_NEEDED)
        if why is not None:
            self.refused += 1
            await self._refuse(why, scope, receive, send, headers, query)
            return
        if self.token is not None and how == "query" and not websocket:
            rest = urlencode([(k, v) for k, v in parse_qsl(query) if k != "token"])
            response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""),
                                        status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        if not websocket and ("transfer-encoding" in headers
                              or headers.get("content-length", "0") != "0"):
            body = await _read_body(receive)
            if body is None:
                self.refused += 1
                await self._refuse(TooLargeError(f"request body over {MAX_BODY} bytes"),
                                   scope, receive, send, headers, query)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(why: SpeeddataError, scope: dict, receive: Any, send: Any,
                      headers: dict[str, str], query: str) -> None:
        if scope["type"] == "websocket":
            if isinstance(why, UnauthorizedError):
                # accepted to be closed with the reason, which a page can read (a
                # refused handshake reaches it as a bare 1006)
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": 1008,
                            "reason": "token needed"})
            else:  # another site's page learns nothing
                await send({"type": "websocket.close", "code": 1008})
            return
        if (isinstance(why, UnauthorizedError) and scope.get("method") == "GET"
                and "text/html" in headers.get("accept", "")):
            response: Any = HTMLResponse(token_page(query), status_code=why.http_status)
        else:
            # a body too large is not read to its end: the connection closes after this
            closing = {"connection": "close"} if isinstance(why, TooLargeError) else None
            response = JSONResponse({"detail": str(why)}, status_code=why.http_status,
                                    headers=closing)
        await response(scope, receive, send)


async def _read_body(receive: Any) -> list[dict] | None:
    """A request's body messages as they arrive, or None past ``MAX_BODY`` bytes."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages  # the client went away: the app hears it
        size += len(message.get("body", b""))
        if size > MAX_BODY:
            return None
        if not message.get("more_body", False):
            return messages


def _replay(messages: list[dict], receive: Any) -> Any:
    async def replayed() -> dict:
        return messages.pop(0) if messages else await receive()
    return replayed
