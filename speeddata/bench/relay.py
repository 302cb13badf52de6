"""``speeddata bench relay``: the highest rate the relay sustains without loss.

For each record size, a load generator (``sendmmsg``, pinned to its own core) offers
datagrams at a rate for a few seconds; loss is what was sent minus the records found in
the cache files (counted from their indexes) and, with multicast on, minus what a
listener on the full-rate group heard. The rate doubles until loss exceeds the limit,
then a bisection finds the highest rate that holds. The same harness measures a
minimal C receiver (``baseline.c``: ``recvmmsg``, one ``writev`` per batch, plus
``sendmmsg`` to the group when forwarding; built with the system's ``cc``) as the
baseline, so the relay's figure is also a ratio.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speeddata.bench import services
from speeddata.cache import index
from speeddata.config import write_file
from speeddata.configvalues import Group, parse_group

LOSS_LIMIT = 1e-4  # 0.01 %
CORES = os.cpu_count() or 1
RELAY_CPU = 0
LOAD_CPU = 1 % CORES


def record_schema(folder: Path, size: int) -> tuple[str, int]:
    """A channel whose datagrams are about ``size`` bytes: time, counter and doubles."""
    doubles = max(1, (size - 22) // 8)
    name = f"rec{size}"
    schema = {"type": "record", "name": name, "fields": [
        {"name": "time", "type": "long"}, {"name": "counter", "type": "long"},
        *({"name": f"v{i}", "type": "double"} for i in range(doubles))]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.avsc").write_text(json.dumps(schema))
    return name, doubles


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and CORES > 1:
        os.sched_setaffinity(0, {cpu})


UDP_SEGMENT = 103  # Linux: one send, the kernel cuts it into equal datagrams (GSO)


def load_generator(schemas: Path, channel: str, rate: float, seconds: float,
                   port: int, result: Any, elapsed: Any) -> None:
    """Send ``rate`` datagrams/s for ``seconds``; report count and time.

    The receiver sees ordinary datagrams; to offer them fast enough from one core, the
    generator hands the kernel 64 at a time with UDP GSO (one ``send``, cut into equal
    datagrams on the way), or with ``sendmmsg`` where GSO is missing."""
    from speeddata.relay.core import Received
    from speeddata.relay.netio import MmsgIO
    from speeddata.schemas import load_file
    from speeddata.sender import Encoder

    _pin(LOAD_CPU)
    encoder = Encoder(load_file(schemas / f"{channel}.avsc"))
    fields = [s.name for s in encoder.channel.signals if s.name != "counter"]
    # counters 1000.. all take two bytes: every datagram has the same size
    datagrams = [encoder.encode({"time": time.time_ns(), "counter": 1000 + i,
                                 **{f: float(i) for f in fields}}) for i in range(256)]
    size = len(datagrams[0])
    assert all(len(d) == size for d in datagrams)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 2**20)
    target = ("127.0.0.1", port)
    # bursts of at most 1 ms of traffic, like senders with a 1 kHz loop; 64 at high rates
    chunk = int(max(1, min(64, rate / 1000, 65000 // size)))
    try:
        sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, size)
        blob = b"".join(datagrams)
        bursts = [blob[i * size : (i + chunk) * size] for i in range(0, 256 - chunk + 1, chunk)]

        def send(k: int, n: int) -> int:
            sock.sendto(bursts[k % len(bursts)][: n * size], target)
            return n
    except OSError:
        io = MmsgIO(sock, 256, size)
        for i, d in enumerate(datagrams):
            io.array[i * io.slot : i * io.slot + size] = np.frombuffer(d, dtype=np.uint8)
        batch = Received(io.array, io.slot, np.full(256, size, dtype=np.int64))
        indices = np.arange(chunk, dtype=np.int64)

        def send(k: int, n: int) -> int:
            return n - io.forward(sock, batch, indices[:n] + (k % (256 // chunk)) * chunk,
                                  target)
    sent = bursts_sent = 0
    start = time.perf_counter()
    total = int(rate * seconds)
    while sent < total:
        now = time.perf_counter() - start
        if now > seconds + 0.1:  # the generator itself cannot keep up: stop on time
            break
        due = int(now * rate)
        if due - sent < chunk and sent + chunk <= total:
            if due - sent <= 0:
                time.sleep(min(0.001, chunk / rate))
            continue
        try:
            sent += send(bursts_sent, min(chunk, total - sent))
        except OSError:  # the generator's own queue is full: try again
            time.sleep(0.0001)
        bursts_sent += 1
    elapsed.value = time.perf_counter() - start
    result.value = sent


def listener(group: Group, ready: Any, stop: Any, result: Any) -> None:
    """Count datagrams heard on ``group`` until ``stop`` is set (not the relay's own
    forward reports)."""
    import numpy as np

    from speeddata import loss, multicast
    from speeddata.relay.netio import MmsgIO

    sock = multicast.listener(group, "127.0.0.1", rcvbuf=64 * 2**20)
    sock.setblocking(False)
    io = MmsgIO(sock, 512, 2048)
    report = np.frombuffer(loss.FORWARD_REPORT_HEADER, dtype=np.uint8)
    count = 0
    ready.set()
    while not stop.is_set():
        batch = io.receive()
        n = len(batch.lengths)
        heads = batch.buffer[: n * batch.slot].reshape(n, batch.slot)[:, : len(report)]
        count += n - int((heads == report).all(axis=1).sum())
        if not n:
            time.sleep(0.0005)
    result.value = count


def build_baseline(folder: Path) -> Path:
    """Compile the C baseline (``baseline.c``) with the system's C compiler."""
    source = Path(__file__).with_name("baseline.c")
    binary = folder / "baseline"
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise SystemExit("bench relay: the baseline is C and needs a C compiler (cc); "
                         "install one (Debian: apt-get install gcc) or set CC")
    subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def start_baseline(binary: Path, port: int, path: Path, forward: Group | None
                   ) -> subprocess.Popen:
    """Start the C baseline on ``port``, pinned to the relay's core."""
    command = [str(binary), str(port), str(path)]
    if forward is not None:
        command += [forward.host, str(forward.port)]
    if CORES > 1:
        command = ["taskset", "-c", str(RELAY_CPU), *command]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)  # bound before the load starts
    return process


