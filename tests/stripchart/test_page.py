"""The page in a real headless Chromium (Debian's), against a real server and relay."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.helpers import SCHEMAS, TIMEOUT, start_serve, wait_until
from tests.stripchart.conftest import Stack

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
BLUE = (31, 119, 180)  # the first signal's colour in every chart
NO_VALUE = "\u2013"  # the page shows an en dash before a signal has a value

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is missing: run ./install --dev")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def demo(stack: Stack) -> Iterator[Stack]:
    """The stack with the demo source sending to it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "speeddata", "demo", "--config", str(stack.relay.config_path),
         "--port", str(stack.relay.port), "-q"])
    yield stack
    process.terminate()
    process.wait(TIMEOUT)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def data_pixels(page: Page, index: int) -> int:
    """Pixels of the first signal's colour on the canvas of chart ``index``."""
    return page.evaluate("""([index, rgb]) => {
        const c = document.querySelectorAll('sd-chart canvas')[index];
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i+1] - rgb[1]) < 40 &&
                Math.abs(d[i+2] - rgb[2]) < 40 && d[i+3] > 128) n++;
        }
        return n;
    }""", [index, list(BLUE)])


def legend_values(page: Page) -> list[str]:
    return page.eval_on_selector_all(".legend-item output", "els => els.map(e => e.value)")


def canvas_image(page: Page, index: int = 0) -> str:
    return page.evaluate(
        "(i) => document.querySelectorAll('sd-chart canvas')[i].toDataURL()", index)


def wait_connected(page: Page) -> None:
    page.wait_for_function("() => window.sd && sd.conn.state === 'connected'",
                           timeout=TIMEOUT * 1000)


def test_page_loads_draws_and_updates_without_console_errors(demo: Stack, page: Page) -> None:
    page.goto(demo.serve.url)
    wait_connected(page)
    page.wait_for_function(
        f"() => document.querySelector('.legend-item output').value !== '{NO_VALUE}'",
                           timeout=TIMEOUT * 1000)
    # the speed sine is drawn, not just the grid; it grows as data scrolls in
    wait_until(lambda: data_pixels(page, 0) > 300, what="the sine drawn on the canvas")
    first = legend_values(page)
    page.wait_for_function(
        "(before) => [...document.querySelectorAll('.legend-item output')]"
        ".some((e, i) => e.value !== before[i])", arg=first, timeout=TIMEOUT * 1000)
    assert page.locator("sd-value[signal='env.state'] output").inner_text() in (
        "IDLE", "RUNNING", "FAULT", NO_VALUE)
    assert page.errors == []  # type: ignore[attr-defined]


def test_pause_stops_the_chart_and_resume_moves_it_again(demo: Stack, page: Page) -> None:
    page.goto(demo.serve.url)
    wait_connected(page)
    page.wait_for_function("() => sd.stats.frames > 30 && sd.conn.framesReceived > 10",
                           timeout=TIMEOUT * 1000)
    chart = page.locator("sd-chart").first
    chart.locator(".chart-pause").click()
    page.wait_for_timeout(400)  # samples from just before the pause may still arrive
    before = canvas_image(page)
    page.wait_for_timeout(600)
    assert canvas_image(page) == before  # paused: frozen while data keeps coming
    chart.locator(".chart-pause").click()
    page.wait_for_timeout(600)
    assert canvas_image(page) != before


def test_html_configured_layout_shows_the_named_signals(demo: Stack, page: Page) -> None:
    page.goto(demo.serve.url)
    wait_connected(page)
    names = page.eval_on_selector_all("sd-chart", "els => els.map(e => e.signals)")
    assert ["motor.speed"] in names
    assert ["motor.torque", "motor.current"] in names
    legend = page.eval_on_selector_all(".legend-item b", "els => els.map(e => e.textContent)")
    assert "motor.torque" in legend and "example.sine_wave" in legend
    # a layout given in the URL replaces the HTML one
    layout = [{"chart": "motor.voltage example.noise", "window": 10}, {"value": "env.message"}]
    page.goto(demo.serve.url + "#layout=" + urllib.parse.quote(json.dumps(layout)))
    page.reload()
    wait_connected(page)
    assert page.eval_on_selector_all("sd-chart", "els => els.map(e => e.signals)") == [
        ["motor.voltage", "example.noise"]]
    page.wait_for_function("() => document.querySelector('sd-value output').value.includes('rig')",
                           timeout=TIMEOUT * 1000)
    assert page.errors == []  # type: ignore[attr-defined]


