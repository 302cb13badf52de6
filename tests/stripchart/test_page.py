"""The page in a real headless Chromium (Debian's), against a real server and relay."""

from __future__ import annotations

import itertools
import json
import math
import re
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
LEGEND_VALUES = ".legend-item .legend-value"  # a plain span: not a live region
PLOT = "canvas:not(.chart-gutter)"  # a chart's plot (the value labels have their own)

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
        const c = document.querySelectorAll('sd-chart canvas:not(.chart-gutter)')[index];
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i+1] - rgb[1]) < 40 &&
                Math.abs(d[i+2] - rgb[2]) < 40 && d[i+3] > 128) n++;
        }
        return n;
    }""", [index, list(BLUE)])


def legend_values(page: Page) -> list[str]:
    return page.eval_on_selector_all(LEGEND_VALUES, "els => els.map(e => e.textContent)")


def canvas_image(page: Page, index: int = 0) -> str:
    return page.evaluate(
        "(i) => document.querySelectorAll('sd-chart canvas:not(.chart-gutter)')[i]"
        ".toDataURL()", index)


def wait_connected(page: Page) -> None:
    page.wait_for_function("() => window.sd && sd.conn.state === 'connected'",
                           timeout=TIMEOUT * 1000)


def test_page_loads_draws_and_updates_without_console_errors(demo: Stack, page: Page) -> None:
    page.goto(demo.serve.url)
    wait_connected(page)
    page.wait_for_function(
        f"() => document.querySelector('{LEGEND_VALUES}').textContent !== '{NO_VALUE}'",
                           timeout=TIMEOUT * 1000)
    # the speed sine is drawn, not just the grid; it grows as data scrolls in
    wait_until(lambda: data_pixels(page, 0) > 300, what="the sine drawn on the canvas")
    first = legend_values(page)
    page.wait_for_function(
        f"(before) => [...document.querySelectorAll('{LEGEND_VALUES}')]"
        ".some((e, i) => e.textContent !== before[i])", arg=first, timeout=TIMEOUT * 1000)
    assert page.locator("sd-value[signal='env.state'] .value-text").inner_text() in (
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
    page.wait_for_function("() => document.querySelector('sd-value .value-text').textContent"
                           ".includes('rig')",
                           timeout=TIMEOUT * 1000)
    assert page.errors == []  # type: ignore[attr-defined]


def test_picker_builds_a_chart_and_the_layout_is_in_the_url(demo: Stack, page: Page) -> None:
    page.goto(demo.serve.url)
    wait_connected(page)
    before = page.locator("sd-chart").count()
    page.click("#pick")
    page.check("#picker-list input[value='motor.temperature']")
    # the list is rebuilt with fresh rates every few seconds: the tick and the rate stay
    page.wait_for_timeout(1500)  # a second of the demo's rates
    page.evaluate("() => sd.conn.refreshChannels()")
    page.wait_for_function("() => [...document.querySelectorAll('#picker-list legend')]"
                           ".some((l) => /^motor \\((9\\d\\d|1\\d\\d\\d)(\\.\\d)? Hz\\)$/"
                           ".test(l.textContent))", timeout=TIMEOUT * 1000)
    assert page.is_checked("#picker-list input[value='motor.temperature']")
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
    page.locator("#tags tbody tr", has_text="pagetag").locator("button", has_text="export").click()
    link = page.locator("#exports a", has_text="pagetag.h5")
    link.wait_for(timeout=TIMEOUT * 1000)
    page.screenshot(path=str(demo.tmp / "exports.png"), full_page=True)
    # the message says the export is done, not "exporting ..." forever
    page.wait_for_function("() => document.querySelector('#message').value"
                           " === 'exported pagetag.h5'", timeout=TIMEOUT * 1000)
    # what is captured, per channel, and how long until retention deletes
    channels = page.eval_on_selector_all("#captured tbody tr td:first-child",
                                         "els => els.map((e) => e.textContent)")
    assert {"motor", "env", "example"} <= set(channels)
    total = page.inner_text("#captured-total")
    assert " cached of " in total and "kB/s" in total
    captured = page.evaluate("() => fetch('/api/captures').then((r) => r.json())")
    assert captured["outlook"] in total  # the server's words (speeddata.captures.outlook)
    for t in captured["tags"]:  # the warning as the server decides it, shown as it says
        shown = "⚠" in page.locator("#tags tbody tr", has_text=t["name"]).inner_text()
        assert t["retention_warning"] is shown
    # the tag's row: its size, and its file to download once exported
    tag = page.locator("#tags tbody tr", has_text="pagetag")
    tag.locator("a", has_text="pagetag.h5").wait_for(timeout=TIMEOUT * 1000)
    assert " kB" in tag.inner_text() or " MiB" in tag.inner_text()
    page.once("dialog", lambda dialog: dialog.accept())  # deleting asks first
    tag.locator("button", has_text="delete").click()
    page.wait_for_function("() => document.querySelector('#message').value"
                           " === 'deleted tag pagetag'", timeout=TIMEOUT * 1000)
    tag.wait_for(state="detached", timeout=TIMEOUT * 1000)
    assert page.locator("#exports a", has_text="pagetag.h5").count() == 1  # the file stays
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


def trace_runs(page: Page, index: int = 0) -> list[tuple[int, int] | None]:
    """Per pixel column of chart ``index``'s canvas: the rows (top, bottom) holding the
    first signal's colour, or None."""
    return page.evaluate("""([index, rgb]) => {
        const c = document.querySelectorAll('sd-chart canvas:not(.chart-gutter)')[index];
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const runs = [];
        for (let x = 0; x < c.width; x++) {
            let top = -1, bottom = -1;
            for (let y = 0; y < c.height; y++) {
                const i = (y * c.width + x) * 4;
                if (Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i+1] - rgb[1]) < 40 &&
                    Math.abs(d[i+2] - rgb[2]) < 40 && d[i+3] > 128) {
                    if (top < 0) top = y;
                    bottom = y;
                }
            }
            runs.push(top < 0 ? null : [top, bottom]);
        }
        return runs;
    }""", [index, list(BLUE)])