@dataclass
class Trial:
    rate: float
    sent: int
    cached: int
    heard: int | None
    relay_cpu_s: float
    rss_mb: float
    kernel_drops: int

    @property
    def loss(self) -> float:
        lost = self.sent - self.cached
        if self.heard is not None:
            lost = max(lost, self.sent - self.heard)
        return lost / max(self.sent, 1)


def udp_port_state(port: int) -> tuple[int, int] | None:
    """Bytes queued and datagrams dropped on the UDP sockets bound to ``port`` (Linux's
    /proc/net/udp; None elsewhere): the same figures for the relay and the C baseline."""
    try:
        with open("/proc/net/udp") as table:
            rows = [line.split() for line in table][1:]
    except OSError:
        return None
    mine = [f for f in rows if len(f) > 12 and f[1].endswith(f":{port:04X}")]
    return (sum(int(f[4].split(":")[1], 16) for f in mine), sum(int(f[12]) for f in mine))


def settle(ports: list[int], most: float = 10.0) -> None:
    """Wait until the sockets on ``ports`` hold nothing (the receiver took every datagram
    that was not dropped), for at most ``most`` seconds: a fixed pause counted what was
    still queued as lost, more of it the slower the receiver."""
    deadline = time.monotonic() + most
    time.sleep(0.05)
    while time.monotonic() < deadline:
        states = [udp_port_state(port) for port in ports]
        if any(state is None for state in states):  # no /proc: the old fixed pause
            time.sleep(0.5)
            return
        if all(queued == 0 for queued, _ in states):  # type: ignore[misc]
            return
        time.sleep(0.02)


def cached_records(cache: Path) -> int:
    return sum(e.count for p in cache.glob("*/*.idx") for e in index.unpack(p.read_bytes()))


