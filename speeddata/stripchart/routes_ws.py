"""``/ws``: the page's WebSocket, a thin loop around its ``PageSession``.

Two tasks per page: this endpoint reads the page's messages and sends the session's
replies; ``push`` wakes at each tick and sends what the session gives (notices, the
frame). A page that takes no frame for ``SEND_TIMEOUT`` is dropped; one whose frame
cannot be made (a bug) is logged and closed with 1011, never left open and silent.
Past ``StripchartServer.max_pages`` pages, the next one is closed with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from speeddata.stripchart.server import StripchartServer
from speeddata.stripchart.session import PageSession

log = logging.getLogger("speeddata.stripchart")

SEND_TIMEOUT = 10.0  # a page that takes longer than this to take one frame is closed
ABORT = "speeddata.abort"  # scope["extensions"][ABORT](): drop the connection now


class _Gone(Exception):
    """The page went away, or was dropped for being slow."""


async def _send(server: StripchartServer, websocket: WebSocket,
                item: bytes | dict) -> None:
    try:
        if isinstance(item, bytes):
            await asyncio.wait_for(websocket.send_bytes(item), SEND_TIMEOUT)
        else:
            await asyncio.wait_for(websocket.send_json(item), SEND_TIMEOUT)
    except TimeoutError:
        server.closed_slow += 1
        log.warning("dropping a page that took no frame for %.0f s", SEND_TIMEOUT)
        # A close handshake would wait behind the frames it does not read: drop the
        # connection at once (see AbortableWebSocket), else try the handshake.
        abort = websocket.scope.get("extensions", {}).get(ABORT)
        if abort is not None:
            abort()
        else:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code=1008), 1.0)
        raise _Gone from None
    except Exception as exc:  # closed under us: the receiving loop ends the page
        log.debug("a page went away while sent to: %r", exc)
        raise _Gone from None


async def push(server: StripchartServer, websocket: WebSocket, page: PageSession) -> None:
    """Send the page its notices and frames, at most ``frame_hz`` a second."""
    try:
        while True:
            await asyncio.sleep(max(0.0, page.wake_at - time.monotonic()))
            server.flush_feeds()
            for item in page.tick(time.monotonic(), time.time_ns()):
                await _send(server, websocket, item)
                if isinstance(item, bytes):
                    page.sent(time.monotonic())
                    server.frames_sent += 1
    except _Gone:
        return
    except Exception as exc:  # a frame that cannot be made: said, and the page closed
        server.push_failures += 1
        log.exception("cannot make a page's frame; closing it")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(
                code=1011, reason=f"server error making a frame: {type(exc).__name__}"[:120]),
                1.0)


def register(app: FastAPI, server: StripchartServer) -> None:

    @app.websocket("/ws")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        page = server.admit(time.monotonic(), time.time_ns())
        if page is None:
            await websocket.close(code=1013, reason=(
                f"the server has its limit of {server.max_pages} pages; try again later"))
            return
        pusher = None
        try:
            await websocket.send_json(page.hello(time.time_ns()))
            pusher = asyncio.create_task(push(server, websocket, page))
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                replies = page.receive(message.get("text"), time.monotonic(), time.time_ns())
                if websocket.application_state != WebSocketState.CONNECTED:
                    break  # closed by the pusher (1011, or a slow page)
                for reply in replies:
                    await websocket.send_json(reply)
        except WebSocketDisconnect:
            pass
        finally:
            if pusher is not None:
                pusher.cancel()
            server.forget(page)

