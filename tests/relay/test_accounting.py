"""Every datagram is accounted for at the highest rate: two senders flood a relay with
a small receive buffer, and it is stopped while its socket still holds thousands;
what was sent is exactly what was cached, rejected, dropped by the kernel (counted per
socket from /proc/net/udp, not from SO_RXQ_OVFL, which misses the drops after the last
queued datagram) or dropped at stop."""

from __future__ import annotations

import multiprocessing
import re
import signal
import sys
from pathlib import Path

import pytest

from speeddata.bench.relay import cached_records, load_generator, record_schema
from tests.helpers import TIMEOUT, start_relay
from tests.relay.test_relay_loop import free_udp_port

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="the kernel's drop counters are Linux's")]

STOPPED = re.compile(
    r"relay stopped: (?P<datagrams>\d+) datagrams in \d+ batches, (?P<rejected>\d+) rejected, "
    r"(?P<kernel_drops>\d+) kernel drops, (?P<not_cached>\d+) not cached \(disk\), "
    r"(?P<drained>\d+) cached while stopping, (?P<dropped_at_stop>\d+) dropped at stop")


def test_sent_is_cached_plus_rejected_plus_counted_drops_exactly(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    channel, _ = record_schema(schemas, 90)
    settings = {
        "channels": {"dir": str(schemas), "legacy": []},
        "cache": {"dir": str(tmp_path / "cache")},
        "relay": {"host": "127.0.0.1", "port": 0, "rcvbuf": "1MiB", "io": "mmsg"},
        "multicast": {"full": f"239.255.104.31:{free_udp_port()}",
                      "decimated": f"239.255.104.32:{free_udp_port()}",
                      "control": f"239.255.104.33:{free_udp_port()}",
                      "interface": "127.0.0.1"},
    }
    relay = start_relay(tmp_path, settings)
    ctx = multiprocessing.get_context("fork")
    counts = [(ctx.Value("q", 0), ctx.Value("d", 0.0)) for _ in range(2)]
    senders = [ctx.Process(target=load_generator, args=(
        schemas, channel, 200_000, 1.5, relay.port, sent, elapsed)) for sent, elapsed in counts]
    for s in senders:
        s.start()
    for s in senders:
        s.join(TIMEOUT)
    relay.process.send_signal(signal.SIGTERM)  # at once: its socket still holds datagrams
    assert relay.process.wait(TIMEOUT) == 0
    found = STOPPED.search(relay.log())
    assert found, relay.log()
    final = {k: int(v) for k, v in found.groupdict().items()}
    sent = sum(sent.value for sent, _ in counts)
    cached = cached_records(relay.cache_dir)
    assert sent > 0 and final["rejected"] == final["not_cached"] == 0
    assert cached == final["datagrams"]
    assert sent == cached + final["rejected"] + final["kernel_drops"] + final["dropped_at_stop"], (
        sent, final)
