"""The page against a server that needs its token (issue 21): a page that has lost it
says why it cannot connect and backs off, and "share" says that the receiver needs
the token too. One relay and server for the module."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.helpers import TIMEOUT, relay_settings, start_relay, start_serve
from tests.stripchart.conftest import Stack
from tests.stripchart.test_page import ARGS, CHROMIUM, wait_connected

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is missing: run ./install --dev")]

TOKEN = "page-token-test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("token")
    relay = start_relay(tmp, relay_settings(tmp, web={"token": TOKEN}))
    serve = start_serve(tmp, relay.config_path)
    yield Stack(relay, serve, tmp)
    serve.stop()
    relay.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.serve.url[:-1])
    page = context.new_page()
    yield page
    context.close()


def test_a_page_without_its_token_says_so_and_backs_off(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.serve.url}?token={TOKEN}")
    wait_connected(page)
    attempts: list[float] = []
    page.on("websocket", lambda _: attempts.append(time.monotonic()))
    page.context.clear_cookies()  # the token is gone (a new one on the server, say)
    page.evaluate("() => sd.conn.ws.close()")
    page.wait_for_function("() => document.getElementById('state').textContent"
                           ".includes('token needed')", timeout=TIMEOUT * 1000)
    state = page.locator("#state")
    assert state.inner_text().startswith("disconnected · token needed · retry in")
    assert "speeddata status --url" in (state.get_attribute("title") or "")
    page.screenshot(path=str(stack.tmp / "token-needed.png"), clip={
        "x": 0, "y": 0, "width": 1400, "height": 300})
    deadline = time.monotonic() + TIMEOUT
    while len(attempts) < 4 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(gaps) >= 3, attempts
    # each wait about twice the one before (250 ms, 500 ms, 1 s, ... each up to 25 %
    # longer at random): never the old steady retry every few seconds
    for before, after in itertools.pairwise(gaps):
        assert 1.4 < after / before < 2.9, gaps
    failures, wait = page.evaluate("() => [sd.conn.failures, sd.conn.retryMs]")
    assert failures >= 4 and wait >= 250 * 2 ** (failures - 1) * 0.99, (failures, wait)
    # the token link opened again in this browser: a click on the pill connects at once
    page.context.new_page().goto(f"{stack.serve.url}?token={TOKEN}")
    state.click()
    wait_connected(page)
    assert page.evaluate("() => [sd.conn.failures, sd.conn.reason]") == [0, ""]


def test_share_says_the_receiver_needs_the_token(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.serve.url}?token={TOKEN}")
    wait_connected(page)
    page.click("#share")
    toast = page.locator("#toast")
    toast.wait_for(state="visible", timeout=TIMEOUT * 1000)
    assert "needs its token" in toast.inner_text()
    page.screenshot(path=str(stack.tmp / "share-token.png"))
    link = page.evaluate("() => navigator.clipboard.readText()")
    assert TOKEN not in link and "#layout=" in link
