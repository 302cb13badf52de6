"""The notebook widgets for real (issue 24): a relay and a stripchart server that needs a
token, a motor source with a one-sample spike, JupyterLab headless on ports and
directories of its own, a notebook with both widgets run in headless Chromium; the
widgets' canvases read back (the spike drawn, as the page draws it), the errors said in
the cell, and the token in nothing the notebook saves."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from speeddata.bench.services import free_port
from tests.helpers import PROJECT, TIMEOUT, relay_settings, start_relay, start_serve, wait_until
from tests.stripchart.conftest import Stack
from tests.stripchart.test_page import ARGS, BLUE, CHROMIUM, send_motor

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is missing: run ./install --dev")]

TOKEN = "notebook-server-token-e2e"  # the stripchart server's
LAB_TOKEN = "jupyter-lab-token-e2e"
SPIKE = 50.0  # against a sine of amplitude 1
WIDGETS = "document.querySelectorAll('.speeddata-widget')"


@dataclass
class Lab:
    url: str
    root: Path
    process: subprocess.Popen


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("notebook")
    relay = start_relay(tmp, relay_settings(tmp, web={"token": TOKEN,
                                                      "clock_tolerance_seconds": 700}))
    serve = start_serve(tmp, relay.config_path)
    yield Stack(relay, serve, tmp)
    serve.stop()
    relay.stop()


@pytest.fixture(scope="module")
def lab(stack: Stack) -> Iterator[Lab]:
    """JupyterLab headless: its own port, token, root, config, data, runtime and
    settings directories (never the user's ~/.jupyter), this tree first on the kernel's
    path. Widget state saving on, so the saved notebook holds what a widget persists."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is missing: ./install --dev")
    pytest.importorskip("anywidget", reason="anywidget is missing: ./install --dev")
    home = stack.tmp / "jupyter"
    dirs = {name: home / name for name in ("root", "config", "data", "runtime", "settings",
                                           "workspaces", "ipython")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    manager = dirs["settings"] / "@jupyter-widgets" / "jupyterlab-manager"
    manager.mkdir(parents=True)
    (manager / "plugin.jupyterlab-settings").write_text('{"saveState": true}')
    notes = dirs["settings"] / "@jupyterlab" / "apputils-extension"
    notes.mkdir(parents=True)  # no "official Jupyter news?" toast over the cells
    (notes / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(dirs["config"]),
           "JUPYTER_DATA_DIR": str(dirs["data"]), "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
           "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
           "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
           "IPYTHONDIR": str(dirs["ipython"]), "HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}
    port = free_port(socket.SOCK_STREAM)
    log = (home / "lab.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={LAB_TOKEN}",
         f"--ServerApp.root_dir={dirs['root']}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=dirs["root"])
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"jupyter lab exited:\n{(home / 'lab.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{url}api/status?token={LAB_TOKEN}", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    wait_until(up, timeout=6 * TIMEOUT, what="JupyterLab")
    yield Lab(url, dirs["root"], process)
    process.terminate()
    process.wait(TIMEOUT)
    log.close()


def notebook(cells: list[str]) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": text,
                   "outputs": [], "execution_count": None} for i, text in enumerate(cells)]}


def run_notebook(lab: Lab, page, name: str, cells: list[str], widgets: int,
                 before: Callable[[], None] = lambda: None) -> None:
    """Open the notebook, wait for its kernel, call ``before``, run all its cells, wait
    for ``widgets`` widgets in its outputs."""
    (lab.root / name).write_text(json.dumps(notebook(cells)))
    page.goto(f"{lab.url}lab/tree/{name}?reset&token={LAB_TOKEN}")  # no other tabs
    page.wait_for_function("() => window.jupyterapp && document.querySelector("
                           "'.jp-Notebook') && document.querySelector('.jp-Notebook-cell')",
                           timeout=6 * TIMEOUT * 1000)
    # its kernel started and idle (else "run all" asks which kernel to start)
    page.wait_for_function(
        "() => { const w = jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.session.kernel; return k && k.status === 'idle'; }",
        timeout=6 * TIMEOUT * 1000)
    before()
    page.evaluate("() => { jupyterapp.commands.execute('notebook:run-all-cells'); }")
    try:
        page.wait_for_function(f"() => {WIDGETS}.length >= {widgets}",
                               timeout=6 * TIMEOUT * 1000)
    except Exception:
        page.screenshot(path=str(lab.root.parent / f"{name}-failed.png"), full_page=True)
        raise


def runs(page, index: int) -> tuple[list, int, list]:
    """Per column of widget ``index``'s plot: (top, bottom) rows of the first signal's
    colour, or None; the plot's height; the value range drawn."""
    return page.evaluate("""([index, rgb]) => {
        const chart = document.querySelectorAll('.speeddata-widget')[index].speeddata.chart;
        const c = chart.querySelector('canvas.chart-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const out = [];
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
            out.push(top < 0 ? null : [top, bottom]);
        }
        return [out, chart.plotHeight, chart.lastRange];
    }""", [index, list(BLUE)])


def spike_columns(page, index: int) -> list[int]:
    """The columns of widget ``index``'s plot whose trace reaches the spike's height."""
    columns, height, (low, high) = runs(page, index)
    row = (high - SPIKE) / (high - low) * (height - 1)
    return [x for x, r in enumerate(columns) if r and r[0] <= row + 2]


