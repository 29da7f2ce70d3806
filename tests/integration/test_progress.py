"""A handler's progress through `jobd run` on PostgreSQL: stored while the job runs, shown by
`jobctl status` and the Client, kept when its worker is killed, and the last report of a job
that ends within the second not lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobd.client import Client
from jobd.domain import NewJob, State
from jobd.store import Store

from .conftest import Daemon, eventually

pytestmark = pytest.mark.postgres

LAST = {"current": 10, "total": 10, "message": "resizing"}


def jobctl(daemon: Daemon, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "jobctl", "--socket", daemon.env["JOBD_SOCKET"], *args],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_progress_is_shown_while_running_and_survives_the_worker_killed(
    make_daemon, pg_store: Store, tmp_path: Path
) -> None:
    daemon = make_daemon().start()
    gate = tmp_path / "gate"  # never created: the handler waits until it is killed
    payload = {"steps": 10, "message": "resizing", "gate": str(gate)}
    job_id = (await pg_store.submit(NewJob("reporter", payload, max_attempts=1))).job.id

    with Client(daemon.env["JOBD_SOCKET"], timeout=10) as client:

        async def latest_reported() -> object:
            job = client.get(job_id)
            return job if job.progress == LAST else None

        job = await eventually(latest_reported, 20, "the last progress report")
        assert job.state_name == "running" and job.progress_at is not None
        status = jobctl(daemon, "status", str(job_id))
        assert "progress:" in status and "10/10 (100%) resizing" in status, status
        (pid,) = [w.pid for w in client.workers() if w.job_id == job_id]

    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def crashed() -> object:
        job = await pg_store.get(job_id)
        return job if job.state is State.FAILED else None

    ended = await eventually(crashed, 20, "the job to fail with its worker's crash")
    assert ended.crashes == 1 and ended.last_error is not None
    assert ended.last_error.type == "WorkerCrashed"
    assert ended.progress == LAST and ended.progress_at == job.progress_at


async def test_the_last_report_of_a_job_ending_within_the_second_is_written(
    make_daemon, pg_store: Store
) -> None:
    make_daemon().start()
    payload = {"steps": 5, "message": "done"}
    job_id = (await pg_store.submit(NewJob("reporter", payload))).job.id

    async def completed() -> object:
        job = await pg_store.get(job_id)
        return job if job.state is State.COMPLETED else None

    job = await eventually(completed, 20, "the job to complete")
    assert job.progress == {"current": 5, "total": 5, "message": "done"}
    assert job.progress_at is not None and job.started_at is not None
    assert job.started_at <= job.progress_at <= job.finished_at
