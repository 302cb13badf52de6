#!/usr/bin/env python3
"""Sender benchmark: what one sample costs a source.

Measures, for each demo channel, the encoder alone (records/s and µs per record) against
fastavro's ``schemaless_writer`` with the single-object header added (the baseline), and
``Sender.send`` to a UDP socket on loopback (encode + one ``sendto``), in the same run,
with its time probes (to a socket that never answers them) and without (``probe=0``).

    PYTHONPATH=. .venv/bin/python benchmarks/sender.py [--seconds 1] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys
import time
from collections.abc import Callable

import fastavro

from speeddata import Sender, wire
from speeddata.schemas import DEMO_DIR as SCHEMAS
from speeddata.schemas import load_file
from speeddata.sender import Encoder

RECORDS = {
    "motor": {"time": 1_763_800_000_000_000_000, "speed": 1500.5, "torque": 3.25,
              "current": 12.0, "voltage": 48.1, "position": 90.0, "temperature": 61.5},
    "example": {"time": 1_763_800_000_000_000_000, "message": "hello", "counter": 12345,
                "sine_wave": 0.5, "ramp": 0.25, "square_wave": 1.0, "noise": -0.1},
}


def rate(func: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``func`` over about ``seconds``."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(1000):
            func()
        calls += 1000
    return calls / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = []
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    for name, record in RECORDS.items():
        channel = load_file(SCHEMAS / f"{name}.avsc")
        encoder = Encoder(channel)
        header = wire.header(channel.fingerprint)

        def with_fastavro(record=record, channel=channel, header=header) -> bytes:
            out = io.BytesIO()
            out.write(header)
            fastavro.schemaless_writer(out, channel.parsed, record)
            return out.getvalue()

        assert with_fastavro() == encoder.encode(record)  # the same bytes, or no comparison
        ours = rate(lambda encoder=encoder, record=record: encoder.encode(record), args.seconds)
        theirs = rate(with_fastavro, args.seconds)
        with Sender(channel, *sink.getsockname()) as sender:
            sending = rate(lambda sender=sender, record=record: sender.send(record),
                           args.seconds)
        with Sender(channel, *sink.getsockname(), probe=0) as sender:  # no time probes
            plain = rate(lambda sender=sender, record=record: sender.send(record),
                         args.seconds)
        rows.append({"channel": name, "bytes": len(encoder.encode(record)),
                     "encode_per_s": round(ours), "encode_us": round(1e6 / ours, 2),
                     "fastavro_per_s": round(theirs), "fastavro_us": round(1e6 / theirs, 2),
                     "speedup": round(ours / theirs, 1),
                     "send_per_s": round(sending), "send_us": round(1e6 / sending, 2),
                     "send_no_probe_us": round(1e6 / plain, 2)})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'channel':>8} {'bytes':>5} {'encode':>14} {'fastavro':>14} {'ratio':>6} "
          f"{'Sender.send (UDP)':>20} {'without probes':>15}")
    for r in rows:
        print(f"{r['channel']:>8} {r['bytes']:>5} {r['encode_us']:>9.2f} µs "
              f"{r['fastavro_us']:>9.2f} µs {r['speedup']:>5}x "
              f"{r['send_us']:>9.2f} µs ({r['send_per_s'] / 1000:.0f} k/s) "
              f"{r['send_no_probe_us']:>12.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
