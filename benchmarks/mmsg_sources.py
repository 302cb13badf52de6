#!/usr/bin/env python3
"""What reading every sender's address costs recvmmsg: ``MmsgIO.receive`` per datagram,
with and without sources, 256 datagrams of 90 bytes per call on loopback, median of 300
calls, three rounds interleaved.

    PYTHONPATH=. .venv/bin/python benchmarks/mmsg_sources.py
"""

import socket
import statistics
import time

from speeddata.relay import netio


def run(sources: bool) -> float:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 2**20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = rx.getsockname()
    io = netio.MmsgIO(rx, 256, 2000, sources)
    times = []
    for _ in range(300):
        for _ in range(256):
            tx.sendto(b"x" * 90, address)
        started = time.perf_counter()
        batch = io.receive()
        times.append((time.perf_counter() - started) / max(1, len(batch.lengths)))
    rx.close()
    tx.close()
    return statistics.median(times) * 1e6


if __name__ == "__main__":
    for _ in range(3):
        print(f"without sources {run(False):.3f} µs/datagram, with {run(True):.3f}")
