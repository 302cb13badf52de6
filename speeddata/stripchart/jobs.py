"""Pivot jobs of the server: run one at a time, each in a process of its own, and every
one ends in a final state (done, failed with the reason, or cancelled), whatever its
process does: dies (kill -9, the OOM killer), breaks its pipe, says something that
makes no sense, or hangs after its answer. A job left "running" would hold one of the
``MAX_PENDING`` places until a restart.

No FastAPI here (the routes are ``api_tags``) and no h5py: the pivot's HDF5 writer
imports it, in the worker process; a server without it still runs CSV exports.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from speeddata.errors import BusyError, NotFoundError, SpeeddataError
from speeddata.pivot import pivot, remove_stale_files  # h5py: only where HDF5 is written
from speeddata.tags import TagStore
from speeddata.times import format_time

log = logging.getLogger("speeddata.stripchart.jobs")

FINAL = ("done", "failed", "cancelled")
EXTRA_OF = {"h5py": "pivot"}  # what an export may find missing (Parquet says itself)
JOIN_SECONDS = 5.0  # a process that said its last word and does not end is killed then
POLL_SECONDS = 1.0  # how often a silent process is checked for being alive


@dataclass(frozen=True)
class Task:
    """What one pivot process is asked to do (pickled to it: plain values only)."""

    cache_dir: Path
    out: Path
    start_ns: int
    end_ns: int
    options: dict[str, Any]  # keyword arguments of ``speeddata.pivot.pivot``
    tag: str | None = None  # marked exported when done


@dataclass
class Job:
    id: str
    name: str
    created: str
    state: str = "queued"  # queued, running, cancelling, then one of FINAL
    done: int = 0
    total: int = 0
    file: str | None = None
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)  # records, seconds, skipped
    pid: int | None = None  # of its process while it runs

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "state": self.state, "done": self.done,
                "total": self.total, "file": self.file, "error": self.error,
                "created": self.created, **self.result}


def pivot_worker(conn: Connection, task: Task) -> None:
    """A pivot in a process of its own (decoding and compressing would take the live
    page's CPU time and the GIL); progress and the outcome go back through ``conn``."""
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        if time.monotonic() - last >= 0.2 or done == total:
            last = time.monotonic()
            conn.send(("progress", done, total))

    try:
        result = pivot(task.cache_dir, task.out, task.start_ns, task.end_ns,
                       progress=progress, **task.options)
        conn.send(("done", result.records, result.seconds,
                   result.skipped.as_list(task.cache_dir)))  # damaged cache ranges left out
    except SpeeddataError as exc:
        conn.send(("failed", str(exc)))
    except ModuleNotFoundError as exc:  # the server installed without the format's extra
        extra = EXTRA_OF.get((exc.name or "").partition(".")[0], "all")
        conn.send(("failed", f"this export needs {exc.name}, which is not installed on the "
                             f"server; install it with: pip install 'speeddata[{extra}]'"))
    except Exception as exc:  # reported to the page as it is
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))


