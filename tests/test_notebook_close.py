"""A notebook widget closed leaves nothing running: its front end (web/js/notebook.js)
rendered in headless Chromium with a stand-in for the kernel's model (no Jupyter, no
server), every timer of the page counted, then the widget's cleanup run: the
Connection's channel refresh and reconnection timers stop with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from speeddata import kernelbridge as kb
from speeddata.packaged import web_dir
from tests.stripchart.test_page import ARGS, CHROMIUM

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not CHROMIUM or not Path(CHROMIUM).exists(), reason="Chromium is missing: run ./install --dev")]

ORIGIN = "http://widget.test"

TIMERS = """() => {
  // every interval and timeout of the page, and which are still due
  const live = window.liveTimers = new Map();
  const [si, ci, st, ct] = [setInterval, clearInterval, setTimeout, clearTimeout];
  window.setInterval = (f, ms, ...a) => { const id = si(f, ms, ...a);
                                          live.set(id, `interval ${ms}`); return id; };
  window.clearInterval = (id) => { live.delete(id); ci(id); };
  window.setTimeout = (f, ms, ...a) => { const id = st((...b) => { live.delete(id); f(...b); },
                                                       ms, ...a);
                                         live.set(id, `timeout ${ms}`); return id; };
  window.clearTimeout = (id) => { live.delete(id); ct(id); };
}"""

RENDER = """async (modules) => {
  // the kernel's side of the model: modules on request, the WebSocket refused at once
  const handlers = [];
  window.sent = [];
  const state = { url: "http://127.0.0.1:1/", signals: ["motor.speed"], seconds: 30,
                  view: [], title: "", height: 200 };
  const answer = (msg) => setTimeout(() => handlers.forEach((h) => h(msg, [])), 0);
  const model = {
    get: (key) => state[key],
    on: (_event, handler) => handlers.push(handler),
    off: (_event, handler) => handlers.splice(handlers.indexOf(handler), 1),
    send: (msg) => {
      window.sent.push(msg.op);
      if (msg.op === "modules") answer({ op: "modules", modules });
      if (msg.op === "ws-open") answer({ op: "ws-close", n: msg.n, code: 1006,
                                         reason: "refused" });
    },
  };
  const widget = (await import("/js/notebook.js")).default;
  const el = document.createElement("div");
  document.body.append(el);
  window.cleanup = await widget.render({ model, el });
  window.host = el.firstChild.speeddata;
}"""


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()

        def serve(route) -> None:  # type: ignore[no-untyped-def]
            path = route.request.url.removeprefix(ORIGIN)
            if path == "/":
                route.fulfill(body="<!doctype html><title>widget</title>",
                              content_type="text/html")
            else:
                route.fulfill(body=(web_dir() / path.lstrip("/")).read_text(),
                              content_type="text/javascript")

        page.route(f"{ORIGIN}/**", serve)
        page.goto(f"{ORIGIN}/")
        page.evaluate(TIMERS)
        yield page
        browser.close()


def live(page: Page) -> list[str]:
    return page.evaluate("() => [...window.liveTimers.values()]")


def test_a_closed_widget_stops_its_connections_timers(page: Page) -> None:
    page.evaluate(RENDER, kb.page_modules(web_dir()))
    # refused, the connection waits to try again; its channel refresh runs all along
    page.wait_for_function("() => window.host.app && window.host.app.conn.retryTimer")
    before = live(page)
    assert "interval 5000" in before  # the Connection's channel refresh
    assert any(t.startswith("timeout ") and int(t.split()[1]) >= 250 for t in before), before
    attempts = page.evaluate("() => window.sent.filter((op) => op === 'ws-open').length")
    page.wait_for_function(f"() => window.sent.filter((op) => op === 'ws-open').length"
                           f" > {attempts}")  # it does reconnect while open
    page.evaluate("() => window.cleanup()")
    page.wait_for_timeout(50)  # the last socket's close, a timeout of 0, runs
    assert [t for t in live(page) if t != "timeout 0"] == [], live(page)
    after = page.evaluate("() => window.sent.length")
    page.wait_for_timeout(1500)  # longer than the next retry would have waited
    assert page.evaluate("() => window.sent.length") == after  # nothing more asked
    assert page.evaluate("() => window.host.app.conn.closed") is True
