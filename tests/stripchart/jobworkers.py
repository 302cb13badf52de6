"""Pivot processes that misbehave, for tests/stripchart/test_jobs.py (a spawned process
imports its target by module name, so they live in a module of their own)."""

from __future__ import annotations

import os
import struct
import time
from multiprocessing.connection import Connection

from speeddata.stripchart.jobs import Task


def hang(conn: Connection, task: Task) -> None:
    """Says it started, then works forever (until killed)."""
    conn.send(("progress", 1, 10))
    time.sleep(600)


def tear_pipe(conn: Connection, task: Task) -> None:
    """Dies halfway through a message, as a process killed while it writes one."""
    os.write(conn.fileno(), struct.pack("!i", 1000) + b"half")
    os._exit(0)


def garble(conn: Connection, task: Task) -> None:
    """Sends bytes that are no pickle."""
    conn.send_bytes(b"\x80\x05 not a pickle")


def talk_nonsense(conn: Connection, task: Task) -> None:
    """Sends a message the server does not understand."""
    conn.send(("progress",))


def fail(conn: Connection, task: Task) -> None:
    """Fails as a pivot does: with a reason."""
    conn.send(("failed", "nothing cached in that range"))


def without_h5py(conn: Connection, task: Task) -> None:
    """The real pivot, in a process where h5py is not installed."""
    import sys

    from speeddata.stripchart.jobs import pivot_worker

    sys.modules["h5py"] = None  # type: ignore[assignment]  # import h5py: not found
    pivot_worker(conn, task)


def leave_a_child_holding_the_pipe(conn: Connection, task: Task) -> None:
    """Ends without a word, but a child it forked keeps the pipe open (for a minute,
    its pid in ``child.pid`` beside the cache, for the test to stop it)."""
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    (task.cache_dir.parent / "child.pid").write_text(str(child))
    os._exit(3)
