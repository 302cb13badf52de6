"""Stripcharts in a Jupyter notebook: ``Stripchart`` (live) and ``Range`` (a past range).

Both draw with the page's own modules (web/js: chart.js, chartmath.js, store.js,
protocol.js, connection.js), taken from this package's web/ so the widget matches the
code of the speeddata it runs with, and loaded in the notebook's page by the widget's
front end (web/js/notebook.js). Their network goes through the kernel (see
speeddata.kernelbridge): the token stays in the kernel, in no widget state a notebook
saves, and the server's guard needs no exception for Jupyter's origin.

    from speeddata.notebook import Stripchart, Range
    Stripchart(url="http://127.0.0.1:8050/", signals=["motor.speed"], seconds=30)
    Range(url=..., signals=["motor.speed"], start="-10m", end="-5m")
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    import anywidget
    import traitlets
except ImportError as exc:  # pragma: no cover - said to whoever imports it without
    raise ImportError(f"speeddata.notebook needs the notebook extra: pip install "
                      f"'speeddata[notebook]' ({exc})") from None

from speeddata import kernelbridge as kb
from speeddata.packaged import web_dir
from speeddata.times import EPOCH, check_time, parse_time

log = logging.getLogger("speeddata.notebook")
FETCH_TIMEOUT = 30.0  # seconds: as the page's own scroll-back request
OPEN_TIMEOUT = 10.0


class _Chart(anywidget.AnyWidget):
    """What both widgets share: the address (never the token), the signals, the front
    end, and the relay of its network through the kernel."""

    _esm = web_dir() / "js" / "notebook.js"
    url = traitlets.Unicode("").tag(sync=True)  # without its token
    signals = traitlets.List(traitlets.Unicode()).tag(sync=True)
    seconds = traitlets.Float(30.0).tag(sync=True)
    view = traitlets.List(traitlets.Float(), default_value=[]).tag(sync=True)  # ms: paused
    title = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(260).tag(sync=True)  # CSS px of the plot

    def __init__(self, url: str, signals: list[str] | str, token: str | None = None,
                 config: str | Path | None = None, **kwargs: Any) -> None:
        self._server = kb.server(url, token, config)
        names = signals.split() if isinstance(signals, str) else list(signals)
        if not names or not all(isinstance(s, str) and s for s in names):
            raise kb.BridgeError("signals: name at least one, as 'channel.signal'")
        super().__init__(url=self._server.base, signals=names, **kwargs)
        self._bridge = kb.Bridge()
        self._lock = threading.Lock()
        self._ws: Any = None
        self._generation = 0  # the WebSocket the front end last asked for
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="speeddata-notebook-get")
        self.on_msg(self._on_front)

    def statistics(self) -> dict[str, Any]:
        return self._bridge.statistics()

    def _on_front(self, _widget: Any, content: Any, _buffers: list) -> None:
        request = self._bridge.read(content)
        if isinstance(request, kb.Modules):
            self.send({"op": "modules", "modules": kb.page_modules(web_dir())})
        elif isinstance(request, kb.WsOpen):
            self._open(request.n)
        elif isinstance(request, kb.WsSend):
            with self._lock:
                ws = self._ws
            if ws is not None:
                try:
                    ws.send(request.text)
                except Exception as exc:  # closed meanwhile: its reader says so
                    log.debug("send to %s: %s", self._server.ws_url, exc)
        elif isinstance(request, kb.WsClose):
            self._close()
        elif isinstance(request, kb.Fetch):
            self._pool.submit(self._get, request)

    # -- the WebSocket, relayed -------------------------------------------------------
    def _open(self, n: int) -> None:
        self._close()
        with self._lock:
            self._generation += 1
            generation = self._generation
        threading.Thread(target=self._relay, args=(generation, n), daemon=True,
                         name="speeddata-notebook-ws").start()

    def _close(self) -> None:
        with self._lock:
            ws, self._ws = self._ws, None
            self._generation += 1
        if ws is not None:
            ws.close()

    def _relay(self, generation: int, n: int) -> None:
        """One WebSocket's life: open, every message to the front end, its close."""
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        code, reason = 1006, ""
        try:
            ws = connect(self._server.ws_url, additional_headers=self._server.headers(),
                         open_timeout=OPEN_TIMEOUT, max_size=2**24)
        except Exception as exc:  # refused, unreachable: the page hears a bare 1006
            log.info("stripchart %s: %s", self._server.ws_url, exc)
            self._to_front(generation, {"op": "ws-close", "n": n, "code": 1006, "reason": ""})
            return
        with self._lock:
            if generation != self._generation:
                ws.close()
                return
            self._ws = ws
        self._to_front(generation, {"op": "ws-open", "n": n})
        try:
            for message in ws:
                if isinstance(message, bytes):
                    self._to_front(generation, {"op": "ws-binary", "n": n}, [message])
                else:
                    self._to_front(generation, {"op": "ws-text", "n": n, "data": message})
        except ConnectionClosed:
            pass
        finally:
            if ws.close_code is not None:  # what the server said (1008: token needed)
                code, reason = ws.close_code, ws.close_reason or ""
            self._to_front(generation, {"op": "ws-close", "n": n, "code": code,
                                        "reason": reason})

    def _to_front(self, generation: int, content: dict, buffers: list | None = None) -> None:
        if generation == self._generation:  # not a WebSocket the front end gave up
            self.send(content, buffers)

    # -- GETs of the read-only API ------------------------------------------------------
    def _get(self, fetch: kb.Fetch) -> None:
        request = urllib.request.Request(self._server.url(fetch),
                                         headers=self._server.headers())
        try:
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as answer:
                reply = kb.answer(fetch, answer.status, answer.read(),
                                  answer.headers.get("content-type", ""))
        except urllib.error.HTTPError as exc:
            reply = kb.answer(fetch, exc.code, exc.read(), exc.headers.get("content-type", ""))
        except Exception as exc:  # unreachable, timed out: a browser's fetch rejects
            reply = kb.failure(fetch, str(exc))
        finally:
            self._bridge.fetched()
        self.send(reply)

    def close(self) -> None:
        """The widget closed: its WebSocket too."""
        if hasattr(self, "_pool"):  # not a widget whose __init__ refused its arguments
            self._close()
            self._pool.shutdown(wait=False)
        super().close()