def test_picker_builds_a_chart_and_the_layout_is_in_the_url(demo: Stack, page: Page) -> None:
    page.goto(demo.serve.url)
    wait_connected(page)
    before = page.locator("sd-chart").count()
    page.click("#pick")
    page.check("#picker-list input[value='motor.temperature']")
    page.click("#picker-add")
    assert page.locator("sd-chart").count() == before + 1
    page.wait_for_function("() => location.hash.includes('motor.temperature')")
    page.reload()
    wait_connected(page)
    assert page.locator("sd-chart").count() == before + 1


def test_page_recovers_after_the_server_restarts(demo: Stack, page: Page) -> None:
    page.goto(demo.serve.url)
    wait_connected(page)
    demo.serve.stop()
    page.wait_for_function("() => sd.conn.state === 'disconnected'", timeout=TIMEOUT * 1000)
    assert "disconnected" in page.locator("#state").inner_text()
    demo.serve = start_serve(demo.tmp, demo.relay.config_path)
    wait_connected(page)
    received = page.evaluate("() => sd.conn.framesReceived")
    page.wait_for_function("(n) => sd.conn.framesReceived > n + 5", arg=received,
                           timeout=TIMEOUT * 1000)
    assert data_pixels(page, 0) > 0


def test_exports_page_exports_a_tag_and_offers_the_file(demo: Stack, page: Page) -> None:
    page.goto(demo.serve.url)
    wait_connected(page)
    page.fill("#mark input", "pagetag")
    page.click("#mark button")
    page.wait_for_function("() => document.querySelector('#mark').classList.contains('recording')")
    page.wait_for_timeout(500)  # half a second of demo data
    page.click("#mark button")
    page.wait_for_function("() => document.querySelector('#mark output').value.includes('→')")
    page.goto(demo.serve.url + "exports.html")
    page.locator("#tags tbody tr", has_text="pagetag").locator("button").click()
    link = page.locator("#exports a", has_text="pagetag.h5")
    link.wait_for(timeout=TIMEOUT * 1000)
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_source_with_a_clock_3_h_behind_is_drawn_and_labelled(stack: Stack, page: Page
                                                                ) -> None:
    """A Pi without a real-time clock: its samples are plotted when they arrive, and the
    legend says why the times differ."""
    import threading
    import time

    from speeddata.schemas import load_file
    from speeddata.sender import Encoder

    encoder = Encoder(load_file(SCHEMAS / "motor.avsc"))
    stop = threading.Event()

    def source() -> None:
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            i = 0
            while not stop.is_set():
                sock.sendto(encoder.encode({
                    "time": time.time_ns() - 3 * 3600 * 10**9, "speed": 100.0 * (i % 50),
                    "torque": 0.0, "current": 0.0, "voltage": 48.0, "position": 0.0,
                    "temperature": 20.0}), ("127.0.0.1", stack.relay.port))
                i += 1
                time.sleep(0.005)

    thread = threading.Thread(target=source, daemon=True)
    thread.start()
    try:
        page.goto(stack.serve.url)
        wait_connected(page)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.legend-item .clock')]"
            ".some(e => e.textContent === 'clock 3.0 h behind')", timeout=TIMEOUT * 1000)
        wait_until(lambda: data_pixels(page, 0) > 100, what="the late source drawn")
        stale = page.eval_on_selector(".legend-item", "e => e.classList.contains('stale')")
        assert not stale and page.errors == []  # type: ignore[attr-defined]
    finally:
        stop.set()
        thread.join()
