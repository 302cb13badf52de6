"""The spectrum and XY panels in Chromium, opened from a chart's legend, over a cache
holding 8 s of motor from 20 s ago: speed a 37 Hz sine of amplitude 2.5 at 1 kHz,
torque its cosine. Pixels read back: the spectrum's peak is drawn at the x of 37 Hz,
and torque against speed is a ring with nothing in its centre."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.helpers import relay_settings, start_relay, start_serve
from tests.stripchart.conftest import Stack
from tests.stripchart.test_page import ARGS, CHROMIUM, wait_connected
from tests.stripchart.test_spectra_api import write_motor

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is missing: run ./install --dev")]

SHOTS = os.environ.get("SPEEDDATA_SHOTS")  # a folder to keep the panels' screenshots in

# pixels of the trace colour (#1f77b4, antialiased): blue well above red, not see-through
BLUE_PIXELS = """(sel) => {
  const c = document.querySelector(sel);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const out = [];
  for (let i = 0; i < d.length; i += 4) {
    const p = i / 4;
    if (d[i + 3] > 90 && d[i + 2] - d[i] > 50) out.push([p % c.width, Math.floor(p / c.width)]);
  }
  return { dpr: window.devicePixelRatio || 1, pixels: out };
}"""


@pytest.fixture(scope="module")
def sines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("page-spectra")
    write_motor(tmp / "cache", time.time_ns() - 20 * 10**9, 8)
    relay = start_relay(tmp, relay_settings(tmp))
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
def page(browser: Browser, sines: Stack) -> Iterator[Page]:
    p = browser.new_page(viewport={"width": 1200, "height": 1000})
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    layout = json.dumps([{"chart": "motor.speed motor.torque", "window": 60}])
    p.goto(f"{sines.serve.url}#layout={urllib.parse.quote(layout)}")
    wait_connected(p)
    yield p
    p.close()
    assert not errors


def open_from_legend(page: Page, signal: str, entry: str, tag: str,
                     state: str = "drawn") -> None:
    page.locator("sd-chart .legend-item b", has_text=signal).first.click()
    page.locator(".panel-menu button", has_text=entry).click()
    page.wait_for_selector(f"{tag}[data-state={state}]", timeout=30_000)
    if SHOTS:
        page.locator(tag).screenshot(path=f"{SHOTS}/{tag}-{state}.png")


@pytest.mark.parametrize("scale", ["lin", "log"])
def test_the_spectrum_panel_draws_the_peak_of_a_37_hz_sine_at_37_hz(page: Page,
                                                                    scale: str) -> None:
    open_from_legend(page, "motor.speed", "spectrum of motor.speed", "sd-spectrum")
    panel = "document.querySelector('sd-spectrum')"
    if scale == "log":
        page.select_option("sd-spectrum .panel-head select >> nth=3", "log")
        page.wait_for_function(f"{panel}.plot && {panel}.plot.log")
        if SHOTS:
            page.locator("sd-spectrum").screenshot(path=f"{SHOTS}/sd-spectrum-log.png")
    status = page.locator("sd-spectrum .panel-status").text_content()
    assert "8000 samples at 1000.00 Hz" in status and "irregular" not in status
    got = page.evaluate(BLUE_PIXELS, "sd-spectrum canvas")
    dpr = got["dpr"]
    top = min(y for _, y in got["pixels"])
    peak_x = [x for x, y in got["pixels"] if y == top]
    expected = page.evaluate(f"{panel}.xOf(37)") * dpr
    bin_px = abs(page.evaluate(f"{panel}.xOf(37 + 1000 / 1024) - {panel}.xOf(37)")) * dpr
    assert min(abs(x - expected) for x in peak_x) <= max(2.0, bin_px), (peak_x, expected)
    # far from the peak the PSD is orders of magnitude down: drawn near the bottom
    away = page.evaluate(f"{panel}.xOf(300)") * dpr
    low = [y for x, y in got["pixels"] if abs(x - away) < 1]
    assert low and min(low) > top + 100 * dpr


def test_the_xy_of_sin_against_cos_draws_a_circle(page: Page) -> None:
    open_from_legend(page, "motor.speed", "XY: motor.torque against motor.speed", "sd-xy")
    panel = "document.querySelector('sd-xy')"
    got = page.evaluate(BLUE_PIXELS, "sd-xy canvas")
    dpr = got["dpr"]
    blue = {(x, y) for x, y in got["pixels"]}
    assert blue
    for degrees in range(0, 360, 15):
        px, py = page.evaluate(f"{panel}.at(2.5 * Math.cos({degrees} * Math.PI / 180), "
                               f"2.5 * Math.sin({degrees} * Math.PI / 180))")
        near = any((round(px * dpr) + dx, round(py * dpr) + dy) in blue
                   for dx in range(-3, 4) for dy in range(-3, 4))
        assert near, f"nothing drawn on the ring at {degrees} degrees"
    # nothing inside 60 % of the radius (an ellipse in px: the axes' scales differ)
    cx, cy = page.evaluate(f"{panel}.at(0, 0)")
    rx = page.evaluate(f"{panel}.at(1.5, 0)")[0] - cx
    ry = cy - page.evaluate(f"{panel}.at(0, 1.5)")[1]
    inside = [p for p in blue if ((p[0] / dpr - cx) / rx) ** 2 + ((p[1] / dpr - cy) / ry) ** 2 < 1]
    assert not inside, f"{len(inside)} pixels drawn in the centre"


def test_the_spectrogram_draws_37_hz_loudest_all_along(page: Page) -> None:
    open_from_legend(page, "motor.speed", "spectrum of motor.speed", "sd-spectrum")
    page.select_option("sd-spectrum .panel-head select >> nth=0", "spectrogram")
    page.wait_for_selector("sd-spectrum[data-state=drawn]", timeout=30_000)
    panel = "document.querySelector('sd-spectrum')"
    page.wait_for_function(f"{panel}.plot && {panel}.plot.spectrogram")
    if SHOTS:
        page.locator("sd-spectrum").screenshot(path=f"{SHOTS}/sd-spectrogram.png")
    # the loudest colour (yellow) where the samples are, at the height of 37 Hz
    hot = page.evaluate("""(sel) => {
      const c = document.querySelector(sel);
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const out = [];
      for (let i = 0; i < d.length; i += 4) {
        if (d[i] > 200 && d[i + 1] > 200 && d[i + 2] < 90) out.push(Math.floor(i / 4 / c.width));
      }
      return { dpr: window.devicePixelRatio || 1, rows: out };
    }""", "sd-spectrum canvas")
    y37 = page.evaluate(f"{panel}.plot.y.map(37)") * hot["dpr"]
    bin_px = abs(page.evaluate(f"{panel}.plot.y.map(37 + 1000 / 256) - {panel}.plot.y.map(37)"))
    assert hot["rows"], "nothing drawn at the loudest colour"
    # the legend strip is yellow at its top too: only rows below its top few pixels count
    rows = [r for r in hot["rows"] if r > page.evaluate(f"{panel}.plot.y.map(400)") * hot["dpr"]]
    assert rows and all(abs(r - y37) <= max(3, 2 * bin_px * hot["dpr"]) for r in rows), (
        sorted(set(rows)), y37)


def test_a_panel_says_why_the_server_refused(browser: Browser, sines: Stack) -> None:
    p = browser.new_page(viewport={"width": 1200, "height": 900})
    hour_ago = time.time() * 1000 - 3_600_000
    layout = json.dumps([{"chart": "motor.speed", "window": 10,
                          "view": [round(hour_ago), round(hour_ago + 10_000)]}])
    p.goto(f"{sines.serve.url}#layout={urllib.parse.quote(layout)}")
    wait_connected(p)
    open_from_legend(p, "motor.speed", "spectrum of motor.speed", "sd-spectrum", "refused")
    status = p.locator("sd-spectrum .panel-status")
    assert "no spectrum: 400: 0 samples in the range" in status.text_content()
    assert status.evaluate("e => getComputedStyle(e).color") == "rgb(179, 38, 30)"
    p.close()



def test_the_legend_menu_works_from_the_keyboard(page: Page) -> None:
    """Tab reaches a legend name; Enter opens its menu with the focus on the first entry,
    the arrows move (and wrap), Escape closes it and gives the focus back; Space opens it
    too, and Enter on an entry opens that panel."""
    name = page.locator("sd-chart .legend-item b", has_text="motor.speed").first
    page.locator("sd-chart .chart-canvas").first.focus()
    for _ in range(12):  # forward from the plot, as a keyboard user goes
        page.keyboard.press("Tab")
        if name.evaluate("e => e === document.activeElement"):
            break
    assert name.evaluate("e => e === document.activeElement"), "Tab never reached the name"
    assert name.get_attribute("aria-haspopup") == "menu"
    page.keyboard.press("Enter")
    menu = page.locator(".panel-menu")
    assert menu.count() == 1 and name.get_attribute("aria-expanded") == "true"
    focused = "() => document.activeElement.textContent"
    assert page.evaluate(focused) == "spectrum of motor.speed"
    page.keyboard.press("ArrowDown")
    assert page.evaluate(focused) == "XY: motor.torque against motor.speed"
    page.keyboard.press("ArrowDown")  # past the last: the first again
    assert page.evaluate(focused) == "spectrum of motor.speed"
    page.keyboard.press("ArrowUp")
    assert page.evaluate(focused) == "XY: motor.torque against motor.speed"
    page.keyboard.press("Escape")
    assert menu.count() == 0 and name.get_attribute("aria-expanded") == "false"
    assert name.evaluate("e => e === document.activeElement"), "the focus was not given back"
    assert not page.evaluate("document.querySelector('sd-chart').paused")
    page.keyboard.press(" ")
    assert menu.count() == 1
    page.keyboard.press("End")
    page.keyboard.press("Enter")
    page.wait_for_selector("sd-xy[data-state=drawn]", timeout=30_000)
    assert menu.count() == 0


def test_a_panel_on_a_live_chart_reads_again_one_request_at_a_time(page: Page) -> None:
    """Open on a live chart, the spectrum reads the moving window every 2 s, the next
    request only after the last answered; paused, it stops reading."""
    events: list[tuple[str, float, str]] = []
    spectrum = "/api/spectrum?"
    page.on("request", lambda r: spectrum in r.url and events.append(
        ("start", time.monotonic(), r.url)))
    page.on("requestfinished", lambda r: spectrum in r.url and events.append(
        ("end", time.monotonic(), r.url)))
    open_from_legend(page, "motor.speed", "spectrum of motor.speed", "sd-spectrum")
    began = time.monotonic()
    page.wait_for_function("document.querySelector('sd-spectrum').loads >= 4",
                           timeout=30_000)
    took = time.monotonic() - began
    assert took >= 2 * 2.0, f"4 reads in {took:.1f} s: faster than one per 2 s"
    open_at = 0
    for kind, _, _ in events:  # one at a time
        open_at += 1 if kind == "start" else -1
        assert open_at in (0, 1), events
    starts = [int(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["start"][0])
              for kind, _, url in events if kind == "start"]
    assert starts == sorted(starts) and starts[-1] - starts[0] >= 4000, starts
    assert page.locator("sd-spectrum").get_attribute("data-state") == "drawn"
    page.locator("sd-chart .chart-pause").first.click()
    page.wait_for_function("!document.querySelector('sd-spectrum').busy")
    loads = page.evaluate("document.querySelector('sd-spectrum').loads")
    page.wait_for_timeout(4500)
    assert page.evaluate("document.querySelector('sd-spectrum').loads") == loads
