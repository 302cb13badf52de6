"""Where the page puts what it shows (issue 21): samples of a run that has ended, the
cursor's value, the value labels' gutter, dates and "no data here", a header and cards
that do not move, local time, a shared view, the wheel, keys and what a screen reader
gets. One relay and server for the module, holding a run that ended: 90 s of a flat
1 kHz signal with one sample of 100 in it, 80 s before the end."""

from __future__ import annotations

import datetime
import itertools
import json
import math
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.helpers import (
    SCHEMAS,
    TIMEOUT,
    relay_settings,
    start_relay,
    start_serve,
    wait_until,
)
from tests.stripchart.conftest import Stack
from tests.stripchart.test_page import (
    ARGS,
    BLUE,
    CHROMIUM,
    PLOT,
    send_motor,
    trace_runs,
    wait_connected,
)

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is missing: run ./install --dev")]

ZONE = "Asia/Kolkata"  # UTC+5:30 all year: local time is not UTC, and not on UTC's hours
KOLKATA = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
CHART = "document.querySelector('sd-chart')"
VALUE = ".legend-item :is(output, .legend-value)"  # the legend's value, then and now


@dataclass
class Run:
    stack: Stack
    start_ms: float  # the run's first sample
    spike_ms: float  # its one sample of 100 (the rest are 0)
    end_ms: float  # its last sample

    @property
    def url(self) -> str:
        return self.stack.serve.url


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("view")
    relay = start_relay(tmp, relay_settings(tmp, web={"clock_tolerance_seconds": 700}))
    serve = start_serve(tmp, relay.config_path)
    start = (time.time_ns() // 10**9 - 90) * 10**9  # on a whole second
    spike = start + 10_611 * 10**6  # at .611 s: in a 250 ms bucket that starts at .500
    samples = [(start + i * 10**6, 0.0) for i in range(90_000)]
    samples[10_611] = (spike, 100.0)
    send_motor(relay.port, samples)  # as fast as it goes: then the source stops

    def cached() -> bool:  # the cache has the spike, and the server all of the run
        q = urllib.parse.urlencode({"signal": "motor.speed", "start_ms": spike / 1e6 - 1,
                                    "end_ms": spike / 1e6 + 1, "columns": 10})
        with urllib.request.urlopen(f"{serve.url}api/range?{q}", timeout=5) as answer:
            found = json.load(answer)
        with urllib.request.urlopen(f"{serve.url}api/channels", timeout=5) as answer:
            channels = {c["name"]: c for c in json.load(answer)["channels"]}
        return 100.0 in found["max"] and channels["motor"]["datagrams"] >= len(samples)

    wait_until(cached, what="the run cached and in the server's memory")
    yield Run(Stack(relay, serve, tmp), start / 1e6, spike / 1e6, samples[-1][0] / 1e6)
    serve.stop()
    relay.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, run: Run) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, timezone_id=ZONE)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=run.url[:-1])
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def open_layout(page: Page, url: str, layout: list[dict]) -> None:
    page.goto(f"{url}#layout={urllib.parse.quote(json.dumps(layout))}")
    wait_connected(page)


def open_run(page: Page, run: Run) -> None:
    """The run on a 10 s chart, its history in (the server sends it on connect)."""
    open_layout(page, run.url, [{"chart": "motor.speed", "window": 10}])
    page.wait_for_function("() => { const d = sd.conn.data.get('motor.speed');"
                           " return d && d.levels[1].n > 300; }", timeout=TIMEOUT * 1000)


def show(page: Page, t0: float, t1: float) -> None:
    """Pause the first chart on [t0, t1] (ms) and wait until what it asked is drawn."""
    page.evaluate(f"([t0, t1]) => {{ const c = {CHART}; if (!c.paused) c.setPaused(true);"
                  " c.span = [t0, t1]; }", [t0, t1])
    settle(page)


def settle(page: Page) -> None:
    """Until the first chart has the cache's answer for its view, and has drawn it."""
    page.wait_for_function(f"() => {{ const c = {CHART}; return !c.settled || c.settled(); }}",
                           timeout=TIMEOUT * 1000)
    page.wait_for_timeout(100)  # a few frames


def view(page: Page) -> tuple[float, float]:
    t0, t1 = page.evaluate(f"() => {CHART}.span")
    return t0, t1


def value_row(page: Page, value: float) -> float:
    height, (low, high) = page.evaluate(f"() => [{CHART}.plotHeight, {CHART}.lastRange]")
    return (high - value) / (high - low) * (height - 1)


