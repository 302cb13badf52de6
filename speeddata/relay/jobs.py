"""The relay's slow jobs (retention scans, schema loads, status files) on one worker
thread, so that the receive loop does only receive, check, write and forward.

The queue is bounded by kind: at most one job of each kind waits. A job submitted while
one of its kind still waits is counted as skipped: either the one waiting does the same
work with fresher inputs when it runs (a retention round reads the cache then), or, for
a job that carries its inputs (a status file of a snapshot taken on the loop), the new
one takes the waiting one's place, so a status file written after a long retention scan
holds the newest figures, not those of before the scan. A job that raises is logged and
counted; the thread goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("speeddata.relay")


class Jobs:
    """One worker thread and its queue of at most one pending job per kind."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._pending: dict[str, Callable[[], None]] = {}  # kind -> job, oldest first
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.submitted: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.longest_ms: dict[str, float] = {}

    def submit(self, kind: str, job: Callable[[], None], newest: bool = False) -> bool:
        """Queue ``job`` unless one of ``kind`` waits already (then it is skipped, or with
        ``newest`` it replaces the waiting one, in its place in the queue)."""
        with self._cond:
            if kind in self._pending:
                self.skipped[kind] = self.skipped.get(kind, 0) + 1
                if newest:
                    self._pending[kind] = job
                return False
            self._pending[kind] = job
            self.submitted[kind] = self.submitted.get(kind, 0) + 1
            self._cond.notify()
        return True

    def pending(self) -> list[str]:
        with self._cond:
            return list(self._pending)

    def run_one(self) -> str | None:
        """Run the oldest pending job on this thread; its kind, or None if none waits."""
        with self._cond:
            if not self._pending:
                return None
            kind = next(iter(self._pending))
            job = self._pending.pop(kind)
        start = self.clock()
        try:
            job()
        except Exception:  # a job's failure is its own; the next round tries again
            self.failed[kind] = self.failed.get(kind, 0) + 1
            log.exception("relay job %s failed (%d so far)", kind, self.failed[kind])
        took = (self.clock() - start) * 1000
        self.longest_ms[kind] = max(self.longest_ms.get(kind, 0.0), took)
        return kind

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._pending:
                    return
            self.run_one()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="relay-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the jobs that wait, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def statistics(self) -> dict[str, object]:
        with self._cond:
            pending = list(self._pending)
        return {"pending": pending, "submitted": dict(self.submitted),
                "skipped": dict(self.skipped), "failed": dict(self.failed),
                "longest_ms": {k: round(v, 3) for k, v in self.longest_ms.items()}}
