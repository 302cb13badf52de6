#!/usr/bin/env python3
"""Stripchart benchmark: relay + server + a paced source + headless Chromium pages.

Reports, for N signals at R Hz: sender-to-screen latency (p50/p99: the source stamps
each sample with its send time, the page notes when that sample is first drawn), page
frames per second and draw time (mean/p99), server and relay CPU %, WebSocket bytes per
second; then whether 10 pages at once each receive every frame.

    PYTHONPATH=. .venv/bin/python benchmarks/stripchart.py [--signals 10 100] [--rate 1000] [--json]
        [--baseline /path/to/other/checkout [--runs 3]]

With ``--baseline``, the server (and the page it serves) of that checkout is measured
too, interleaved with this one's run by run on the same relay, source and browser
code, and the ratios of the medians are printed: the machine's noise moves both alike.

``--client websocket`` puts one plain WebSocket client (subscribed to every signal, as
the page is) in the browser's place: the server measured without Chromium sharing its
2 cores; no page figures then (fps, draw, latency: "-").

Needs the dev install (Playwright) and /usr/bin/chromium (./install --dev).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from speeddata.bench import services
from speeddata.config import write_file
from tests.harness import procs

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WARMUP = 4.0


def layout_url(base: str, channels: list[str], signals: int) -> str:
    import urllib.parse

    items = [{"chart": " ".join(f"{c}.s{i}" for i in range(signals)), "window": 10}
             for c in channels]
    return base + "#layout=" + urllib.parse.quote(json.dumps(items))


def absolute_pythonpath() -> None:
    """Make ``PYTHONPATH`` absolute: the services run in their work folder, where
    ``PYTHONPATH=.`` would name that folder, and "this" tree would be whatever checkout
    the venv has installed (main's), not the one the benchmark runs from."""
    import os

    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    if entries:
        os.environ["PYTHONPATH"] = os.pathsep.join(str(Path(e).resolve()) for e in entries)


def run_source(*args) -> None:  # multiprocessing target
    procs.paced_source(*args)


def websocket_clients(url: str, signals: list[str], clients: int, duration: float) -> dict:
    """``clients`` plain WebSocket clients: frames each received and drops the server told."""
    import threading

    from websockets.sync.client import connect

    from speeddata.stripchart import frames

    results: list[tuple[int, int]] = []

    def client() -> None:
        count, dropped = 0, 0
        with connect(url) as ws:
            ws.recv()
            ws.send(json.dumps({"type": "subscribe", "signals": signals, "window": 10}))
            start = time.monotonic()
            while time.monotonic() - start < duration:
                message = ws.recv(timeout=5)
                if isinstance(message, bytes):
                    header, _ = frames.decode(message)
                    if header["type"] == "data":
                        count += 1
                        dropped = header["dropped"]
        results.append((count, dropped))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_second = [c / duration for c, _ in results]
    return {"clients": clients, "frames_per_s": [round(f, 1) for f in per_second],
            "dropped": [d for _, d in results]}


class Probe:
    """One plain WebSocket client in a thread, subscribed to ``signals``: the frames and
    bytes it has received, and the drops the server told it (a page's counters)."""

    def __init__(self, url: str, signals: list[str]) -> None:
        import threading

        self.url, self.signals = url, signals
        self.frames = self.bytes = self.dropped = 0
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        from websockets.sync.client import connect

        from speeddata.stripchart import frames

        with connect(self.url) as ws:  # deflate offered, as browsers do
            ws.recv()
            ws.send(json.dumps({"type": "subscribe", "signals": self.signals, "window": 10}))
            self.connected.set()
            while not self.stopping.is_set():
                message = ws.recv(timeout=5)
                if isinstance(message, bytes):
                    header, _ = frames.decode(message)
                    if header["type"] == "data":
                        self.frames += 1
                        self.bytes += len(message)
                        self.dropped = header["dropped"]

    def stats(self) -> dict:
        return {"frameMs": [], "intervalMs": [], "latencyMs": [], "bytes": self.bytes,
                "frames": self.frames, "dropped": self.dropped}

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


def served(work: Path) -> tuple[int, float, int]:
    """(datagrams the server had taken, when, its sockets' kernel drops): its status
    file as it is now."""
    from speeddata import status

    snap = status.read_all(work / "cache").get("serve", {})
    return snap.get("datagrams", 0), snap.get("written", 0.0), snap.get("kernel_drops", 0)


def measure(n_signals: int, rate: float, duration: float, pages: int,
            ws_clients: int = 0, group: str = "full", tree: str | None = None,
            client: str = "chromium") -> dict:
    per_channel = min(10, n_signals)
    n_channels = max(1, n_signals // per_channel)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        schemas = work / "schemas"
        channels = procs.bench_schemas(schemas, n_channels, per_channel)
        settings = services.default_settings(work, schemas)
        settings["web"]["source"] = group
        config = write_file(work / "bench.toml", settings)
        relay = services.start("relay", config, work)
        serve = services.start("serve", config, work, tree=tree)
        source = multiprocessing.Process(target=run_source, args=(
            schemas, channels, rate, "127.0.0.1", settings["relay"]["port"],
            3600.0))  # until terminated below, however long the pages take to load
        source.start()
        url = layout_url(f"http://127.0.0.1:{settings['web']['port']}/", channels, per_channel)
        ws_url = url.split("#")[0].replace("http", "ws") + "ws"
        every = [f"{c}.s{i}" for c in channels for i in range(per_channel)]
        fanout = None
        try:
            if client == "websocket":
                probe = Probe(ws_url, every)
                if not probe.connected.wait(60):
                    raise RuntimeError("the WebSocket client did not connect")
                time.sleep(WARMUP)
                before = [[probe.bytes, probe.frames]]
                cpu0 = (serve.cpu_seconds(), relay.cpu_seconds(), time.monotonic())
                taken0 = served(work)
                time.sleep(duration)
                cpu1 = (serve.cpu_seconds(), relay.cpu_seconds(), time.monotonic())
                taken1 = served(work)
                stats = [probe.stats()]
                probe.stop()
            else:
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                    contexts = [browser.new_context(viewport={"width": 1600, "height": 1200})
                                for _ in range(pages)]
                    tabs = [c.new_page() for c in contexts]
                    for tab in tabs:
                        tab.goto(url)
                    for tab in tabs:
                        tab.wait_for_function("() => window.sd && sd.conn.state === 'connected'")
                    time.sleep(WARMUP)
                    reset = """() => { const s = sd.stats; s.frameMs.length = 0;
                        s.intervalMs.length = 0; s.latencyMs.length = 0;
                        return [sd.conn.bytesReceived, sd.conn.framesReceived]; }"""
                    before = [tab.evaluate(reset) for tab in tabs]
                    cpu0 = (serve.cpu_seconds(), relay.cpu_seconds(), time.monotonic())
                    taken0 = served(work)
                    time.sleep(duration)
                    cpu1 = (serve.cpu_seconds(), relay.cpu_seconds(), time.monotonic())
                    taken1 = served(work)
                    stats = [tab.evaluate("""() => ({frameMs: sd.stats.frameMs,
                        intervalMs: sd.stats.intervalMs, latencyMs: sd.stats.latencyMs,
                        bytes: sd.conn.bytesReceived, frames: sd.conn.framesReceived,
                        dropped: sd.conn.dropped})""") for tab in tabs]
                    browser.close()
                if ws_clients:
                    fanout = websocket_clients(ws_url, every, ws_clients, duration)
        finally:
            source.terminate()
            source.join()
            serve_rss = serve.rss_bytes()
            serve.stop()
            relay.stop()
    return figures(n_signals, rate, pages, group, tree, cpu0, cpu1, taken0, taken1, stats,
                   before, serve_rss, fanout)


def figures(n_signals: int, rate: float, pages: int, group: str, tree: str | None,
            cpu0: tuple, cpu1: tuple, taken0: tuple, taken1: tuple, stats: list[dict],
            before: list, serve_rss: int, fanout: dict | None) -> dict:
    """One run's figures from what was sampled (page figures None without a page)."""
    wall = cpu1[2] - cpu0[2]
    first = stats[0]
    frames_per_page = [(s["frames"] - b[1]) / wall for s, b in zip(stats, before, strict=True)]
    drawn = bool(first["intervalMs"])

    def page(value: float, digits: int) -> float | None:
        return round(value, digits) if drawn else None

    return {
        "signals": n_signals, "rate_hz": rate, "pages": pages, "seconds": round(wall, 1),
        "source": group, "tree": "baseline" if tree else "this",
        "fps": page(1000 / statistics.mean(first["intervalMs"] or [1]), 1),
        "draw_ms_mean": page(statistics.mean(first["frameMs"] or [0]), 2),
        "draw_ms_p99": page(procs.percentile(first["frameMs"], 99), 2),
        "frame_interval_ms_p99": page(procs.percentile(first["intervalMs"], 99), 1),
        "latency_ms_p50": page(procs.percentile(first["latencyMs"], 50), 1),
        "latency_ms_p99": page(procs.percentile(first["latencyMs"], 99), 1),
        "ws_bytes_per_s": round((first["bytes"] - before[0][0]) / wall),
        "ws_frames_per_s_per_page": [round(f, 1) for f in frames_per_page],
        "frames_per_s": round(frames_per_page[0], 1),  # the first page's, as fps
        "frames_dropped_reported": [s["dropped"] for s in stats],
        "server_cpu_pct": round((cpu1[0] - cpu0[0]) / wall * 100, 1),
        "server_datagrams_per_s": round((taken1[0] - taken0[0])
                                        / max(taken1[1] - taken0[1], 1e-9)),
        "server_kernel_drops": taken1[2] - taken0[2],
        # the server's CPU per datagram: a server that drops some has less to do
        "server_us_per_datagram": round((cpu1[0] - cpu0[0]) * 1e6 / max(
            (taken1[0] - taken0[0]) * wall / max(taken1[1] - taken0[1], 1e-9), 1), 2),
        "relay_cpu_pct": round((cpu1[1] - cpu0[1]) / wall * 100, 1),
        "server_rss_mb": round(serve_rss / 2**20, 1),
        "websocket_clients": fanout,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rate", type=float, default=1000.0, help="Hz per channel")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--pages", type=int, default=10, help="pages for the many-pages run")
    parser.add_argument("--source", nargs="+", default=["full"], choices=["full", "decimated"],
                        help="the group(s) the server draws from, measured in turn")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--baseline", help="another checkout whose server to measure too")
    parser.add_argument("--runs", type=int, default=1, help="runs of each (with --baseline)")
    parser.add_argument("--client", choices=["chromium", "websocket"], default="chromium",
                        help="what takes the frames: a Chromium page, or a plain WebSocket "
                        "client (the server alone, no browser on the cores)")
    args = parser.parse_args()
    absolute_pythonpath()
    if args.baseline:
        return compare(args)
    results = [measure(n, args.rate, args.duration, 1, group=source, client=args.client)
               for source in args.source for n in args.signals]
    if args.pages and args.client == "chromium":
        results.append(measure(10, args.rate, args.duration, args.pages, ws_clients=args.pages))
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"{'source':>9} {'signals':>8} {'pages':>5} {'fps':>5} {'draw ms':>13} "
          f"{'latency ms':>13} {'WS kB/s':>8} {'frames/s/page':>15} {'server CPU':>10} "
          f"{'relay CPU':>9} {'RSS MB':>7}")
    for r in results:
        r = {k: "-" if v is None else v for k, v in r.items()}  # no page: no page figures
        fpp = r["ws_frames_per_s_per_page"]
        print(f"{r['source']:>9} {r['signals']:>8} {r['pages']:>5} {r['fps']:>5} "
              f"{r['draw_ms_mean']:>5}/{r['draw_ms_p99']:<7} "
              f"{r['latency_ms_p50']:>5}/{r['latency_ms_p99']:<7} "
              f"{r['ws_bytes_per_s'] / 1000:>8.1f} {min(fpp):>6.1f}..{max(fpp):<7.1f} "
              f"{r['server_cpu_pct']:>9}% {r['relay_cpu_pct']:>8}% {r['server_rss_mb']:>7}")
    for r in results:
        if r["websocket_clients"]:
            w = r["websocket_clients"]
            print(f"{w['clients']} WebSocket clients at {r['signals']} signals: frames/s per "
                  f"client {min(w['frames_per_s'])}..{max(w['frames_per_s'])} (server pushes at "
                  f"most 30/s), drops reported {w['dropped']}")
    print("draw and latency: mean/p99 and p50/p99; CPU % of one core; source rate per channel "
          f"{args.rate:g} Hz, 10 signals per channel; {args.duration:g} s after {WARMUP:g} s "
          "warm-up")
    return 0


def median(values: list) -> float | None:
    """The median of the figures a run has (None: a page figure, no page)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def compare(args: argparse.Namespace) -> int:
    """This server against the baseline's, run after run, one page, and the medians."""
    keys = ("server_cpu_pct", "server_datagrams_per_s", "server_us_per_datagram",
            "frames_per_s",
            "server_kernel_drops", "fps", "draw_ms_mean",
            "draw_ms_p99",
            "frame_interval_ms_p99", "latency_ms_p50", "latency_ms_p99", "ws_bytes_per_s")
    rows = []
    for n in args.signals:
        runs: dict[str, list[dict]] = {"baseline": [], "this": []}
        for _ in range(args.runs):
            runs["baseline"].append(measure(n, args.rate, args.duration, 1, tree=args.baseline,
                                            client=args.client))
            runs["this"].append(measure(n, args.rate, args.duration, 1, client=args.client))
        medians = {tree: {k: median([r[k] for r in done]) for k in keys}
                   for tree, done in runs.items()}
        rows.append({"signals": n, "runs": runs, "medians": medians})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'signals':>8} {'tree':>9} " + " ".join(f"{k:>22}" for k in keys))
    for row in rows:
        for tree in ("baseline", "this"):
            print(f"{row['signals']:>8} {tree:>9} " + " ".join(
                f"{'-' if row['medians'][tree][k] is None else row['medians'][tree][k]:>22}"
                for k in keys))
        ratio = {k: row["medians"]["this"][k] / row["medians"]["baseline"][k]
                 if row["medians"]["baseline"][k] and row["medians"]["this"][k] is not None
                 else float("nan") for k in keys}
        print(f"{row['signals']:>8} {'this/base':>9} " + " ".join(
            f"{ratio[k]:>22.2f}" for k in keys))
        for tree in ("baseline", "this"):
            print(f"  {tree} runs, server CPU %: "
                  f"{[r['server_cpu_pct'] for r in row['runs'][tree]]}, µs a datagram: "
                  f"{[r['server_us_per_datagram'] for r in row['runs'][tree]]}, fps: "
                  f"{[r['fps'] for r in row['runs'][tree]]}")
    taker = ("one page 1600x1200" if args.client == "chromium"
             else "one plain WebSocket client")
    print(f"medians of {args.runs} interleaved runs; source {args.rate:g} Hz per channel, "
          f"10 signals per channel, {taker}, {args.duration:g} s after "
          f"{WARMUP:g} s warm-up; the baseline tree: {args.baseline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