def trial(size: int, rate: float, seconds: float, multicast_on: bool, io: str = "auto",
          baseline: Path | None = None, archive: str | None = None,
          rotate_seconds: float | None = None) -> Trial:
    """One run at a fixed rate, of the relay or, given its binary, of the C baseline;
    with ``archive`` (a store's endpoint), ``speeddata archive`` uploads beside it."""
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        schemas = work / "schemas"
        channel, _ = record_schema(schemas, size)
        settings = services.default_settings(work, schemas)
        settings["relay"].update(io=io, batch=256, rcvbuf="64MiB")
        if rotate_seconds is not None:  # files close often: the archiver always has work
            settings["cache"]["rotate_seconds"] = rotate_seconds
        if archive is not None:
            settings["archive"] = {"endpoint": archive, "host": "bench"}
        if not multicast_on:
            settings["multicast"].update(full="", decimated="")
        full = parse_group(settings["multicast"]["full"]) if multicast_on else None
        stop, ready = ctx.Event(), ctx.Event()
        heard = ctx.Value("q", 0)
        watcher = None
        if full is not None:
            watcher = ctx.Process(target=listener, args=(full, ready, stop, heard))
            watcher.start()
            ready.wait(10)
        port = settings["relay"]["port"]
        if baseline is None:
            config = write_file(work / "bench.toml", settings)
            service = services.start("relay", config, work, cpu=RELAY_CPU if CORES > 1 else None)
            pid = service.process.pid
            uploader = services.start("archive", config, work) if archive else None
        else:
            process = start_baseline(baseline, port, work / "baseline.bin", full)
            pid = process.pid
        cpu0 = services.cpu_seconds(pid)
        sent, elapsed = ctx.Value("q", 0), ctx.Value("d", 0.0)
        gen = ctx.Process(target=load_generator, args=(schemas, channel, rate, seconds, port,
                                                       sent, elapsed))
        gen.start()
        gen.join()
        settle([port] + ([full.port] if full is not None else []))  # the last batches
        cpu = services.cpu_seconds(pid) - cpu0
        rss = services.peak_rss_bytes(pid)
        # the kernel's count, now and exact, for the relay and the baseline alike
        drops = (udp_port_state(port) or (0, 0))[1]
        if baseline is None:
            if uploader is not None:
                uploader.stop()
            service.stop()
            kept = cached_records(work / "cache")
        else:
            process.terminate()
            kept = int(process.communicate(timeout=10)[0])
        stop.set()
        if watcher is not None:
            watcher.join(10)
        return Trial(min(rate, sent.value / max(elapsed.value, 1e-9)), sent.value, kept,
                     heard.value if full else None, cpu, rss / 2**20, drops)


def highest_rate(size: int, multicast_on: bool, seconds: float, start: float,
                 io: str = "auto", baseline: Path | None = None,
                 log: Callable[[str], None] = print, **options: Any) -> tuple[Trial | None, bool]:
    """Double until loss, then bisect: the highest rate with loss under the limit.

    Also says whether the load generator was the limit (it could not send the rate
    asked of it, and nothing was lost): then the figure is a lower bound."""
    good: Trial | None = None
    capped = False
    label = f"{'baseline' if baseline else 'relay'} {size} B mc={'on' if multicast_on else 'off'}"

    def attempt(rate: float) -> bool:
        nonlocal good, capped
        t = trial(size, rate, seconds, multicast_on, io, baseline, **options)
        log(f"  {label} offered {rate / 1000:.0f} k/s, sent {t.rate / 1000:.0f} k/s: "
            f"loss {t.loss * 100:.4f}%")
        if t.loss > LOSS_LIMIT:
            return False
        if good is None or t.rate > good.rate:
            good = t
        capped = t.rate < 0.95 * rate
        return True

    rate, bad = start, None
    while bad is None and not capped and rate < 5e6:
        if attempt(rate):
            rate *= 2
        else:
            bad = rate
    low = good.rate if good else 0.0
    for _ in range(3 if bad else 0):
        mid = (low + bad) / 2
        if attempt(mid):
            low = mid
        else:
            bad = mid
    return good, capped and bad is None