def spike_at(page: Page, run: Run) -> tuple[list, int, float]:
    """The trace, the first column reaching the spike's row, and the column its time
    maps to."""
    runs = trace_runs(page)
    top = value_row(page, 100.0)
    peaks = [x for x, r in enumerate(runs) if r and r[0] <= top + 1]
    assert peaks, "the spike is not drawn"
    t0, t1 = view(page)
    return runs, peaks[0], (run.spike_ms - t0) / (t1 - t0) * len(runs)


def test_a_spike_of_a_run_that_ended_is_drawn_at_its_time_at_every_zoom(
        run: Run, page: Page) -> None:
    """Past the memory's 10 ms level (the last minute) the server keeps 250 ms buckets: a
    view finer than that is drawn from the cache, so the spike stays in its column as
    the wheel zooms in, with nothing rising before it."""
    open_run(page, run)
    show(page, run.spike_ms - 10_000, run.spike_ms + 10_000)  # 20 s: 15 ms a pixel
    box = page.locator(f"sd-chart {PLOT}").first.bounding_box()
    baseline = value_row(page, 0.0)
    for _ in range(3):  # then about 2 s, 0.2 s and 0.02 s wide, zoomed at the spike
        runs, peak, expected = spike_at(page, run)
        t0, t1 = view(page)
        assert abs(peak - expected) <= 2, (
            f"over {t1 - t0:.0f} ms the spike is drawn at column {peak}, its time is at "
            f"{expected:.1f}")
        # before the spike the trace is the flat 0, up to the sample before it (1 ms back:
        # a line joins two samples further apart than a pixel)
        before = (run.spike_ms - 1 - t0) / (t1 - t0) * len(runs)
        rising = [x for x in range(0, int(before)) if runs[x] and runs[x][0] < baseline - 2]
        assert not rising, f"over {t1 - t0:.0f} ms the trace rises at {rising[:10]}: a ramp"
        if t1 - t0 < 100:
            break
        x = box["x"] + expected * box["width"] / len(runs)
        page.mouse.move(x, box["y"] + box["height"] / 2)
        for _ in range(12):  # 12 notches of the wheel: 0.09 of the span
            page.mouse.wheel(0, -100)
        settle(page)
    page.screenshot(path=str(run.stack.tmp / "spike-zoomed.png"))
    assert page.errors == []  # type: ignore[attr-defined]


def test_the_cursor_reads_cached_samples_at_sample_zoom(run: Run, page: Page) -> None:
    open_run(page, run)
    show(page, run.spike_ms - 100, run.spike_ms + 100)  # 1 kHz: a sample every 6.7 px
    runs, peak, _expected = spike_at(page, run)
    box = page.locator(f"sd-chart {PLOT}").first.bounding_box()
    px = box["width"] / len(runs)
    for dx, shown in [(3, "100"), (-3, "0"), (40, "0")]:
        page.mouse.move(box["x"] + (peak + 0.5) * px + dx, box["y"] + box["height"] / 2)
        page.wait_for_timeout(100)
        assert page.locator(VALUE).first.text_content() == shown, (
            f"{dx:+} px from the spike the cursor reads "
            f"{page.locator(VALUE).first.text_content()!r}")
    cursor = page.inner_text("sd-chart .chart-cursor")
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d\d", cursor), cursor