class Stripchart(_Chart):
    """The live stripchart of ``signals`` ("channel.signal") over the last ``seconds``, as
    the page draws it; pause, pan and zoom as there. ``token``: the server's (by
    default from ``url``'s ?token=, else from this data directory, as ``speeddata
    status --url`` finds it)."""

    def __init__(self, url: str, signals: list[str] | str, seconds: float = 30,
                 token: str | None = None, config: str | Path | None = None,
                 **kwargs: Any) -> None:
        super().__init__(url, signals, token, config, seconds=float(seconds), **kwargs)


class Range(_Chart):
    """``signals`` from ``start`` to ``end`` (ISO 8601, 'now', '-10m', a datetime, or ns
    since the epoch), from the server's /api/range: a paused chart of the page (drag or
    arrow keys pan, wheel or + and - zoom, the cursor reads values)."""

    def __init__(self, url: str, signals: list[str] | str, start: Any, end: Any = "now",
                 token: str | None = None, config: str | Path | None = None,
                 **kwargs: Any) -> None:
        now = time.time_ns()
        t0, t1 = moment(start, now, "start"), moment(end, now, "end")
        if t1 <= t0:
            raise kb.BridgeError(f"end {end!r} is not after start {start!r}")
        super().__init__(url, signals, token, config, view=[t0 / 1e6, t1 / 1e6],
                         seconds=max(1.0, (t1 - t0) / 1e9), **kwargs)


def moment(value: Any, now_ns: int, what: str) -> int:
    """ns since the epoch from what a user writes (the CLI's words), a datetime or ns."""
    if isinstance(value, str):
        return parse_time(value, now_ns)
    if isinstance(value, datetime):
        zoned = value if value.tzinfo else value.replace(tzinfo=EPOCH.tzinfo)
        since = zoned - EPOCH
        return check_time((since.days * 86400 + since.seconds) * 10**9
                          + since.microseconds * 1000, what)
    if isinstance(value, int) and not isinstance(value, bool):
        return check_time(value, what)
    raise kb.BridgeError(f"{what} {json.dumps(str(value))[:80]}: write a time as ISO 8601, "
                         "'now', '-10m', a datetime or ns since the epoch")
