"""Pivot jobs end in a final state whatever their process does (issue 21)."""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import pytest

from speeddata.config import build
from speeddata.stripchart import jobs
from speeddata.stripchart.jobs import PivotJobs, Task
from tests.helpers import SCHEMAS, wait_until
from tests.stripchart import jobworkers

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note on httpx versions
    from starlette.testclient import TestClient


def task(tmp: Path) -> Task:
    return Task(tmp / "cache", tmp / "exports" / "x.h5", 0, 1, {})


def ended(runner: PivotJobs, job_id: str) -> dict:
    return wait_until(lambda: (j := runner.get(job_id).as_dict())["state"] in jobs.FINAL and j,
                      what=f"job {job_id} to end")


def test_messages_a_worker_may_send_and_the_others() -> None:
    assert jobs._checked(("progress", 1, 2)) == ("progress", 1, 2)
    assert jobs._checked(("done", 5, 0.25, [])) == ("done", 5, 0.25, [])
    for bad in [("progress",), ("progress", "1", 2), ("done", 1), ("failed", 3), [], None,
                ("exit", 0), ("done", True, 1.0, [])]:
        with pytest.raises(ValueError, match="the pivot process sent"):
            jobs._checked(bad)


def test_a_job_whose_process_cannot_start_ends_failed(tmp_path: Path) -> None:
    """Raised in the server's own side (the target cannot be sent to a spawned process):
    the job says so and ends; before, it stayed "running" for good."""
    runner = PivotJobs(tmp_path, target=lambda conn, task: None)
    job = ended(runner, runner.submit("x", task(tmp_path)).id)
    assert job["state"] == "failed"
    assert "could not run the pivot" in job["error"]
    assert runner.statistics() == {"pending": 0, "ended": {"done": 0, "failed": 1,
                                                           "cancelled": 0}}
    runner.shutdown()


@pytest.mark.e2e
def test_a_job_whose_process_is_killed_ends_failed_with_the_reason(tmp_path: Path) -> None:
    runner = PivotJobs(tmp_path, target=jobworkers.hang)
    job = runner.submit("x", task(tmp_path))
    wait_until(lambda: job.done == 1 and job.pid, what="the pivot process to start")
    os.kill(job.pid, signal.SIGKILL)
    end = ended(runner, job.id)
    assert end["state"] == "failed"
    assert end["error"] == "the pivot process ended without a word (killed by SIGKILL)"
    runner.shutdown()


@pytest.mark.e2e
def test_a_process_that_ends_while_a_child_holds_its_pipe_ends_failed(tmp_path: Path) -> None:
    """No EOF comes while the child lives: the process's exit is noticed instead."""
    runner = PivotJobs(tmp_path, target=jobworkers.leave_a_child_holding_the_pipe)
    try:
        end = ended(runner, runner.submit("x", task(tmp_path)).id)
    finally:
        child = tmp_path / "child.pid"
        if child.exists():
            os.kill(int(child.read_text()), signal.SIGKILL)
    assert end["error"] == "the pivot process ended without a word (exit code 3)"
    runner.shutdown()


@pytest.mark.e2e
def test_cancelling_a_running_job_ends_it_cancelled(tmp_path: Path) -> None:
    runner = PivotJobs(tmp_path, target=jobworkers.hang)
    job = runner.submit("x", task(tmp_path))
    queued = runner.submit("y", task(tmp_path))
    wait_until(lambda: job.pid, what="the pivot process to start")
    assert runner.cancel(queued.id).state == "cancelled"
    runner.cancel(job.id)
    assert ended(runner, job.id)["state"] == "cancelled"
    assert runner.statistics()["ended"] == {"done": 0, "failed": 0, "cancelled": 2}
    runner.shutdown()


@pytest.mark.e2e
def test_twenty_jobs_failing_in_a_row_leave_post_answering_202(tmp_path: Path) -> None:
    """Each breaks its pipe its own way; before, each stayed "running", and the 17th
    POST /api/pivot answered 503 until a restart."""
    from speeddata.stripchart.app import create_app

    config = build(None, {("cache", "dir"): tmp_path / "cache", ("channels", "dir"): SCHEMAS,
                          ("exports", "dir"): tmp_path / "exports",
                          ("web", "host"): "127.0.0.1", ("web", "port"): 0})
    app = create_app(config)
    client = TestClient(app, base_url="http://127.0.0.1")
    runner = app.state.pivot_jobs
    breakers = [jobworkers.tear_pipe, jobworkers.garble, jobworkers.talk_nonsense,
                jobworkers.fail]
    reasons = []
    for n in range(20):
        runner.target = breakers[n % len(breakers)]
        got = client.post("/api/pivot", json={"start": "-1m"})
        assert got.status_code == 202, got.text
        job_id = got.json()["id"]
        wait_until(lambda j=job_id: client.get(f"/api/pivot/{j}").json()["state"] in
                   jobs.FINAL, what=f"job {n} to end")
        job = client.get(f"/api/pivot/{job_id}").json()
        assert job["state"] == "failed", job
        reasons.append(job["error"])
    assert client.post("/api/pivot", json={"start": "-1m"}).status_code == 202
    assert "broke its pipe (OSError: got end of file during message)" in reasons[0]
    assert "broke its pipe (UnpicklingError" in reasons[1]
    assert reasons[2].startswith("the pivot process broke its pipe (ValueError: the pivot "
                                 "process sent ('progress',))")
    assert reasons[3] == "nothing cached in that range"
    runner.shutdown()


@pytest.mark.e2e
def test_an_hdf5_export_on_a_server_without_h5py_says_what_to_install(tmp_path: Path) -> None:
    import time

    from tests.test_replay import fill

    fill(tmp_path / "cache", time.time_ns() - 10 * 10**9, 2)
    runner = PivotJobs(tmp_path / "cache", target=jobworkers.without_h5py)
    csv = Task(tmp_path / "cache", tmp_path / "exports" / "x", 0, time.time_ns(),
               {"export_format": "csv"})
    hdf5 = Task(tmp_path / "cache", tmp_path / "exports" / "x.h5", 0, time.time_ns(), {})
    assert ended(runner, runner.submit("x", csv).id)["state"] == "done"  # CSV: no h5py
    failed = ended(runner, runner.submit("x", hdf5).id)
    assert failed["error"] == ("this export needs h5py, which is not installed on the "
                               "server; install it with: pip install 'speeddata[pivot]'")
    runner.shutdown()