def _checked(message: Any) -> tuple:
    """A worker's message as the runner takes it; ValueError for anything else."""
    if isinstance(message, tuple) and message:
        kind, args = message[0], message[1:]
        if kind == "progress" and len(args) == 2 and all(type(a) is int for a in args):
            return message
        if kind == "failed" and len(args) == 1 and isinstance(args[0], str):
            return message
        if (kind == "done" and len(args) == 3 and type(args[0]) is int
                and isinstance(args[1], int | float) and isinstance(args[2], list)):
            return message
    said = repr(message)
    raise ValueError(f"the pivot process sent {said[:80]}")


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is None:
        return "it did not end, and was killed"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class PivotJobs:
    """Pivots run one at a time, each in a process of its own, in the order asked.

    At most ``MAX_PENDING`` jobs wait or run (more: BusyError); a job can be cancelled
    while it waits or runs (its process is stopped, its partial file removed). Waiting
    and running jobs are always listed; of the finished ones the last ``KEEP``.
    ``target(conn, task)`` is what the process runs (tests give their own).
    """

    KEEP = 50
    MAX_PENDING = 16

    def __init__(self, cache_dir: Path,
                 target: Callable[[Connection, Task], None] = pivot_worker) -> None:
        self.cache_dir = cache_dir
        self.target = target
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.ended = dict.fromkeys(FINAL, 0)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pivot")
        self._processes: dict[str, BaseProcess] = {}
        self._context = multiprocessing.get_context("spawn")

    def pending(self) -> int:
        return sum(j.state not in FINAL for j in self.jobs.values())

    def submit(self, name: str, task: Task) -> Job:
        job = Job(uuid.uuid4().hex[:12], name, format_time(time.time_ns()))
        with self.lock:
            if self.pending() >= self.MAX_PENDING:
                raise BusyError(f"{self.MAX_PENDING} pivots are waiting or running already; "
                                "wait for one to finish, or cancel one (DELETE /api/pivot/ID)")
            self.jobs[job.id] = job
            finished = [k for k, j in self.jobs.items() if j.state in FINAL]
            for old in finished[: -self.KEEP]:
                del self.jobs[old]
        try:
            self._pool.submit(self._run, job, task)
        except RuntimeError:  # the server is stopping: it never starts
            with self.lock:
                self._end(job, "cancelled", error="the server is stopping")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self.lock:
            if job.state == "queued":
                self._end(job, "cancelled")
            elif job.state == "running":
                job.state = "cancelling"
                process = self._processes.get(job_id)
                if process is not None:
                    process.terminate()
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no pivot job {job_id[:40]!r}; GET /api/pivot lists them")
        return job

    def list(self) -> list[dict[str, Any]]:
        return [j.as_dict() for j in list(self.jobs.values())]

    def statistics(self) -> dict[str, Any]:
        return {"pending": self.pending(), "ended": dict(self.ended)}

    def _end(self, job: Job, state: str, **changes: Any) -> None:
        job.pid = None
        job.state = state
        for key, value in changes.items():
            setattr(job, key, value)
        self.ended[state] += 1

    def _run(self, job: Job, task: Task) -> None:
        """Run one job to its final state: nothing it meets leaves it running."""
        outcome: tuple = ("failed", "the pivot process ended without a word")
        exitcode: int | None = 0
        try:
            with self.lock:
                if job.state != "queued":
                    return  # cancelled while it waited
                job.state = "running"
            outcome, exitcode = self._work(job, task)
        except Exception as exc:  # the server's own side failed: said, never hidden
            log.exception("pivot job %s", job.id)
            outcome = ("failed", f"the server could not run the pivot ({type(exc).__name__}: "
                                 f"{exc})")
        finally:
            if job.state in ("running", "cancelling"):
                self._conclude(job, task, outcome, exitcode)

    def _work(self, job: Job, task: Task) -> tuple[tuple, int | None]:
        """Start the process, follow its messages; (its outcome, its exit code)."""
        receiver, sender = self._context.Pipe(duplex=False)
        outcome: tuple = ("failed", "the pivot process ended without a word")
        broken = killed = False
        process = self._context.Process(target=self.target, name=f"pivot-{job.id}",
                                        args=(sender, task), daemon=True)
        try:
            with self.lock:
                process.start()
                self._processes[job.id] = process
                job.pid = process.pid
                if job.state == "cancelling":  # cancelled between start and here
                    process.terminate()
            sender.close()  # the process holds the only write end: its end is our EOF
            while True:
                # its end is an EOF, unless a process forked meanwhile holds the write
                # end too: then its exit says it
                if not receiver.poll(POLL_SECONDS):
                    if process.is_alive():
                        continue
                    if not receiver.poll(0):  # ended, and nothing more to read
                        break
                try:
                    message = _checked(receiver.recv())
                except EOFError:  # the process ended (or was stopped) before its answer
                    break
                except Exception as exc:  # a torn or garbled message: a broken pipe
                    outcome = ("failed", f"the pivot process broke its pipe "
                                         f"({type(exc).__name__}: {exc})")
                    broken = True
                    break
                if message[0] != "progress":
                    outcome = message
                    break
                job.done, job.total = message[1], message[2]
        finally:
            sender.close()
            receiver.close()
            if process.pid is not None:  # started: it ends now, whatever it was doing
                process.join(0.5 if broken else JOIN_SECONDS)  # nothing more to hear
                if process.exitcode is None:
                    process.kill()
                    process.join()
                    killed = True
            with self.lock:
                self._processes.pop(job.id, None)
        return outcome, None if killed else process.exitcode

    def _conclude(self, job: Job, task: Task, outcome: tuple, exitcode: int | None) -> None:
        try:
            remove_stale_files(task.out.parent)  # a killed process's half-written file
        except Exception as exc:
            log.warning("pivot job %s: stale files not removed (%s)", job.id, exc)
        with self.lock:
            if job.state == "cancelling":
                self._end(job, "cancelled")
                return
            if outcome[0] == "done":
                self._end(job, "done", file=task.out.name, result={
                    "records": outcome[1], "seconds": round(outcome[2], 3),
                    "skipped": outcome[3]})
            else:
                error = outcome[1] if exitcode == 0 else (
                    f"{outcome[1]} ({_how_it_ended(exitcode)})")
                log.warning("pivot job %s failed: %s", job.id, error)
                self._end(job, "failed", error=error)
                return
        if task.tag is not None:  # outside the lock: a database write
            try:
                TagStore(self.cache_dir).mark_exported(task.tag, time.time_ns())
            except Exception as exc:  # the export is there; retention keeps the tag's data
                log.warning("pivot job %s: tag %s not marked exported (%s)", job.id,
                            task.tag, exc)

    def shutdown(self) -> None:
        with self.lock:
            for job in self.jobs.values():
                if job.state == "queued":
                    self._end(job, "cancelled")
            for process in self._processes.values():
                process.terminate()
        self._pool.shutdown(wait=True)
