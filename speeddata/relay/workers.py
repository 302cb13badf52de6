"""``speeddata relay --workers N``: N relay processes on one port, started, watched and
stopped together."""

from __future__ import annotations

import logging
import os
import signal

from speeddata.config import Config
from speeddata.relay.server import Relay
from speeddata.shutdown import StopFlag, on_stop_signal

log = logging.getLogger("speeddata.relay")


def _worker(config: Config, worker: int) -> None:
    relay = Relay(config, worker=worker)
    relay.install_signal_handlers()
    relay.run()


def run_workers(config: Config) -> int:
    """``--workers N``: N relays on one port (SO_REUSEPORT); the kernel spreads senders
    over them by address, each writes its own ``-wN`` cache files. Stops them all on
    SIGTERM/Ctrl-C; exits non-zero if one dies, so a supervisor restarts the set."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_worker, args=(config, i), name=f"relay-w{i}")
               for i in range(config.relay.workers)]
    stopping = StopFlag()

    def stop() -> None:
        stopping.set()
        for w in workers:
            if w.pid and w.is_alive():
                os.kill(w.pid, signal.SIGTERM)

    for w in workers:
        w.start()
    on_stop_signal(stop)
    log.info("relay: %d workers on port %d", len(workers), config.relay.port)
    while any(w.is_alive() for w in workers):
        for w in workers:
            w.join(0.2)
            if not stopping() and w.exitcode not in (None, 0):
                log.error("%s exited with %s; stopping the other workers", w.name, w.exitcode)
                stop()
                for other in workers:
                    other.join()
                return 1
    return 0