def assert_spike(page, index: int) -> None:
    columns, height, (low, high) = runs(page, index)
    drawn = [r for r in columns if r]
    assert len(drawn) > 0.2 * len(columns), "the sine is not drawn"
    spike_row = (high - SPIKE) / (high - low) * (height - 1)
    top = min(r[0] for r in drawn)
    assert top <= spike_row + 2, f"the spike is not drawn: top row {top}, spike {spike_row}"
    assert spike_row < 0.5 * height
    reaching = [x for x, r in enumerate(columns) if r and r[0] <= spike_row + 2]
    assert len(reaching) <= 4, f"more than the spike's column reach its height: {reaching}"
    sine_top = (high - 1.0) / (high - low) * (height - 1)
    assert sum(1 for r in drawn if r[0] >= sine_top - 2) > 0.9 * len(drawn) - 4


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 1400})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def test_both_widgets_draw_the_spike_and_the_token_stays_in_the_kernel(
        stack: Stack, lab: Lab, page) -> None:
    def send() -> None:  # the kernel is up: the cells run right after this
        now = time.time_ns()
        samples = [(now - 40 * 10**9 + i * 10**6, math.sin(i / 50)) for i in range(40_000)]
        samples[35_000] = (samples[35_000][0], SPIKE)  # 5 s ago: in both widgets' spans
        send_motor(stack.relay.port, samples)

    config = str(stack.relay.config_path)  # where the widget finds the server's token
    cells = [
        "from speeddata.notebook import Range, Stripchart",
        f"Stripchart(url={stack.serve.url!r}, signals=['motor.speed'], seconds=30, "
        f"config={config!r})",
        f"Range(url={stack.serve.url!r}, signals=['motor.speed'], start='-15s', end='-1s', "
        f"config={config!r})",
    ]
    run_notebook(lab, page, "widgets.ipynb", cells, 2, send)
    for index in (0, 1):
        page.wait_for_function(
            f"() => {{ const c = {WIDGETS}[{index}].speeddata.chart;"
            f" return c && c.lastRange && c.lastRange[1] >= {SPIKE}; }}",
            timeout=4 * TIMEOUT * 1000)
    states = page.evaluate(f"() => [...{WIDGETS}].map(w => [w.dataset.state, w.dataset.status])")
    assert [s[0] for s in states] == ["ok", "ok"], states
    assert states[0][1].startswith("connected"), states
    live = page.evaluate(f"() => {WIDGETS}[0].speeddata.chart")
    assert live is not None
    page.evaluate(f"() => {WIDGETS}[0].speeddata.chart.querySelector('.chart-pause').click()")
    assert_spike(page, 0)
    page.wait_for_function(f"() => {WIDGETS}[1].speeddata.chart.settled()",
                           timeout=TIMEOUT * 1000)
    assert_spike(page, 1)
    page.locator(".speeddata-widget").nth(0).scroll_into_view_if_needed()
    page.screenshot(path=str(stack.tmp / "notebook-widgets.png"), full_page=True)
    # the range widget pans as a paused chart of the page does: the spike moves right
    before = spike_columns(page, 1)
    page.evaluate(f"() => {{ const c = {WIDGETS}[1].speeddata.chart;"
                  " c.querySelector('canvas.chart-canvas').focus(); }")
    page.keyboard.press("ArrowLeft")
    page.wait_for_timeout(300)
    after = spike_columns(page, 1)
    assert before and after and after[0] > before[0], (before, after)
    # saved with the widgets' state: the token is in none of it
    page.evaluate("() => jupyterapp.commands.execute('docmanager:save')")
    saved = lab.root / "widgets.ipynb"
    wait_until(lambda: "application/vnd.jupyter.widget-state+json" in saved.read_text(),
               what="the notebook saved with its widget state")
    text = saved.read_text()
    assert TOKEN not in text
    state = json.loads(text)["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]
    charts = [m["state"] for m in state["state"].values() if "signals" in m["state"]]
    assert len(charts) == 2 and all(c["url"] == stack.serve.url for c in charts), charts
    assert page.errors == []


def test_errors_are_said_in_the_cell(stack: Stack, lab: Lab, page) -> None:
    down = f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}/"
    cells = [
        "from speeddata.notebook import Stripchart",
        f"Stripchart(url={down!r}, signals=['motor.speed'])",  # nothing listens
        f"Stripchart(url={stack.serve.url!r}, signals=['motor.speed'], token='wrong')",
        f"Stripchart(url={stack.serve.url!r}, signals=['motor.nosuch'], token={TOKEN!r})",
    ]
    run_notebook(lab, page, "errors.ipynb", cells, 3)
    expected = ["server unreachable", "token needed", "unknown signal: motor.nosuch"]
    for index, words in enumerate(expected):
        page.wait_for_function(
            f"([i, words]) => {{ const w = {WIDGETS}[i];"
            " return w.dataset.state === 'error' && w.dataset.status.includes(words); }",
            arg=[index, words], timeout=4 * TIMEOUT * 1000)
    texts = page.locator(".speeddata-widget .status").all_inner_texts()
    assert any("unknown signal: motor.nosuch" in t for t in texts), texts
    page.screenshot(path=str(stack.tmp / "notebook-errors.png"), full_page=True)
