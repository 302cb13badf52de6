#!/usr/bin/env python3
"""Notebook widget benchmark: frames per second and draw time of a live chart of 10
signals (the demo source's), in a Stripchart widget in JupyterLab and on the
stripchart page itself (the baseline: the same chart.js), in one run, one headless
Chromium, the same relay and server (with a token, so the widget's frames come
through the kernel).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/notebook.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests import test_notebook_e2e as nb
from tests.helpers import relay_settings, start_relay, start_serve
from tests.stripchart.conftest import Stack

SIGNALS = [f"motor.{s}" for s in ("speed", "torque", "current", "voltage", "position",
                                  "temperature")] + [
    f"example.{s}" for s in ("sine_wave", "ramp", "square_wave", "noise")]
FIGURES = """(stats) => {
    const iv = stats.intervalMs.slice(-Math.round(1000 * SECONDS / 17));
    const fm = stats.frameMs.slice(-iv.length);
    const sorted = (a) => [...a].sort((x, y) => x - y);
    const q = (a, p) => sorted(a)[Math.min(a.length - 1, Math.floor(p * a.length))];
    return { fps: 1000 / (iv.reduce((a, b) => a + b, 0) / iv.length),
             draw_p50: q(fm, 0.5), draw_p99: q(fm, 0.99), frames: iv.length };
}"""


def measure(page, app: str, seconds: float) -> dict:
    """Frames drawn per second, draw times, and server frames received per second."""
    stats = f"{app}.stats"
    start = page.evaluate(f"() => {stats}.frames")
    received = page.evaluate(f"() => {app}.conn.framesReceived")
    page.wait_for_timeout(seconds * 1000)
    figures = page.evaluate(f"() => ({FIGURES.replace('SECONDS', str(seconds))})({stats})")
    figures["frames"] = page.evaluate(f"() => {stats}.frames") - start
    figures["received"] = (page.evaluate(f"() => {app}.conn.framesReceived") - received) / seconds
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wt-notebook-bench-"))
    relay = start_relay(tmp, relay_settings(tmp, web={"token": nb.TOKEN}))
    serve = start_serve(tmp, relay.config_path)
    demo = subprocess.Popen([sys.executable, "-m", "speeddata", "demo", "--config",
                             str(relay.config_path), "--port", str(relay.port), "-q"])
    labs = nb.lab.__wrapped__(Stack(relay, serve, tmp))
    lab = next(labs)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=nb.CHROMIUM, args=nb.ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            cells = ["from speeddata.notebook import Stripchart",
                     f"Stripchart(url={serve.url!r}, signals={SIGNALS!r}, seconds=10, "
                     f"config={str(relay.config_path)!r})"]
            nb.run_notebook(lab, page, "bench.ipynb", cells, 1)
            page.wait_for_function(f"() => {nb.WIDGETS}[0].speeddata.app"
                                   "?.conn.framesReceived > 10", timeout=60_000)
            widget = measure(page, f"{nb.WIDGETS}[0].speeddata.app", args.seconds)
            page.close()
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            layout = json.dumps([{"chart": " ".join(SIGNALS), "window": 10}])
            page.goto(f"{serve.url}?token={nb.TOKEN}#layout={urllib.parse.quote(layout)}")
            page.wait_for_function("() => window.sd && sd.conn.framesReceived > 10",
                                   timeout=60_000)
            alone = measure(page, "sd", args.seconds)
            browser.close()
    finally:
        with contextlib.suppress(StopIteration):
            next(labs)  # JupyterLab stopped
        demo.terminate()
        demo.wait()
        serve.stop()
        relay.stop()
    print(f"10 signals, 10 s window, {args.seconds:.0f} s each, headless Chromium "
          "(software drawing):")
    for name, f in (("page (baseline)", alone), ("notebook widget", widget)):
        print(f"  {name:16} {f['fps']:5.1f} fps  draw p50 {f['draw_p50']:.2f} ms  "
              f"p99 {f['draw_p99']:.2f} ms  ({f['frames']} frames; "
              f"{f['received']:.1f} server frames/s in)")
    print(f"  widget/page fps ratio {widget['fps'] / alone['fps']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