def test_value_labels_are_round_and_in_a_gutter_no_trace_reaches(run: Run, page: Page
                                                                 ) -> None:
    """The flat 0 runs across the height of the label 0: in the plot it would cross it."""
    open_run(page, run)
    show(page, run.spike_ms - 10_000, run.spike_ms + 10_000)
    labels = page.evaluate(f"() => {CHART}.yTicks")
    values = [float(v) for v in labels]
    assert len(values) >= 3 and 0.0 in values and values == sorted(values)
    step = values[1] - values[0]
    assert all(math.isclose(b - a, step) for a, b in itertools.pairwise(values))
    assert round(step / 10 ** math.floor(math.log10(step)), 6) in (1.0, 2.0, 5.0)
    gutter, plot = page.evaluate("""([rgb]) => {
        const chart = document.querySelector('sd-chart');
        const count = (c, rows, test) => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, rows).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (test(d[i], d[i+1], d[i+2], d[i+3])) n++;
            return n; };
        const trace = (r, g, b, a) => Math.abs(r - rgb[0]) < 40 && Math.abs(g - rgb[1]) < 40
            && Math.abs(b - rgb[2]) < 40 && a > 128;
        // a label's pixels: grey and opaque (the grid's grey is faint)
        const label = (r, g, b, a) => a > 160 && Math.abs(r - g) < 12 && Math.abs(g - b) < 12
            && r > 60 && r < 200;
        const g = chart.querySelector('canvas.chart-gutter');
        const p = chart.querySelector('canvas:not(.chart-gutter)');
        return [g ? [count(g, g.height, trace), count(g, g.height, label)] : null,
                count(p, chart.plotHeight, label)]; }""", [list(BLUE)])
    assert gutter is not None, "no gutter left of the plot"
    assert gutter[0] == 0, f"{gutter[0]} trace pixels in the labels' gutter"
    assert gutter[1] > 50, "no labels drawn in the gutter"
    assert plot == 0, f"{plot} label pixels inside the plot"
    box = page.locator("sd-chart .chart-gutter").bounding_box()
    plot_box = page.locator(f"sd-chart {PLOT}").first.bounding_box()
    assert box["x"] + box["width"] <= plot_box["x"] + 0.5
    page.locator("sd-chart").first.screenshot(path=str(run.stack.tmp / "gutter.png"))


def test_day_scale_axes_show_dates_on_local_hours(run: Run, page: Page) -> None:
    open_run(page, run)
    show(page, run.spike_ms - 18 * 3600e3, run.spike_ms + 6 * 3600e3)  # a day
    labels = page.evaluate(f"() => {CHART}.xTicks")
    page.locator("sd-chart").first.screenshot(path=str(run.stack.tmp / "day.png"))
    assert labels and all(re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}( \d\d:\d\d)?", t)
                          for t in labels), labels
    # 12 hours: two-hour steps on the local clock, whose hours are UTC's + 5:30
    show(page, run.spike_ms - 6 * 3600e3, run.spike_ms + 6 * 3600e3)
    labels = page.evaluate(f"() => {CHART}.xTicks")
    hours = [t for t in labels if re.fullmatch(r"\d\d:\d\d", t)]
    assert hours and all(t.endswith(":00") for t in hours), labels



def test_a_pan_into_an_empty_past_says_no_data_here(run: Run, page: Page) -> None:
    open_run(page, run)
    show(page, run.start_ms - 4 * 3600e3, run.start_ms - 3 * 3600e3)
    hint = page.locator("sd-chart .chart-empty")
    assert hint.count() == 1 and hint.is_visible(), "an empty chart with no word about it"
    assert hint.inner_text() == "no data here"
    assert page.evaluate(f"() => {CHART}.yTicks") == []  # not a made-up 0..1 axis
    # back on the run, the hint goes
    show(page, run.spike_ms - 5000, run.spike_ms + 5000)
    assert hint.is_hidden()
    assert page.errors == []  # type: ignore[attr-defined]