def run(sizes: list[int], runs: int, seconds: float, json_out: bool, io: str = "auto",
        quiet: bool = False) -> dict[str, Any]:
    def log(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    def spread(trials: list[Trial | None]) -> dict[str, float]:
        rates = [x.rate if x else 0.0 for x in trials]
        return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}

    def per_datagram_us(x: Trial | None) -> float | None:
        return round(x.relay_cpu_s / x.sent * 1e6, 2) if x and x.sent else None

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        binary = build_baseline(Path(tmp))
        for size in sizes:
            for multicast_on in (True, False):
                start = 100_000 if multicast_on else 300_000
                relay_runs: list[Trial | None] = []
                base_runs: list[Trial | None] = []
                capped = {"relay": False, "baseline": False}
                for _ in range(runs):
                    for kind, runs_of, binary_or_none in (("relay", relay_runs, None),
                                                          ("baseline", base_runs, binary)):
                        best, limited = highest_rate(size, multicast_on, seconds, start, io,
                                                     binary_or_none, log=log)
                        runs_of.append(best)
                        capped[kind] |= limited
                relay, base = spread(relay_runs), spread(base_runs)
                ranked = sorted(relay_runs, key=lambda x: x.rate if x else 0.0)
                typical = ranked[len(ranked) // 2]
                rows.append({
                    "size_bytes": size, "multicast": multicast_on,
                    "relay_datagrams_per_s": relay,
                    "relay_mb_per_s": round(relay["median"] * size / 1e6, 1),
                    "relay_cpu_us_per_datagram": per_datagram_us(typical),
                    "relay_peak_rss_mb": round(typical.rss_mb, 1) if typical else None,
                    "kernel_drops": typical.kernel_drops if typical else None,
                    "baseline_datagrams_per_s": base,
                    "ratio_to_baseline": round(relay["median"] / base["median"], 3)
                    if base["median"] else None,
                    "limited_by_load_generator": capped,
                })
        # Pi-class: the relay's CPU at 12,000 datagrams/s of 90 B (~10 Mbit/s), multicast
        # on and a listener, against the C baseline doing the same, median of the runs
        pi = [trial(90, 12_000, seconds, True, io) for _ in range(runs)]
        pi_base = [trial(90, 12_000, seconds, True, io, binary) for _ in range(runs)]

    def cpu_pct(trials: list[Trial]) -> float:
        return round(statistics.median(x.relay_cpu_s for x in trials) / seconds * 100, 1)

    result = {"rows": rows, "pi_class": {
        "rate": 12_000, "size_bytes": 90, "relay_cpu_pct_of_one_core": cpu_pct(pi),
        "baseline_cpu_pct_of_one_core": cpu_pct(pi_base),
        "loss_pct": round(max(x.loss for x in pi) * 100, 4),
        "relay_peak_rss_mb": round(max(x.rss_mb for x in pi), 1)},
        "machine": {"cores": CORES, "seconds_per_trial": seconds, "runs": runs,
                    "pinning": f"relay on CPU {RELAY_CPU}, load generator on CPU {LOAD_CPU}"}}
    if json_out:
        print(json.dumps(result, indent=1))
    else:
        print(f"{'size':>5} {'mcast':>5} {'relay k/s':>22} {'MB/s':>6} {'us/dgram':>8} "
              f"{'RSS MB':>6} {'drops':>6} {'baseline k/s':>22} {'ratio':>6}")
        for r in rows:
            rel, bas = r["relay_datagrams_per_s"], r["baseline_datagrams_per_s"]
            print(f"{r['size_bytes']:>5} {'on' if r['multicast'] else 'off':>5} "
                  f"{rel['median'] / 1e3:>7.0f} ({rel['min'] / 1e3:.0f}-{rel['max'] / 1e3:.0f})"
                  f"{'':>4} {r['relay_mb_per_s']:>6} {r['relay_cpu_us_per_datagram']!s:>8} "
                  f"{r['relay_peak_rss_mb']!s:>6} {r['kernel_drops']!s:>6} "
                  f"{bas['median'] / 1e3:>7.0f} ({bas['min'] / 1e3:.0f}-{bas['max'] / 1e3:.0f})"
                  f"{'':>4} {r['ratio_to_baseline']!s:>6}"
                  + "".join(f"  ({k}: load generator limit, a lower bound)"
                            for k, v in r["limited_by_load_generator"].items() if v))
        pi_row = result["pi_class"]
        print(f"Pi-class: 12,000 datagrams/s of 90 B with multicast: relay CPU "
              f"{pi_row['relay_cpu_pct_of_one_core']}% of one core (C baseline "
              f"{pi_row['baseline_cpu_pct_of_one_core']}%), loss {pi_row['loss_pct']}%, "
              f"peak RSS {pi_row['relay_peak_rss_mb']} MB")
        print(f"highest rate held {seconds:g} s with loss <= 0.01% (cache and full-rate listener),"
              f" median (min-max) of {runs} runs; {result['machine']['pinning']}")
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="speeddata bench relay", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[90, 1000], metavar="BYTES",
                        help="datagram sizes to measure (default: 90 1000)")
    parser.add_argument("--runs", type=int, default=3,
                        help="searches per figure; the table shows median (min-max) (default: 3)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="how long each rate must hold (default: 5)")
    parser.add_argument("--io", choices=["auto", "mmsg", "portable"], default="auto",
                        help="the relay's batch I/O path (default: auto)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run(args.sizes, args.runs, args.seconds, args.json, args.io)
    return 0


__all__ = ["main", "run", "trial"]
