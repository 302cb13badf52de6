#!/usr/bin/env python3
"""Where the stripchart page's time goes: a CDP profile of one page drawing live.

The same set-up as benchmarks/stripchart.py (relay, server, a paced source, headless
Chromium 1600x1200, 10 charts of 10 signals over 10 s), then for ``--seconds``: the
JavaScript sampling profiler (self time per function, % of the samples) and a trace
(per thread, the % of wall time busy: the renderer's main thread, the compositor, the
raster workers, the display compositor), and the page's own fps and draw times.

    PYTHONPATH=. .venv/bin/python benchmarks/page_profile.py [--signals 100] [--seconds 5]
        [--tree /path/to/other/checkout] [--json]

``--tree`` profiles that checkout's server and page instead (the relay and source are
this one's).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).parent))
import stripchart

from speeddata.bench import services
from speeddata.config import write_file
from tests.harness import procs

RESET = """() => { sd.stats.frameMs.length = 0; sd.stats.intervalMs.length = 0;
    for (const e of sd.elements) {
        if (e.traces) for (const k in e.traces.stats) e.traces.stats[k] = 0;
    } }"""


def browser_cpu_seconds() -> float:
    """CPU seconds (user and system) of the Chromium processes below this one."""
    import os

    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        parents[int(entry)] = int(fields[1])
        names[int(entry)] = head.split("(", 1)[1]
    mine = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                grew = True
    total = 0.0
    for pid in mine:
        if "chrom" not in names.get(pid, ""):
            continue
        with contextlib.suppress(OSError):
            total += services.cpu_seconds(pid)
    return total


TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline",
                    "toplevel", "cc", "viz", "gpu", "blink"]


def js_self_times(profile: dict) -> list[tuple[str, float]]:
    """(function at url:line, % of samples) for the 25 heaviest functions by self time."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    counts = collections.Counter(profile.get("samples", []))
    total = sum(counts.values()) or 1
    by_name: collections.Counter[str] = collections.Counter()
    for node_id, hits in counts.items():
        frame = nodes[node_id]["callFrame"]
        url = frame.get("url", "").rsplit("/", 1)[-1]
        name = frame.get("functionName") or "(anonymous)"
        by_name[f"{name} {url}:{frame.get('lineNumber', 0) + 1}" if url else name] += hits
    return [(name, 100.0 * hits / total) for name, hits in by_name.most_common(25)]


