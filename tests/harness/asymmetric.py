"""A userspace UDP path slower one way than the other, for the clock tests where the
kernel has no ``sch_netem``: in the test's process, or run in a router network
namespace (``python -m tests.harness.asymmetric FRONT UP RELAY_HOST RELAY_PORT OUT_S
BACK_S``: it prints its port, and forwards until its stdin closes)."""

from __future__ import annotations

import heapq
import selectors
import socket
import sys
import threading
import time
from typing import Any


class AsymmetricPath:
    """A real UDP path with a longer way out than back: every datagram from the sender
    reaches the relay ``out_s`` later, every answer comes back ``back_s`` later (for
    kernels without ``tc netem``; in a router namespace of its own, for the namespace
    test). ``front``: the address the sender sends to, ``up``: the one it sends on from."""

    def __init__(self, relay: tuple[str, int], out_s: float, back_s: float,
                 front: str = "127.0.0.1", up: str = "127.0.0.1") -> None:
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind((front, 0))
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.bind((up, 0))
        self.port = self.front.getsockname()[1]
        self.stopping = threading.Event()
        queue: list[tuple[float, int, socket.socket, bytes, Any]] = []
        client: list[Any] = [None]

        def run() -> None:
            selector = selectors.DefaultSelector()
            selector.register(self.front, selectors.EVENT_READ)
            selector.register(self.up, selectors.EVENT_READ)
            n = 0
            while not self.stopping.is_set():
                wait = min(0.05, max(0.0, queue[0][0] - time.monotonic())) if queue else 0.05
                for key, _ in selector.select(wait):
                    data, source = key.fileobj.recvfrom(65536)  # type: ignore[union-attr]
                    n += 1
                    if key.fileobj is self.front:
                        client[0] = source
                        heapq.heappush(queue, (time.monotonic() + out_s, n, self.up, data, relay))
                    else:
                        heapq.heappush(queue, (time.monotonic() + back_s, n, self.front, data,
                                               client[0]))
                while queue and queue[0][0] <= time.monotonic():
                    _, _, sock, data, target = heapq.heappop(queue)
                    sock.sendto(data, target)
            selector.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.front.close()
        self.up.close()


def main(argv: list[str]) -> None:
    front, up, host, port, out_s, back_s = argv
    path = AsymmetricPath((host, int(port)), float(out_s), float(back_s), front, up)
    print(path.port, flush=True)
    sys.stdin.read()  # until the test closes it (or dies)
    path.close()


if __name__ == "__main__":
    main(sys.argv[1:])