def send_motor(port: int, values: list[tuple[int, float]]) -> None:
    """Motor datagrams of (time ns, speed), as fast as the relay takes them."""
    import socket
    import time

    from speeddata.schemas import load_file
    from speeddata.sender import Encoder

    encoder = Encoder(load_file(SCHEMAS / "motor.avsc"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n, (t, v) in enumerate(values):
            sock.sendto(encoder.encode({"time": t, "speed": v, "torque": 0.0, "current": 0.0,
                                        "voltage": 0.0, "position": 0.0, "temperature": 0.0}),
                        ("127.0.0.1", port))
            if n % 200 == 199:
                time.sleep(0.002)  # the relay's buffer is large, the server's too


def open_chart(page: Page, url: str, signal: str, window: int) -> None:
    layout = json.dumps([{"chart": signal, "window": window}])
    page.goto(f"{url}#layout={urllib.parse.quote(layout)}")
    wait_connected(page)


@pytest.fixture
def backlog_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose server takes samples up to 11 minutes old as live (a test sends a
    backlog of history at once)."""
    from tests.helpers import relay_settings, start_relay

    relay = start_relay(tmp_path, relay_settings(tmp_path, web={"clock_tolerance_seconds": 700}))
    serve = start_serve(tmp_path, relay.config_path)
    yield Stack(relay, serve, tmp_path)
    serve.stop()
    relay.stop()


@pytest.mark.parametrize(("hz", "rate"), [(5, 1000), (2, 20)])  # dense, and sparser than pixels
def test_a_sine_is_one_unbroken_connected_trace(backlog_stack: Stack, page: Page, hz: float,
                                                rate: int) -> None:
    import time

    now = time.time_ns()
    step = 10**9 // rate
    samples = [(now - 8 * 10**9 + i * step, 100 * math.sin(2 * math.pi * hz * i / rate))
               for i in range(8 * rate)]  # the last 8 s
    send_motor(backlog_stack.relay.port, samples)
    open_chart(page, backlog_stack.serve.url, "motor.speed", 10)
    page.wait_for_timeout(1500)
    page.evaluate("() => document.querySelector('sd-chart .chart-pause').click()")
    runs = trace_runs(page)
    # the y labels are in the gutter, left of the plot: the whole plot is the trace's
    drawn = [x for x, r in enumerate(runs) if r]
    first, last = drawn[0], drawn[-1]
    # the trace spans exactly the samples' 8 s, wherever the pause put them in the window
    t0, t1 = page.evaluate("() => document.querySelector('sd-chart').span")
    at = [(t / 1e6 - t0) / (t1 - t0) * len(runs) for t in (samples[0][0], samples[-1][0])]
    # samples before the window: the trace begins at the first one inside it, up to a
    # sample's spacing from the left edge (the line from the one before is not drawn)
    spacing = step / 1e6 / (t1 - t0) * len(runs) if at[0] < 0 else 0
    assert -3 <= first - max(0, at[0]) <= 3 + spacing and abs(last - at[1]) <= 3, (
        first, last, at, spacing)
    assert last - first > 0.35 * len(runs)
    missing = [x for x in range(first, last + 1) if runs[x] is None]
    if missing:  # say what the chart folded around the hole, to find why
        around = page.evaluate("""(x) => { const c = document.querySelector('sd-chart');
            const col = c.cols[0], d = sd.conn.data.get('motor.speed');
            return { count: Array.from(col.count.slice(x - 3, x + 4)),
                     gap: Array.from(col.gap.slice(x - 3, x + 4)),
                     firsts: d.levels.map((l) => l.first), span: c.span }; }""", missing[0])
        raise AssertionError(f"columns without trace: {missing[:20]}, around the first: "
                             f"{runs[missing[0] - 3 : missing[0] + 4]} {around}")
    broken = [x for x in range(first, last) if runs[x][1] + 1 < runs[x + 1][0]
              or runs[x + 1][1] + 1 < runs[x][0]]
    assert not broken, f"vertical breaks between columns {broken[:20]} {runs[first:first+12]}"
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("window", [10, 60, 600])
def test_a_one_sample_spike_is_drawn_in_every_window(backlog_stack: Stack, page: Page,
                                                     window: int) -> None:
    import math
    import time

    now = time.time_ns()
    samples = [(now - 60 * 10**9 + i * 10**6, math.sin(i / 50)) for i in range(60_000)]
    spike = 55_000  # 5 s ago: inside every window
    samples[spike] = (samples[spike][0], 50.0)
    send_motor(backlog_stack.relay.port, samples)
    open_chart(page, backlog_stack.serve.url, "motor.speed", window)
    page.wait_for_function("() => { const c = document.querySelector('sd-chart');"
                           " return c.lastRange && c.lastRange[1] >= 50; }",
                           timeout=TIMEOUT * 1000)
    page.evaluate("() => document.querySelector('sd-chart .chart-pause').click()")
    runs = trace_runs(page)
    height, (low, high) = page.evaluate(
        "() => [document.querySelector('sd-chart').plotHeight,"
        " document.querySelector('sd-chart').lastRange]")
    spike_row = (high - 50) / (high - low) * (height - 1)
    top = min(r[0] for r in runs if r)
    assert top <= spike_row + 2, "the spike (50 against a sine of 1) is not drawn"
    assert spike_row < 0.5 * height  # and the sine is far below it


def test_y_labels_are_round_and_steady_on_a_noisy_signal(backlog_stack: Stack,
                                                        page: Page) -> None:
    import random
    import threading
    import time

    rng = random.Random(5)
    stop = threading.Event()

    def noisy() -> None:
        while not stop.is_set():
            now = time.time_ns()
            send_motor(backlog_stack.relay.port,
                       [(now + i * 10**6, 48 + rng.gauss(0, 0.3)) for i in range(50)])
            time.sleep(0.05)

    thread = threading.Thread(target=noisy, daemon=True)
    thread.start()
    try:
        open_chart(page, backlog_stack.serve.url, "motor.speed", 10)
        page.wait_for_timeout(3000)  # the range settles
        seen = set()
        for _ in range(20):
            seen.add(tuple(page.evaluate("() => document.querySelector('sd-chart').yTicks")))
            page.wait_for_timeout(100)
    finally:
        stop.set()
        thread.join()
    assert len(seen) == 1, f"the labels changed between frames: {seen}"
    labels = [float(v) for v in next(iter(seen))]
    steps = {round(b - a, 9) for a, b in itertools.pairwise(labels)}
    assert len(steps) == 1 and len(labels) >= 3
    step = steps.pop()
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1.0, 2.0, 5.0), f"step {step} is not 1, 2 or 5 x 10^k"


def test_api_docs_render_with_no_internet(stack: Stack, page: Page) -> None:
    outside = []

    def only_local(route) -> None:  # type: ignore[no-untyped-def]
        host = urllib.parse.urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(stack.serve.url + "docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=TIMEOUT * 1000)
    assert "speeddata stripchart" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-summary-path", timeout=TIMEOUT * 1000)
    assert outside == []


def test_the_page_works_from_its_token_link(tmp_path: Path, page: Page) -> None:
    """A server on the LAN: the link with ?token= opens the page, whose WebSocket and API
    calls then carry the cookie; without it the page gets 401."""
    from tests.helpers import relay_settings, start_relay

    relay = start_relay(tmp_path, relay_settings(tmp_path, web={"token": "lan-token"}))
    serve = start_serve(tmp_path, relay.config_path)
    try:
        assert page.request.get(serve.url).status == 401
        refused = []
        page.on("response", lambda r: r.status == 401 and refused.append(r.url))
        page.goto(serve.url + "?token=lan-token")
        assert "token" not in page.url
        wait_connected(page)
        page.wait_for_function("() => sd.conn.channels.length > 0", timeout=TIMEOUT * 1000)
        assert refused == []
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        serve.stop()
        relay.stop()


@pytest.fixture
def cached_hour_ago(tmp_path: Path) -> Iterator[tuple[Stack, int]]:
    """A stack whose relay cache already holds 10 minutes of motor data from an hour ago
    (a 200 Hz slow sine with one spike, in two files), as a fixture writes it."""
    import time

    from speeddata.cache.store import CacheWriter
    from speeddata.schemas import load_file
    from speeddata.sender import Encoder
    from tests.helpers import relay_settings, start_relay

    motor = load_file(SCHEMAS / "motor.avsc")
    encoder = Encoder(motor)
    start = time.time_ns() - 65 * 60 * 10**9
    writer = CacheWriter(tmp_path / "cache", 2**40, 300)
    for first in range(0, 120_000, 50):
        block = []
        for i in range(first, first + 50):
            speed = 500.0 if i == 60_000 else 10 * math.sin(2 * math.pi * i / 12_000)
            block.append(encoder.encode({"time": start + i * 5 * 10**6, "speed": speed,
                                         "torque": 0.0, "current": 0.0, "voltage": 0.0,
                                         "position": 0.0, "temperature": 0.0})[10:])
        writer.append(motor, block, start + first * 5 * 10**6)
    writer.close()
    relay = start_relay(tmp_path, relay_settings(tmp_path))
    serve = start_serve(tmp_path, relay.config_path)
    yield Stack(relay, serve, tmp_path), start
    serve.stop()
    relay.stop()


def test_panning_a_paused_chart_back_an_hour_shows_the_cache(cached_hour_ago, page: Page
                                                             ) -> None:
    stack, start = cached_hour_ago
    open_chart(page, stack.serve.url, "motor.speed", 600)
    chart = page.locator("sd-chart").first
    chart.locator(".chart-pause").click()
    # back an hour, 20 min wide: the cached 10 minutes are the middle half of the window
    t0 = (start - 5 * 60 * 10**9) / 1e6
    page.evaluate("(t0) => { document.querySelector('sd-chart').span = [t0, t0 + 1200e3]; }",
                  t0)
    page.wait_for_function("() => { const p = document.querySelector('sd-chart').past;"
                           " return p && p.get('motor.speed'); }", timeout=TIMEOUT * 1000)
    page.wait_for_timeout(300)
    runs = trace_runs(page)
    width = len(runs)
    first, last = round(width * 5 / 20), round(width * 15 / 20)
    missing = [x for x in range(first + 2, last - 2) if runs[x] is None]
    assert not missing, f"cached data not drawn at columns {missing[:20]}"
    assert all(runs[x] is None for x in range(first - 2)), "drawn where the cache has none"
    assert all(runs[x] is None for x in range(last + 2, width))
    broken = [x for x in range(first + 2, last - 3) if runs[x][1] + 1 < runs[x + 1][0]
              or runs[x + 1][1] + 1 < runs[x][0]]
    assert not broken, f"the cached trace breaks between columns {broken[:10]}"
    # the one-sample spike (500 against a sine of 10), 5 minutes in
    spike_x = round(width * 10 / 20)
    height, (low, high) = page.evaluate(
        "() => [document.querySelector('sd-chart').plotHeight,"
        " document.querySelector('sd-chart').lastRange]")
    spike_row = (high - 500) / (high - low) * (height - 1)
    top = min(runs[x][0] for x in range(spike_x - 3, spike_x + 4))
    assert abs(top - spike_row) <= 2, "the spike from the cache is not drawn"
    assert min(r[0] for r in runs[first + 2 : spike_x - 3]) > 0.8 * height  # the sine far below
    page.screenshot(path=str(stack.tmp / "scrollback.png"))
    level = page.evaluate("() => document.querySelector('sd-chart').past.get('motor.speed').level")
    assert level == "100 ms"
    # a real drag pans it: the cache is asked again and the trace moves with the mouse
    box = chart.locator(PLOT).bounding_box()
    page.mouse.move(box["x"] + 700, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 500, box["y"] + 100, steps=5)
    page.mouse.up()
    page.wait_for_timeout(600)
    moved = trace_runs(page)
    drawn = [x for x, r in enumerate(moved) if r]
    assert abs(drawn[-1] - (last - 200)) <= 4, (drawn[-1], last)
    assert page.errors == []  # type: ignore[attr-defined]


def test_limits_show_as_bands_a_coloured_legend_and_a_badge(backlog_stack: Stack,
                                                           page: Page) -> None:
    """motor.temperature has limits in the demo schema: warn above 63, alarm above 64.5."""
    import socket
    import time

    from speeddata.schemas import load_file
    from speeddata.sender import Encoder

    encoder = Encoder(load_file(SCHEMAS / "motor.avsc"))
    now = time.time_ns()
    values = [58.0 + 0.01 * i for i in range(900)] + [66.0] * 100  # ends in alarm
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i, v in enumerate(values):
            sock.sendto(encoder.encode({"time": now - (1000 - i) * 5 * 10**6, "speed": 0.0,
                                        "torque": 0.0, "current": 0.0, "voltage": 0.0,
                                        "position": 0.0, "temperature": v}),
                        ("127.0.0.1", backlog_stack.relay.port))
    open_chart(page, backlog_stack.serve.url, "motor.temperature", 10)
    page.wait_for_function("() => !document.getElementById('alarms').hidden",
                           timeout=TIMEOUT * 1000)
    assert page.inner_text("#alarms") == "⚠ 1 out of limits"
    assert "motor.temperature: alarm, 66 since" in page.get_attribute("#alarms", "title")
    page.wait_for_function("() => document.querySelector('.legend-item').classList"
                           ".contains('alarm')", timeout=TIMEOUT * 1000)
    chart = page.locator("sd-chart").first
    chart.locator(".chart-pause").click()
    page.wait_for_timeout(200)
    height, (low, high) = page.evaluate(
        "() => [document.querySelector('sd-chart').plotHeight,"
        " document.querySelector('sd-chart').lastRange]")

    def pixel(value: float) -> list[int]:
        row = round((high - value) / (high - low) * (height - 1))
        return page.evaluate("""(row) => {
            const c = document.querySelector('sd-chart canvas:not(.chart-gutter)');
            return [...c.getContext('2d').getImageData(c.width - 3, row, 1, 1).data]; }""", row)

    # the canvas is opaque: the bands are laid over the card's colour in its pixels
    card = [int(v) for v in re.findall(r"\d+", page.evaluate(
        "() => getComputedStyle(document.querySelector('sd-chart')).backgroundColor"))][:3]

    def over(under: list[int], top: tuple[int, int, int], alpha: float) -> list[int]:
        return [round(u * (1 - alpha) + t * alpha) for u, t in zip(under, top, strict=True)]

    def shows(got: list[int], under: list[int]) -> bool:  # the colour, or a grid line on it
        def near(want: list[int]) -> bool:
            return all(abs(g - w) <= 1 for g, w in zip(got[:3], want, strict=True))

        return got[3] == 255 and (near(under) or near(over(under, (128, 128, 128), 0.25)))

    warn_colour = over(card, (245, 197, 24), 0.16)
    alarm_colour = over(warn_colour, (214, 39, 40), 0.14)
    alarm, warn, fine = pixel(65.5), pixel(63.7), pixel(59.0)
    assert shows(alarm, alarm_colour), f"no red band above 64.5: {alarm}, not {alarm_colour}"
    assert shows(warn, warn_colour), f"no amber band above 63: {warn}, not {warn_colour}"
    assert shows(fine, card), f"a band where the value is within limits: {fine}"
    assert page.errors == []  # type: ignore[attr-defined]


def test_shift_drag_on_a_paused_chart_makes_the_tag_the_cli_makes(stack: Stack,
                                                                 page: Page) -> None:
    open_chart(page, stack.serve.url, "motor.speed motor.torque", 60)
    chart = page.locator("sd-chart").first
    chart.locator(".chart-pause").click()
    t0, t1 = page.evaluate("() => document.querySelector('sd-chart').span")
    box = chart.locator(PLOT).bounding_box()
    page.keyboard.down("Shift")
    page.mouse.move(box["x"] + 300, box["y"] + 80)
    page.mouse.down()
    page.mouse.move(box["x"] + 700, box["y"] + 90, steps=8)
    assert chart.locator(".chart-select").is_visible()  # the range shows as it is dragged
    page.mouse.up()
    page.keyboard.up("Shift")
    dialog = page.locator("#tag-range")
    dialog.wait_for(state="visible")
    dialog.locator("input[name=name]").fill("dragged")
    dialog.locator("input[name=note]").fill("seen on the page")
    dialog.locator("input[name=only]").check()
    dialog.locator("button[value=make]").click()
    dialog.wait_for(state="hidden")
    # the same tag 'speeddata tags' lists, over the dragged part of the window
    listed = subprocess.run(
        [sys.executable, "-m", "speeddata", "tags", "--json", "--config",
         str(stack.relay.config_path)], capture_output=True, text=True, timeout=60, check=True)
    (tag,) = [t for t in json.loads(listed.stdout) if t["name"] == "dragged"]
    ms_per_px = (t1 - t0) / box["width"]
    assert abs(tag["start_ns"] / 1e6 - (t0 + 300 * ms_per_px)) <= 2 * ms_per_px
    assert abs(tag["end_ns"] / 1e6 - (t0 + 700 * ms_per_px)) <= 2 * ms_per_px
    assert tag["note"] == "seen on the page" and tag["channels"] == ["motor"]
    assert "tag dragged" in page.inner_text("#mark output")
    # a second drag with the same name is refused in the dialog, which stays open
    page.keyboard.down("Shift")
    page.mouse.move(box["x"] + 200, box["y"] + 80)
    page.mouse.down()
    page.mouse.move(box["x"] + 400, box["y"] + 80, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    dialog.wait_for(state="visible")
    dialog.locator("input[name=name]").fill("dragged")
    dialog.locator("button[value=make]").click()
    page.wait_for_function("() => document.querySelector('#tag-range output').value"
                           ".startsWith('not made')", timeout=TIMEOUT * 1000)
    assert dialog.is_visible()
    dialog.locator("button[value=cancel]").click()
    dialog.wait_for(state="hidden")
    # Chromium logs the refused request itself; nothing else went wrong
    assert [e for e in page.errors if "409 (Conflict)" not in e] == []  # type: ignore[attr-defined]


def test_a_tag_replayed_at_10x_onto_the_groups_is_drawn(tmp_path: Path, page: Page) -> None:
    """Ten seconds of a sine cached a minute ago, replayed at 10x: the page draws it (on
    receive time, labelled: its stamps are a minute old) while nothing is cached again."""
    import time

    from speeddata.cache.store import CacheWriter
    from speeddata.schemas import load_file
    from speeddata.sender import Encoder
    from tests.helpers import relay_settings, start_relay

    motor = load_file(SCHEMAS / "motor.avsc")
    encoder = Encoder(motor)
    start = time.time_ns() - 60 * 10**9
    writer = CacheWriter(tmp_path / "cache", 2**40, 600)
    for first in range(0, 10_000, 20):
        writer.append(motor, [encoder.encode({
            "time": start + i * 10**6, "speed": 100 * math.sin(2 * math.pi * i / 1000),
            "torque": 0.0, "current": 0.0, "voltage": 0.0, "position": 0.0,
            "temperature": 0.0})[10:] for i in range(first, first + 20)], start + first * 10**6)
    writer.close()
    relay = start_relay(tmp_path, relay_settings(tmp_path))
    serve = start_serve(tmp_path, relay.config_path)
    try:
        open_chart(page, serve.url, "motor.speed", 10)
        done = subprocess.run(
            [sys.executable, "-m", "speeddata", "replay", "--start", "-2m", "--speed", "10",
             "--config", str(relay.config_path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "replayed 10000 datagrams" in done.stdout, done
        wait_until(lambda: data_pixels(page, 0) > 500, what="the replayed sine drawn")
        page.evaluate("() => sd.conn.refreshChannels()")
        page.wait_for_function(  # the legend says it is a replay, and of when
            "() => document.querySelector('.legend-item .clock').textContent"
            ".startsWith('replay \\u00d710 ')", timeout=TIMEOUT * 1000)
        page.evaluate("() => document.querySelector('sd-chart .chart-pause').click()")
        # 10 s replayed at 10x: drawn over 1 s of the 10 s window, as a 10 Hz sine,
        # not smeared over seconds by a clock estimate that moves with every batch
        runs = trace_runs(page)
        drawn = [x for x, r in enumerate(runs) if r]
        assert drawn[-1] - drawn[0] <= 0.13 * len(runs), (drawn[0], drawn[-1], len(runs))
        assert relay.snapshot()["datagrams"] == 0  # the groups are not cached again
        page.screenshot(path=str(tmp_path / "replay.png"))
    finally:
        serve.stop()
        relay.stop()


RIG = {"type": "record", "name": "rig", "doc": "a rig registered from the page", "fields": [
    {"name": "time", "type": "long"},
    {"name": "pressure", "type": "double", "unit": "bar",
     "limits": {"warn": [-150, 150]}}]}


def test_a_channel_registered_on_the_channels_page_is_drawn_without_a_restart(
        tmp_path: Path, page: Page) -> None:
    """A sender of an unknown schema shows under "not registered"; its .avsc loaded on
    the channels page registers it; its data then reaches a chart, with nothing
    restarted; retiring it (after a confirmation) takes it off the list."""
    import shutil
    import threading
    import time

    from speeddata import Sender
    from speeddata.config import write_file
    from speeddata.schemas import channel_from_schema
    from tests.helpers import relay_settings, start_relay

    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)  # the test's own copy: registering writes into it
    settings = relay_settings(tmp_path, channels={"dir": str(schemas), "legacy": ["example"]})
    relay = start_relay(tmp_path, settings)
    serve = start_serve(tmp_path, write_file(tmp_path / "serve.toml", settings))
    rig = channel_from_schema(RIG)
    stop = threading.Event()

    def source() -> None:  # a 10 Hz sine at 500 samples a second, from before and after
        with Sender(rig, port=relay.port) as sender:
            i = 0
            while not stop.is_set():
                for _ in range(10):
                    sender.send(pressure=100 * math.sin(2 * math.pi * i / 50))
                    i += 1
                time.sleep(0.02)

    thread = threading.Thread(target=source, daemon=True)
    thread.start()
    try:
        page.goto(serve.url + "channels.html")
        page.wait_for_selector("#channels tr[data-channel=motor]")
        unknown = page.locator("#unknown tbody tr", has_text=rig.fingerprint.hex())
        unknown.wait_for(timeout=TIMEOUT * 1000)  # what the relay rejects, and from whom
        assert "127.0.0.1:" in unknown.inner_text()
        avsc = tmp_path / "rig.avsc"
        avsc.write_text(json.dumps(RIG))
        page.set_input_files("#schema-file", str(avsc))
        page.wait_for_function("() => document.querySelector('#schema').value.includes('rig')")
        page.click("#register")
        page.wait_for_function(
            "() => document.querySelector('#message').value.startsWith('registered rig')")
        row = page.locator("#channels tr[data-channel=rig]")
        row.wait_for(timeout=TIMEOUT * 1000)
        assert "pressure [bar] double (warn -150..150)" in row.inner_text()
        assert rig.fingerprint.hex() in row.inner_text()
        # the sender reports, the relay counts: nothing lost on loopback
        page.wait_for_function("() => /0 of [1-9][0-9]* \\(0\\.0 %\\) in all/.test("
                               "document.querySelector('#channels tr[data-channel=rig]')"
                               ".textContent)", timeout=TIMEOUT * 1000)
        page.screenshot(path=str(tmp_path / "channels.png"), full_page=True)
        row.locator("a", has_text="chart").click()
        wait_connected(page)
        wait_until(lambda: data_pixels(page, 0) > 300, what="the registered channel drawn")
        page.wait_for_timeout(3000)
        page.screenshot(path=str(tmp_path / "rig-chart.png"))
        page.goto(serve.url + "channels.html")
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#channels tr[data-channel=rig] button", has_text="retire").click()
        page.wait_for_function(
            "() => document.querySelector('#message').value === 'retired rig'")
        page.wait_for_selector("#channels tr[data-channel=rig]", state="detached")
        assert page.locator("#unknown-section").is_hidden()  # registered: no stranger
        assert not (schemas / "rig.avsc").exists()
        assert list((schemas / "retired").glob("rig*.avsc"))
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        stop.set()
        thread.join()
        serve.stop()
        relay.stop()


# Below chart 0's plot: per time line's tick (its first column), whether text follows it
TICKS_LABELLED = """() => {
    const c = document.querySelector('sd-chart'), cv = c.canvas;
    const W = cv.width, H = cv.height, PH = c.plotHeight;
    const d = cv.getContext('2d').getImageData(0, 0, W, H).data;
    const at = (x, y) => Array.from(d.slice((y * W + x) * 4, (y * W + x) * 4 + 4));
    const card = at(W - 1, PH + 2);  // the tick row's last column: never a tick (no room)
    const far = (p, q) => p.reduce((n, v, i) => n + Math.abs(v - q[i]), 0) > 60;
    const ticks = [];
    for (let x = 0; x < W; x++) {
        if (!far(at(x, PH + 2), card) || (x && far(at(x - 1, PH + 2), card))) continue;
        let text = false;  // a label starts 2 px right of its line
        for (let y = PH + 5; y < H && !text; y++) {
            for (let xx = x + 1; xx < Math.min(W, x + 14) && !text; xx++) {
                text = far(at(xx, y), card);
            }
        }
        ticks.push([x, text]);
    }
    return { W, ticks };
}"""


def test_every_time_line_has_its_label_as_the_chart_scrolls(demo: Stack, page: Page) -> None:
    """A line entering at the right edge is drawn only once its label fits beside it: a
    tick below the plot without its label reads as a stray line."""
    open_chart(page, demo.serve.url, "motor.speed", 10)
    page.wait_for_function("document.querySelector('sd-chart').xTicks?.length >= 2")
    seen = []
    for _ in range(16):  # 4.8 s: a line moves a third of its 2 s spacing across
        page.wait_for_timeout(300)
        got = page.evaluate(TICKS_LABELLED)
        assert len(got["ticks"]) >= 2, got
        seen.append(got["ticks"])
        bare = [x for x, text in got["ticks"] if not text]
        assert not bare, f"time lines without a label at x = {bare} of {got['W']}: {seen}"
    assert page.errors == []  # type: ignore[attr-defined]
