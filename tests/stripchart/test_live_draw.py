"""A live chart drawn incrementally (web/js/livetraces.js: each frame only its newest
columns) shows what a full redraw of the same data shows, pixel for pixel, while it
scrolls: a sine, a one-sample spike that arrives mid-scroll, a real gap, and the left
edge the samples scroll out of. Real relay, server and Chromium."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.stripchart.conftest import Stack
from tests.stripchart.test_page import (  # noqa: F401  (fixtures)
    backlog_stack,
    browser,
    open_chart,
    page,
    send_motor,
)

pytestmark = pytest.mark.e2e

# Draw the chart once as the page does (incrementally), then forget what it showed and
# draw the same frame again from scratch; both of its pictures, and the canvas's.
COMPARE = """() => {
    const c = document.querySelector('sd-chart');
    const now = sd.conn.now();
    c.draw(now);
    const incremental = !c.drawnFull;
    const a = c.pixels.slice();
    const ctx = c.canvas.getContext('2d');
    const seenA = ctx.getImageData(0, 0, c.canvas.width, c.canvas.height).data;
    c.traces.invalidate();
    c.draw(now);
    const b = c.pixels;
    const seenB = ctx.getImageData(0, 0, c.canvas.width, c.canvas.height).data;
    const W = c.canvas.width, columns = new Set();
    let pixels = 0, drawn = 0;
    for (let i = 0; i < a.length; i++) {
        if (b[i] === c.items[0].rgba) drawn++;  // the trace (the rest: its background)
        if (a[i] !== b[i]) { pixels++; columns.add(i % W); }
    }
    const where = [];  // what differs, and the columns there: to find why
    for (let i = 0; i < a.length && where.length < 12; i++) {
        if (a[i] !== b[i]) where.push([i % W, Math.floor(i / W), a[i], b[i]]);
    }
    const x0 = Math.max(0, Math.min(...columns) - 3), col = c.cols[0];
    const around = columns.size ? { x0, W, count: Array.from(col.count.slice(x0, x0 + 8)),
        gap: Array.from(col.gap.slice(x0, x0 + 8)),
        last: Array.from(col.last.slice(x0, x0 + 8)) } : null;
    let canvas = 0;
    for (let i = 0; i < seenA.length; i++) if (seenA[i] !== seenB[i]) canvas++;
    return { incremental, pixels, columns: [...columns].slice(0, 20), drawn, canvas,
             top: c.lastRange[1], where, around, stats: { ...c.traces.stats } };
}"""


@pytest.mark.parametrize("rate", [1000, 25])  # dense, and sparser than the columns
def test_a_scrolling_chart_drawn_incrementally_equals_a_full_redraw(
        backlog_stack: Stack, page: Page, rate: int, tmp_path: Path) -> None:  # noqa: F811
    stop = threading.Event()
    started = time.time_ns()
    spike_ns = started + 2 * 10**9  # mid-scroll: the chart has drawn for 2 s by then
    gap = (started + 4 * 10**9, started + 7 * 10**9)  # 3 s without samples: a real gap

    def source() -> None:  # samples at their real times, 20 ms of them at a time
        step = 10**9 // rate
        t = started
        spiked = False
        while not stop.is_set():
            now = time.time_ns()
            batch = []
            while t <= now:
                if not gap[0] <= t < gap[1]:
                    value = 100 * math.sin(2 * math.pi * t / 1e9)
                    if not spiked and t >= spike_ns:
                        value, spiked = 500.0, True
                    batch.append((t, value))
                t += step
            send_motor(backlog_stack.relay.port, batch)
            time.sleep(0.02)

    thread = threading.Thread(target=source, daemon=True)
    thread.start()
    try:
        open_chart(page, backlog_stack.serve.url, "motor.speed", 5)
        results = []
        for _ in range(18):  # 9 s: the spike arrives, the gap comes and goes, the left
            page.wait_for_timeout(500)  # edge passes the first samples and the spike
            results.append(page.evaluate(COMPARE))
        page.screenshot(path=str(tmp_path / "live.png"))
    finally:
        stop.set()
        thread.join()
    drawn = [r for r in results if r["drawn"]]
    assert len(drawn) >= 12, results
    incremental = [r for r in drawn if r["incremental"]]
    assert len(incremental) >= 10, f"frames not drawn incrementally: {results}"
    for r in drawn:  # the traces, and the canvas with grid and bands as well
        assert r["pixels"] == 0 and r["canvas"] == 0, str(r)
    # the spike was drawn while it was in the window (the autoscale reached it)
    assert any(r["top"] >= 500 for r in drawn), [r["top"] for r in drawn]
    assert page.errors == []  # type: ignore[attr-defined]
