"""The page's chart maths (web/js/chartmath.js) on its own, in headless Chromium: buckets
whose true picture is known are folded into columns and plotted into a pixel buffer,
and the pixels are read back. No server: the module is served from the package."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest
from playwright.sync_api import Page, sync_playwright

from speeddata.stripchart.app import WEB_DIR
from tests.stripchart.test_page import ARGS, CHROMIUM

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not CHROMIUM or not __import__("pathlib").Path(CHROMIUM).exists(),
    reason="Chromium is missing: run ./install --dev")]

ORIGIN = "http://chartmath.test"


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()

        def serve(route) -> None:  # the package's files, as the server would give them
            path = route.request.url.removeprefix(ORIGIN)
            if path == "/":
                route.fulfill(body="<!doctype html><title>chartmath</title>",
                              content_type="text/html")
            else:
                route.fulfill(body=(WEB_DIR / path.lstrip("/")).read_text(),
                              content_type="text/javascript")

        page.route(f"{ORIGIN}/**", serve)
        page.goto(f"{ORIGIN}/")
        page.evaluate("async () => { window.cm = await import('/js/chartmath.js'); }")
        yield page
        browser.close()


def buckets(times_ms: np.ndarray, values: np.ndarray, width_ms: float) -> dict:
    """What the server sends for one level: per bucket its start, min, max and last."""
    keys = np.floor(times_ms / width_ms).astype(np.int64)
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    final = np.r_[first[1:] - 1, len(keys) - 1]
    return {"start": (keys[first] * width_ms).tolist(),
            "low": np.minimum.reduceat(values, first).tolist(),
            "high": np.maximum.reduceat(values, first).tolist(),
            "last": values[final].tolist(), "width": width_ms}


DRAW = """([levels, past, t0, t1, W, H, base, top]) => {
    const out = cm.newColumns(W);
    const col = cm.foldColumns(levels.map((l) => ({ n: l.start.length, width: l.width,
        a: { start: l.start, low: l.low, high: l.high, last: l.last } })), past, t0, t1, out);
    const pixels = new Uint32Array(W * H);
    if (col) cm.plotColumns(pixels, W, H, col, base, (H - 1) / (top - base), 0xff0000ff);
    const runs = [];
    for (let x = 0; x < W; x++) {
        let a = -1, b = -1;
        for (let y = 0; y < H; y++) if (pixels[y * W + x]) { if (a < 0) a = y; b = y; }
        runs.push(a < 0 ? null : [a, b]);
    }
    return { runs, low: Array.from(col ? col.low : []), high: Array.from(col ? col.high : []),
             count: Array.from(col ? col.count : []), gap: Array.from(col ? col.gap : []) };
}"""


def draw(page: Page, levels: list[dict], t0: float, t1: float, width: int = 1000,
         height: int = 200, base: float = -1.1, top: float = 1.1, past: dict | None = None
         ) -> dict:
    return page.evaluate(DRAW, [levels, past, t0, t1, width, height, base, top])


def row(value: float, height: int = 200, base: float = -1.1, top: float = 1.1) -> float:
    return (height - 1) - (value - base) * (height - 1) / (top - base)


def test_a_400_hz_sine_at_2_khz_is_a_band_of_its_full_amplitude(page: Page) -> None:
    t = np.arange(20_000) * 0.5  # ms: 2 kHz for 10 s
    values = np.sin(2 * np.pi * 400 * t / 1000)
    drawn = draw(page, [buckets(t, values, 10.0)], 0, 10_000)
    peak = values.max()  # 0.951: the samples never reach the crest
    for x, run in enumerate(drawn["runs"][:999]):
        assert run is not None, f"column {x} is empty"
        assert run[0] <= row(peak) + 1 and run[1] >= row(-peak) - 1, (
            f"column {x} draws {run}, not the band {row(peak):.0f}..{row(-peak):.0f}")


def test_a_sine_sparser_than_pixels_is_one_connected_line(page: Page) -> None:
    t = np.arange(0, 10_000, 50.0)  # 20 Hz samples of a 0.5 Hz sine, 1000 columns
    values = np.sin(2 * np.pi * 0.5 * t / 1000)
    runs = draw(page, [buckets(t, values, 10.0)], 0, 10_000)["runs"]
    drawn = [x for x, r in enumerate(runs) if r]
    first, last = drawn[0], drawn[-1]
    assert first <= 1 and last >= 990
    assert all(runs[x] for x in range(first, last + 1)), "columns without trace (dots)"
    for x in range(first, last):
        (a, b), (c, d) = runs[x], runs[x + 1]
        assert c <= b + 1 and a <= d + 1, f"a vertical break between columns {x} and {x + 1}"


def test_a_one_sample_spike_is_drawn_at_every_zoom(page: Page) -> None:
    t = np.arange(60_000.0)  # 1 kHz for 60 s, one spike
    values = np.sin(t / 50) * 0.1
    values[41_234] = 1.0
    for width, t0, t1 in [(10.0, 35_000, 45_000), (10.0, 0, 60_000), (250.0, 0, 60_000)]:
        drawn = draw(page, [buckets(t, values, width)], t0, t1)
        assert max(drawn["high"]) == 1.0
        assert min(r[0] for r in drawn["runs"] if r) <= row(1.0) + 1


def test_no_value_at_the_seam_of_two_levels_that_the_data_did_not_have(page: Page) -> None:
    """History on connect (250 ms buckets) meets live data (10 ms buckets, from 45 s on):
    each column holds only values the data had in that column's time span (give or take
    the width of the bucket drawn there)."""
    t = np.arange(60_000.0)
    values = np.sin(2 * np.pi * 3 * t / 1000) + t / 30_000 + np.where(t >= 45_000, 2.0, 0.0)
    coarse = buckets(t, values, 250.0)
    fine = buckets(t[t >= 45_000], values[t >= 45_000], 10.0)
    t0, t1, cols = 40_000, 50_000, 1000
    drawn = draw(page, [fine, coarse], t0, t1, cols, base=-2, top=5)
    span = (t1 - t0) / cols
    for x in range(cols):
        if not drawn["count"][x]:
            continue
        start = t0 + x * span
        slack = 10.0 if start >= 45_000 else 250.0
        inside = values[(t >= start - slack) & (t < start + span + slack)]
        assert inside.min() - 1e-9 <= drawn["low"][x] <= drawn["high"][x] <= inside.max() + 1e-9, (
            f"column {x} ({start:.0f} ms) draws {drawn['low'][x]:.3f}..{drawn['high'][x]:.3f}, "
            f"the data there spans {inside.min():.3f}..{inside.max():.3f}")
    # and past the seam nothing comes from the coarse level: its 45.0-45.25 s bucket is out
    assert drawn["count"][500] == 1


def test_a_real_gap_breaks_the_line_and_is_not_bridged(page: Page) -> None:
    t = np.r_[np.arange(0, 4000.0), np.arange(9000, 10_000.0)]  # no samples 4-9 s
    values = np.where(t < 5000, -0.5, 0.5)
    drawn = draw(page, [buckets(t, values, 10.0)], 0, 10_000)
    assert drawn["gap"][900] == 1
    assert all(r is None for r in drawn["runs"][405:895]), "a line across the gap"


def test_cache_columns_draw_only_before_the_servers_memory(page: Page) -> None:
    live_t = np.arange(50_000.0, 60_000.0)
    live = buckets(live_t, np.full(len(live_t), 0.5), 10.0)
    past = {"width": 60.0, "start": [x * 60.0 for x in range(1000)],
            "low": [-0.5] * 1000, "high": [-0.5] * 1000, "last": [-0.5] * 1000}
    drawn = draw(page, [live], 0, 60_000, past=past)
    assert drawn["high"][100] == -0.5 and drawn["high"][900] == 0.5
    assert max(drawn["high"][834:]) == 0.5 and min(drawn["low"][834:]) == 0.5  # no overlap


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (-16.858, 81.647), (47.1, 48.9), (0, 2e-8),
                                       (-1e6, 3e6), (0.0001, 0.0009)])
def test_ticks_are_round_and_labels_exact(page: Page, lo: float, hi: float) -> None:
    step, ticks, labels = page.evaluate("""([lo, hi]) => {
        const { step, ticks } = cm.niceTicks(lo, hi, 5);
        return [step, ticks, ticks.map((v) => cm.tickLabel(v, step))]; }""", [lo, hi])
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 9) in (1, 2, 5)
    assert 2 <= len(ticks) <= 11 and ticks[0] >= lo - 1e-12 and ticks[-1] <= hi + 1e-12
    for label, value in zip(labels, ticks, strict=True):
        assert "0000000" not in label and "9999999" not in label, label  # no float noise
        assert math.isclose(float(label), value, rel_tol=1e-9, abs_tol=step * 1e-6)
    assert len(set(labels)) == len(labels)
    assert all(b > a for a, b in itertools.pairwise(ticks))


def test_autoscale_keeps_its_range_while_noise_fits(page: Page) -> None:
    # a steady noisy signal (48 +- 0.3, Gaussian-like) through a sliding 1000-sample window
    ranges = page.evaluate("""() => {
        let seed = 5;
        const rand = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
        const gauss = () => { let s = 0; for (let k = 0; k < 12; k++) s += rand(); return s - 6; };
        const window = Array.from({ length: 1000 }, () => 48 + 0.3 * gauss());
        let r = null; const seen = [];
        for (let frame = 0; frame < 300; frame++) {
            window.splice(0, 10, ...Array.from({ length: 10 }, () => 48 + 0.3 * gauss()));
            r = cm.autoRange(r, Math.min(...window), Math.max(...window));
            if (frame >= 5) seen.push(r.join(","));
        }
        r = cm.autoRange(r, 0, 100); seen.push(r.join(","));
        return seen; }""")
    assert len(set(ranges[:-1])) == 1, "the range moved with noise"
    assert ranges[-1] != ranges[0]  # a real change rescales
    low, high = map(float, ranges[-1].split(","))
    assert low <= 0 and high >= 100


def test_right_after_the_server_starts_a_1_hz_sine_is_smooth(page: Page) -> None:
    """Both levels begin when the server started, 4 s into a 10 s window: the fine one
    draws all of it, no 250 ms staircase (its flat steps would be 25 columns long)."""
    t = np.arange(6000.0, 10_000.0)  # 1 kHz since the start
    values = np.sin(2 * np.pi * t / 1000)
    drawn = draw(page, [buckets(t, values, 10.0), buckets(t, values, 250.0)], 0, 10_000)
    runs = [r for r in drawn["runs"][600:] if r]
    assert len(runs) >= 395
    longest, current = 1, 1
    for a, b in itertools.pairwise(runs):
        current = current + 1 if a == b else 1
        longest = max(longest, current)
    assert longest <= 5, f"a flat step {longest} columns long: a staircase"


def test_times_are_local_with_utc_selectable(page: Page) -> None:
    context = page.context.browser.new_context(timezone_id="Asia/Tokyo")
    tokyo = context.new_page()
    try:
        tokyo.route(f"{ORIGIN}/**", lambda route: route.fulfill(
            body=(WEB_DIR / route.request.url.removeprefix(ORIGIN).lstrip("/")).read_text()
            if route.request.url != f"{ORIGIN}/" else "<!doctype html>",
            content_type="text/javascript" if route.request.url.endswith(".js")
            else "text/html"))
        tokyo.goto(f"{ORIGIN}/")
        labels = tokyo.evaluate("""async () => {
            const cm = await import('/js/chartmath.js');
            const local = cm.clock(Date.UTC(2026, 10, 23, 16, 30));
            cm.useUtc(true);
            return [local, cm.clock(Date.UTC(2026, 10, 23, 16, 30))]; }""")
    finally:
        context.close()
    assert labels == ["01:30:00.000", "16:30:00.000"]  # Tokyo is UTC+9


def test_a_bucket_coarser_than_a_column_gives_way_to_the_cache(page: Page) -> None:
    """A run that ended: the memory has 250 ms buckets there, the view 2 ms columns. The
    spike at 611 ms is drawn where the cache's columns put it, never at the bucket's
    start (500 ms) with a ramp up to it; the coarse bucket fills in only past the cache's
    last column, and nowhere until the cache has answered."""
    t = np.arange(0, 2000.0)  # 1 kHz, flat, one spike
    values = np.zeros(len(t))
    values[611] = 1.0
    coarse = buckets(t, values, 250.0)
    cols = 1000
    inside = t < 1500  # the cache has the first 1.5 s (the rest is not written yet)
    keys = np.floor(t[inside] / 2.0)
    past = {"width": 2.0, "start": (np.unique(keys) * 2.0).tolist(),
            "low": [float(values[inside][keys == k].min()) for k in np.unique(keys)],
            "high": [float(values[inside][keys == k].max()) for k in np.unique(keys)],
            "last": [float(values[inside][keys == k][-1]) for k in np.unique(keys)]}
    drawn = page.evaluate("""([coarse, past, cols]) => {
        const levels = [{ n: coarse.start.length, width: 250, a: coarse }];
        const fold = (p, most) => Array.from(cm.foldColumns(levels, p, 0, 2000,
            cm.newColumns(cols), most)?.high ?? []);
        const count = (p, most) => Array.from(cm.foldColumns(levels, p, 0, 2000,
            cm.newColumns(cols), most)?.count ?? []);
        return { cached: fold(past, 2), counts: count(past, 2), waiting: count(null, 2),
                 before: fold(past, Infinity) }; }""", [coarse, past, cols])
    high, counts = drawn["cached"], drawn["counts"]
    assert high[305] == 1.0 and max(high[:305]) == 0.0 and max(high[306:750]) == 0.0
    assert counts[250] == 1  # the 500 ms bucket is not folded in with the cache's column
    assert counts[875] == 1 and high[875] == 0.0  # 1.75 s: the memory, past the cache
    assert sum(drawn["waiting"]) == 0  # no answer yet: no 250 ms bucket at all
    assert drawn["before"][250] == 1.0  # as it was: the bucket at 500 ms held the spike


def test_the_cursor_reads_the_value_the_trace_shows(page: Page) -> None:
    values = page.evaluate("""() => {
        const col = cm.newColumns(100);
        for (const [x, v, gap] of [[10, 1, 0], [20, 2, 0], [60, 3, 1]]) {
            col.count[x] = 1; col.last[x] = v; col.low[x] = v; col.high[x] = v;
            col.gap[x] = gap; }
        return [5, 10, 15, 30, 59, 60, 70, 99].map((x) => cm.valueAtColumn(col, x, 100)); }""")
    # nothing before the first sample; held between joined samples; a break at 60 (a
    # gap): nothing in it; after the last, for 2.5 s (25 columns of 100 ms)
    assert [None if v is None or v != v else v for v in values] == [
        None, 1, 1, None, None, 3, 3, None]


def test_time_ticks_fall_on_local_hours_and_days_show_dates(page: Page) -> None:
    context = page.context.browser.new_context(timezone_id="Asia/Kolkata")
    kolkata = context.new_page()
    try:
        kolkata.route(f"{ORIGIN}/**", lambda route: route.fulfill(
            body=(WEB_DIR / route.request.url.removeprefix(ORIGIN).lstrip("/")).read_text()
            if route.request.url != f"{ORIGIN}/" else "<!doctype html>",
            content_type="text/javascript" if route.request.url.endswith(".js")
            else "text/html"))
        kolkata.goto(f"{ORIGIN}/")
        hours, days, midnight, cursor = kolkata.evaluate("""async () => {
            const cm = await import('/js/chartmath.js');
            const t0 = Date.UTC(2026, 10, 23, 0, 0), label = (t0, t1) => {
                const { step, ticks } = cm.timeTicks(t0, t1);
                return ticks.map((t) => cm.timeLabel(t, step, t1 - t0)); };
            return [label(t0, t0 + 12 * 3600e3), label(t0, t0 + 3 * 86400e3),
                    label(Date.UTC(2026, 10, 23, 12, 0), Date.UTC(2026, 10, 24, 0, 0)),
                    cm.cursorLabel(t0, 86400e3)]; }""")
    finally:
        context.close()
    assert hours == ["06:00", "08:00", "10:00", "12:00", "14:00", "16:00"]  # not 05:30
    assert days[:2] == ["Nov 23 12:00", "Nov 24 00:00"], days  # 12-hour steps, dated
    assert "Nov 24" in midnight and "20:00" in midnight  # 12 h: the date at midnight
    assert cursor == "Nov 23 05:30:00.000"


def test_a_lone_sample_is_a_dot_and_sparse_samples_are_marked(page: Page) -> None:
    lone = draw(page, [buckets(np.array([0.0, 5000.0, 9990.0]), np.zeros(3), 10.0)],
                0, 10_000)["runs"]
    assert [x for x, r in enumerate(lone) if r] == [0, 1, 499, 500, 501, 998, 999]
    assert lone[500][1] - lone[500][0] == 2  # three pixels high
    sparse = draw(page, [buckets(np.arange(0, 10_000.0, 200), np.zeros(50), 10.0)],
                  0, 10_000)["runs"]
    assert all(sparse[x][1] - sparse[x][0] == 2 for x in range(20, 980, 20))
    assert all(sparse[x][1] == sparse[x][0] for x in range(25, 980, 20))  # the line


def test_reconnection_backs_off_to_30_s(page: Page) -> None:
    delays = page.evaluate("""async () => {
        const { retryDelay } = await import('/js/connection.js');
        return [[1, 2, 3, 4, 5, 6, 7, 8, 20].map((n) => retryDelay(n, 0)),
                [1, 8, 20].map((n) => retryDelay(n, 0.999))]; }""")
    assert delays[0] == [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
    assert delays[1] == [312, 30000, 30000]  # a quarter more at most, never past 30 s
