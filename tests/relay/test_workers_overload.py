"""Several relay workers on one port, and a relay offered more than it can take."""

from __future__ import annotations

import multiprocessing
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import fastavro

from speeddata import status
from speeddata.bench.relay import cached_records, load_generator, record_schema
from speeddata.bench.services import free_port, peak_rss_bytes
from speeddata.config import write_file
from speeddata.pivot import pivot
from speeddata.schemas import load_file
from speeddata.sender import Encoder
from tests.helpers import (
    SCHEMAS,
    TIMEOUT,
    relay_settings,
    start_relay,
    wait_until,
)

EXAMPLE = load_file(SCHEMAS / "example.avsc")


def test_two_workers_share_the_port_and_pivot_merges_them(tmp_path: Path) -> None:
    port = free_port()
    settings = relay_settings(tmp_path, relay={"port": port, "workers": 2})
    config = write_file(tmp_path / "w.toml", settings)
    cache = Path(settings["cache"]["dir"])
    process = subprocess.Popen([sys.executable, "-m", "speeddata", "relay", "--config",
                                str(config), "-q"])
    try:
        wait_until(lambda: status.all_running(cache, ("relay-w0", "relay-w1")),
                   what="two relay workers")
        encoder = Encoder(EXAMPLE)
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
        counter = 0
        for _ in range(100):
            for sock in sockets:  # different source ports: the kernel spreads them
                sock.sendto(encoder.encode({
                    "time": counter, "message": "", "counter": counter, "sine_wave": 0.0,
                    "ramp": 0.0, "square_wave": 0.0, "noise": 0.0}), ("127.0.0.1", port))
                counter += 1
        wait_until(lambda: cached_records(cache) == counter, what=f"{counter} records cached")
    finally:
        process.terminate()
        assert process.wait(TIMEOUT) == 0
    per_worker = {}
    for worker in ("w0", "w1"):
        counters = []
        for path in (cache / "example").glob(f"*-{worker}.avro"):
            with path.open("rb") as f:
                counters += [r["counter"] for r in fastavro.reader(f)]
        per_worker[worker] = counters
    assert per_worker["w0"] and per_worker["w1"]  # both took a share
    everything = per_worker["w0"] + per_worker["w1"]
    assert sorted(everything) == list(range(counter))  # each datagram in exactly one
    result = pivot(cache, tmp_path / "merged.h5", 0, 2**62)
    assert result.records == counter
    import h5py

    with h5py.File(tmp_path / "merged.h5") as h5:
        receive = h5["example"]["receive_time"][()]
        assert (receive[1:] >= receive[:-1]).all()  # merged in time order
        assert sorted(h5["example"]["counter"][()].tolist()) == list(range(counter))


def test_overload_drops_with_counting_and_caches_all_it_accepted(tmp_path: Path) -> None:

    schemas = tmp_path / "schemas"
    channel, _ = record_schema(schemas, 90)
    settings = relay_settings(tmp_path, relay={"rcvbuf": "256KiB", "io": "mmsg"},
                              channels={"dir": str(schemas), "legacy": []})
    relay = start_relay(tmp_path, settings)
    ctx = multiprocessing.get_context("fork")
    sent, elapsed = ctx.Value("q", 0), ctx.Value("d", 0.0)
    blasters = [ctx.Process(target=load_generator, args=(
        schemas, channel, 300_000, 2.0, relay.port, sent, elapsed)) for _ in range(2)]
    for b in blasters:
        b.start()
    # However fast the relay is, a stall (a slow disk, a busy machine) is overload: the
    # socket buffer fills and the kernel drops, which the relay must count.
    time.sleep(0.5)
    relay.process.send_signal(signal.SIGSTOP)
    time.sleep(0.5)
    relay.process.send_signal(signal.SIGCONT)
    for b in blasters:
        b.join()

    def settled():
        snap = relay.snapshot()
        accepted = snap.get("datagrams", 0) - sum(snap.get("rejected", {}).values())
        return snap if snap and cached_records(relay.cache_dir) == accepted else None

    snap = wait_until(settled, what="every accepted datagram cached")
    assert snap["kernel_drops"] > 0  # it could not take everything, and it says so
    assert snap["cache_dropped"] == 0
    assert peak_rss_bytes(relay.process.pid) < 100 * 2**20  # bounded whatever was offered
    # still alive and serving
    before = cached_records(relay.cache_dir)
    encoder = Encoder(load_file(schemas / f"{channel}.avsc"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(encoder.encode({f["name"]: 1 if f["type"] == "long" else 1.0
                                 for f in encoder.channel.schema["fields"]}),
                 ("127.0.0.1", relay.port))
    wait_until(lambda: cached_records(relay.cache_dir) == before + 1, what="one more record")
    assert relay.stop() == 0
