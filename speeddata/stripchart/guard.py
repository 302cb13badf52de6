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
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
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


def refusal(method: str, headers: dict[str, str], names: set[str], websocket: bool
            ) -> str | None:
    """Why a request must be refused, or None. ``headers`` have lower-case names."""
    host = headers.get("host", "")
    if not host_allowed(host, names):
        return (f"host {host_of(host)[:100]!r} is not a name of this server (DNS rebinding "
                "guard); add it to [web] allowed_hosts if it is yours")
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY:
        return f"request body over {MAX_BODY} bytes"
    if websocket or method not in SAFE_METHODS:
        if headers.get("sec-fetch-site") == "cross-site":
            return "cross-site request refused"
        origin = headers.get("origin")
        if origin and origin != "null" and host_of(urlsplit(origin).netloc) != host_of(host):
            return f"origin {origin[:100]!r} is not this server: cross-site request refused"
        if origin == "null":
            return "requests from an opaque origin are refused"
    return None


class Guard:
    """ASGI middleware applying ``refusal`` to every HTTP request and WebSocket."""

    def __init__(self, app: Any, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.names = local_names(allowed_hosts)
        self.refused = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in reversed(scope["headers"])}
            why = refusal(scope.get("method", "GET"), headers, self.names,
                          scope["type"] == "websocket")
            if why is not None:
                self.refused += 1
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008, "reason": why[:120]})
                else:
                    code = 413 if why.startswith("request body") else 403
                    await JSONResponse({"detail": why}, status_code=code)(scope, receive, send)
                return
        await self.app(scope, receive, send)