class EnvSource:
    """Env records at 20 Hz whose texts and numbers change length at every record."""

    def __init__(self, port: int) -> None:
        from speeddata.schemas import load_file
        from speeddata.sender import Encoder

        self.encoder = Encoder(load_file(SCHEMAS / "env.avsc"))
        self.port = port
        self.stop = threading.Event()
        self.last_ns = 0
        self.thread = threading.Thread(target=self.send, daemon=True)

    def send(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            i = 0
            while not self.stop.is_set():
                long = i % 2 == 1
                now = time.time_ns()
                sock.sendto(self.encoder.encode({
                    "time": now, "humidity": -12345.678 if long else 5.0,
                    "pressure": 1013.25, "state": "RUNNING" if long else "IDLE",
                    "message": "a much longer operator message than the last" if long
                    else "ok"}), ("127.0.0.1", self.port))
                self.last_ns = now
                i += 1
                self.stop.wait(0.05)

    def __enter__(self) -> EnvSource:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


CARDS = [{"value": "env.state"}, {"value": "env.message"}, {"value": "env.humidity"},
         {"chart": "env.humidity env.pressure", "window": 10}, {"chart": "motor.speed",
                                                                  "window": 10}]


def boxes(page: Page) -> list:
    return page.evaluate("""() => [...document.querySelectorAll(
        'sd-value, sd-chart, header, .legend-item')].map((e) => {
        const r = e.getBoundingClientRect();
        return [e.localName, Math.round(r.x), Math.round(r.y), Math.round(r.width),
                Math.round(r.height)]; })""")


def test_cards_header_and_legends_stay_put_as_texts_change(run: Run, page: Page) -> None:
    with EnvSource(run.stack.relay.port):
        open_layout(page, run.url, CARDS)
        page.wait_for_function("() => document.querySelector('sd-value .value-text')"
                               ".textContent !== '\u2013'", timeout=TIMEOUT * 1000)
        page.wait_for_timeout(500)
        seen = set()
        texts = set()
        for _ in range(12):  # the values change length at every record (20 a second)
            seen.add(json.dumps(boxes(page)))
            texts.add(page.inner_text("sd-value[signal='env.message'] .value-text"))
            page.wait_for_timeout(80)
        assert len(texts) >= 2, texts  # it did change
        assert len(seen) == 1, "cards, legends or charts moved as values changed length"
        before = boxes(page)
        # a tag made from the header: its message must not make the header wrap
        page.fill("#mark input", "steady")
        page.click("#mark button")
        page.wait_for_function("() => document.querySelector('#mark').classList"
                               ".contains('recording')")
        page.click("#mark button")
        page.wait_for_function("() => document.querySelector('#mark output').value"
                               ".includes('→')", timeout=TIMEOUT * 1000)
        after = boxes(page)
        page.screenshot(path=str(run.stack.tmp / "steady.png"))
    moved = [(a, b) for a, b in zip(before, after, strict=True)
             if a[0] in ("header", "sd-chart") and a != b]
    assert not moved, f"the header or a chart moved when the tag was made: {moved}"
    assert page.errors == []  # type: ignore[attr-defined]


def test_values_and_messages_are_in_local_time(run: Run, page: Page) -> None:
    with EnvSource(run.stack.relay.port) as source:
        open_layout(page, run.url, CARDS)
        page.wait_for_function("() => document.querySelector('sd-value .value-time')"
                               ".textContent !== ''", timeout=TIMEOUT * 1000)
        page.fill("#mark input", "local")
        page.click("#mark button")
        page.wait_for_function("() => document.querySelector('#mark output').value"
                               ".startsWith('marking')", timeout=TIMEOUT * 1000)
    last = source.last_ns
    shown = datetime.datetime.fromtimestamp(last / 1e9, KOLKATA).strftime("%H:%M:%S")
    page.wait_for_function("(t) => document.querySelector('sd-value .value-time')"
                           ".textContent === t", arg=shown, timeout=TIMEOUT * 1000)
    assert "local time (Asia/Calcutta)" in page.inner_text("header") or (
        "local time (Asia/Kolkata)" in page.inner_text("header"))
    message = page.inner_text("#mark output")
    hour = datetime.datetime.fromtimestamp(last / 1e9, KOLKATA).strftime("%H:%M")
    assert hour in message and "T" not in message.split(":", 1)[1], message


def test_share_carries_the_paused_range_and_opens_the_same_view(run: Run, page: Page) -> None:
    open_layout(page, run.url, [{"chart": "motor.speed", "window": 10},
                                {"chart": "motor.torque", "window": 60}])
    t0, t1 = run.spike_ms - 1234.5, run.spike_ms + 4321
    show(page, t0, t1)
    page.click("#share")
    page.wait_for_function("() => !document.getElementById('toast')?.hidden"
                           " || document.getElementById('share').textContent !== 'share'",
                           timeout=TIMEOUT * 1000)
    link = page.evaluate("() => navigator.clipboard.readText()")
    toast = page.inner_text("#toast") if page.locator("#toast").count() else ""
    assert "range" in toast and "token" not in toast, toast  # this server has none
    other = page.context.new_page()
    other.goto(link)
    wait_connected(other)
    shared = other.evaluate("() => [...document.querySelectorAll('sd-chart')]"
                            ".map((c) => [c.paused, c.span])")
    assert shared[0][0] and abs(shared[0][1][0] - t0) <= 1 and abs(shared[0][1][1] - t1) <= 1, (
        shared)
    assert shared[1] == [False, None]  # the live one stays live
    other.wait_for_function(f"() => {CHART}.settled()", timeout=TIMEOUT * 1000)
    other.wait_for_timeout(100)
    assert max(r[1] for r in trace_runs(other) if r) > 0  # and it is drawn


def test_the_wheel_scrolls_the_page_over_a_live_chart_and_zooms_a_paused_one(
        run: Run, page: Page) -> None:
    page.set_viewport_size({"width": 1000, "height": 600})
    open_layout(page, run.url, [{"chart": "motor.speed", "window": 10}] * 4)
    box = page.locator(f"sd-chart {PLOT}").first.bounding_box()
    page.mouse.move(box["x"] + 200, box["y"] + 50)
    page.mouse.wheel(0, 300)
    page.wait_for_function("() => scrollY > 0", timeout=TIMEOUT * 1000)
    assert not page.evaluate(f"() => {CHART}.paused"), "the wheel paused a live chart"
    page.evaluate("() => scrollTo(0, 0)")
    page.wait_for_function("() => scrollY === 0")
    # with Ctrl held it zooms (and pauses) the chart, and the page stays
    page.keyboard.down("Control")
    page.mouse.wheel(0, -300)
    page.keyboard.up("Control")
    page.wait_for_function(f"() => {CHART}.paused", timeout=TIMEOUT * 1000)
    t0, t1 = view(page)
    assert t1 - t0 < 9000
    # a paused chart zooms without Ctrl, and the page does not scroll
    page.mouse.wheel(0, 300)
    page.wait_for_timeout(200)
    t2, t3 = view(page)
    assert t3 - t2 > t1 - t0 and page.evaluate("() => scrollY") == 0


def test_keys_pan_and_zoom_a_focused_chart(run: Run, page: Page) -> None:
    open_run(page, run)
    canvas = page.locator(f"sd-chart {PLOT}").first
    canvas.focus()
    assert page.evaluate("() => document.activeElement.localName") == "canvas"
    page.keyboard.press("ArrowLeft")
    assert page.evaluate(f"() => {CHART}.paused")
    t0, t1 = view(page)
    page.keyboard.press("ArrowLeft")
    a, b = view(page)
    assert abs(a - (t0 - 0.1 * (t1 - t0))) < 0.01 and abs((b - a) - (t1 - t0)) < 0.01
    page.keyboard.press("+")
    c, d = view(page)
    assert abs((d - c) - (b - a) / 1.25) < 0.01 and abs((c + d) - (a + b)) < 0.01
    page.keyboard.press("-")
    page.keyboard.press("-")
    e, f = view(page)
    assert abs((f - e) - (b - a) * 1.25) < 0.01
    page.keyboard.press("Escape")
    assert not page.evaluate(f"() => {CHART}.paused")


def test_what_a_screen_reader_gets(run: Run, page: Page) -> None:
    """No live regions that change ten times a second, labelled plots, and the alarm
    badge's detail reachable from the keyboard."""
    from speeddata.schemas import load_file
    from speeddata.sender import Encoder

    encoder = Encoder(load_file(SCHEMAS / "motor.avsc"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # too hot: an alarm
        sock.sendto(encoder.encode({
            "time": time.time_ns(), "speed": 0.0, "torque": 0.0, "current": 0.0,
            "voltage": 0.0, "position": 0.0, "temperature": 66.0}),
            ("127.0.0.1", run.stack.relay.port))
    open_layout(page, run.url, [{"value": "motor.temperature"},
                                {"chart": "motor.speed motor.temperature", "window": 10}])
    page.wait_for_function("() => !document.getElementById('alarms').hidden",
                           timeout=TIMEOUT * 1000)
    live = page.evaluate("""() => [...document.querySelectorAll(
        'sd-chart output, sd-value output, sd-chart [aria-live], sd-value [aria-live]')]
        .map((e) => e.className)""")
    assert live == [], f"live regions in charts or cards: {live}"
    label = page.get_attribute(f"sd-chart {PLOT}", "aria-label") or ""
    assert page.get_attribute(f"sd-chart {PLOT}", "role") == "img"
    assert "motor.speed" in label and "motor.temperature" in label, label
    for _ in range(40):  # Tab through the page until the badge has the focus
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "alarms":
            break
    else:
        raise AssertionError("the alarm badge cannot be reached with Tab")
    description = page.evaluate("""() => {
        const b = document.activeElement;
        const ids = (b.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
        return ids.map((id) => document.getElementById(id).textContent).join(' '); }""")
    assert "motor.temperature: alarm, 66 since" in description, description
    page.keyboard.press("Enter")
    detail = page.locator("#alarms-detail")
    detail.wait_for(state="visible")
    assert "motor.temperature: alarm" in detail.inner_text()
    page.screenshot(path=str(run.stack.tmp / "alarm-detail.png"))
    assert page.errors == []  # type: ignore[attr-defined]