def thread_busy(trace: dict, seconds: float) -> list[tuple[str, float, list]]:
    """Per thread: % of wall time inside top-level trace events, and its heaviest events
    (at any depth, so nested ones count inside their parents too)."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names: dict[tuple[int, int], str] = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
    spans: dict[tuple[int, int], list[tuple[float, float, str]]] = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            spans[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    rows = []
    for key, items in spans.items():
        items.sort()
        busy, end = 0.0, -1.0
        heavy: collections.Counter[str] = collections.Counter()
        stack: list[float] = []
        for t0, t1, name in items:
            if t0 >= end:  # a top-level event
                busy += t1 - t0
                end = t1
                stack = [t1]
            else:
                while stack and stack[-1] <= t0:
                    stack.pop()
                stack.append(t1)
            if "RunTask" not in name:  # every level but the task wrappers (nested sum)
                heavy[name] += t1 - t0
        rows.append((names.get(key, str(key)), 100.0 * busy / (seconds * 1e6),
                     [(n, round(100.0 * d / (seconds * 1e6), 1))
                      for n, d in heavy.most_common(10)]))
    rows.sort(key=lambda r: -r[1])
    return [r for r in rows if r[1] >= 0.5]


def profile(n_signals: int, rate: float, seconds: float, tree: str | None) -> dict:
    per_channel = min(10, n_signals)
    n_channels = max(1, n_signals // per_channel)
    with tempfile.TemporaryDirectory(prefix="page-profile-") as tmp:
        work = Path(tmp)
        schemas = work / "schemas"
        channels = procs.bench_schemas(schemas, n_channels, per_channel)
        settings = services.default_settings(work, schemas)
        config = write_file(work / "bench.toml", settings)
        relay = services.start("relay", config, work)
        serve = services.start("serve", config, work, tree=tree)
        source = multiprocessing.Process(target=stripchart.run_source, args=(
            schemas, channels, rate, "127.0.0.1", settings["relay"]["port"], 3600.0))
        source.start()
        url = stripchart.layout_url(f"http://127.0.0.1:{settings['web']['port']}/",
                                    channels, per_channel)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                            args=stripchart.ARGS)
                tab = browser.new_context(viewport={"width": 1600, "height": 1200}).new_page()
                errors: list[str] = []
                tab.on("pageerror", lambda e: errors.append(str(e)))
                tab.goto(url)
                tab.wait_for_function("() => window.sd && sd.conn.state === 'connected'")
                time.sleep(stripchart.WARMUP)
                # first plainly: the page's frames and draw times, and the browser's CPU
                # (every Chromium process: less moved by other load than frame rates)
                tab.evaluate(RESET)
                cpu0 = browser_cpu_seconds()
                time.sleep(seconds)
                cpu = browser_cpu_seconds() - cpu0
                stats = tab.evaluate("() => ({frameMs: sd.stats.frameMs,"
                                     " intervalMs: sd.stats.intervalMs,"
                                     " kinds: [...sd.elements].map((e) => e.traces?.stats)})")
                cdp = tab.context.new_cdp_session(tab)
                cdp.send("Profiler.enable")
                cdp.send("Profiler.setSamplingInterval", {"interval": 200})
                cdp.send("Profiler.start")
                time.sleep(seconds)
                js = cdp.send("Profiler.stop")["profile"]
                browser.start_tracing(page=tab, categories=TRACE_CATEGORIES)
                time.sleep(seconds)
                trace = json.loads(browser.stop_tracing())
                browser.close()
        finally:
            source.terminate()
            source.join()
            serve.stop()
            relay.stop()
    frames = len(stats["intervalMs"]) + 1
    return {"signals": n_signals, "tree": tree or "this", "seconds": seconds,
            "fps": round(1000 / statistics.mean(stats["intervalMs"]), 1),
            "browser_cpu_pct": round(100 * cpu / seconds, 1),
            "browser_cpu_ms_per_frame": round(1000 * cpu / frames, 2),
            "draw_ms_mean": round(statistics.mean(stats["frameMs"]), 2),
            "draw_ms_p99": round(procs.percentile(stats["frameMs"], 99), 2),
            "redraws": stats["kinds"], "page_errors": errors[:5],
            "js_self_pct": [(n, round(p, 1)) for n, p in js_self_times(js)],
            "threads_busy_pct": [(n, round(b, 1), heavy)
                                 for n, b, heavy in thread_busy(trace, seconds)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="Hz per channel")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds profiled (each)")
    parser.add_argument("--tree", help="another checkout whose server and page to profile")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stripchart.absolute_pythonpath()
    result = profile(args.signals, args.rate, args.seconds, args.tree)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"tree {result['tree']}: {args.signals} signals x {args.rate:g} Hz, "
          f"{result['fps']} fps, draw {result['draw_ms_mean']} / {result['draw_ms_p99']} ms "
          f"(mean / p99); browser CPU {result['browser_cpu_pct']} % of a core, "
          f"{result['browser_cpu_ms_per_frame']} ms a frame")
    for error in result["page_errors"]:
        print(f"page error: {error}")
    print(f"frames drawn in full / incrementally, per chart: {result['redraws']}")
    print("JavaScript self time, % of the profiler's samples (idle included):")
    for name, pct in result["js_self_pct"]:
        print(f"  {pct:5.1f} %  {name}")
    print("threads, % of wall time busy (and their heaviest events, nested ones inside "
          "their parents):")
    for name, busy, heavy in result["threads_busy_pct"]:
        print(f"  {busy:5.1f} %  {name}: " + ", ".join(f"{n} {p}" for n, p in heavy[:10]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
