"""The database away for 15 seconds in the middle of a run (docs/guarantees.md, "The database
goes away").

The shared PostgreSQL server must not be stopped by a test, so the daemon reaches it through a
TCP proxy (tests/tcp_proxy.py) that the test cuts -- every connection dropped, new ones refused,
as when the server stops -- and restores.  While it is cut: the daemon stays up, /readyz and
`jobctl health` say not ready, jobctl calls fail soon with "store unavailable" instead of
hanging, a job past its timeout is still stopped on time, and the results of jobs that finish
meanwhile are kept.  Once it is back: those results are written (each job ran once), and work
resumes with nobody's help.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from tcp_proxy import TcpProxy

from jobd.domain import NewJob, State
from jobd.store import Store

from .conftest import ROOT, RunLog, eventually, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

OUTAGE = float(os.environ.get("JOBD_TEST_OUTAGE_SECONDS", "15"))
CALL_BOUND = 5.0  # a jobctl call during the outage must have failed within this long
RESUME_BOUND = 5.0  # the results kept must be written within this long of the return


def jobctl(socket: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBD_")}
    env.update(JOBD_SOCKET=socket, PYTHONPATH=str(ROOT))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "jobctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - started


async def submit(store: Store, type_: str, payload: dict | None = None, **kw) -> int:
    return (await store.submit(NewJob(type_, payload or {}, **kw))).job.id


@pytest.fixture
def proxy(pg_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the test's PostgreSQL server, for the test to cut."""
    port = urlsplit(pg_url).port or 5432
    proxy = TcpProxy(("127.0.0.1", port)).start()
    yield proxy
    proxy.close()


async def test_a_database_outage_is_survived_and_nothing_is_lost(
    make_daemon, pg_url: str, proxy: TcpProxy, pg_store: Store, runlog: RunLog, tmp_path: Path
) -> None:
    d = make_daemon(
        JOBD_DATABASE_URL=proxy.url(pg_url),
        JOBD_WORKERS="3",
        # Leases longer than the outage: the node's own jobs stay its own.
        JOBD_JOBS_LEASE_SECONDS="60",
        JOBD_JOBS_HEARTBEAT_SECONDS="1",
        JOBD_HTTP_LISTEN="127.0.0.1:0",
    ).start()
    socket = d.env["JOBD_SOCKET"]
    base = "http://" + wait_for(
        lambda: (e := d.event("http shim listening")) and e["listen"], what="the shim"
    )
    assert requests.get(f"{base}/readyz", timeout=10).status_code == 200

    # Two jobs that finish during the outage, one that overruns its timeout in it.
    nappers = [await submit(pg_store, "napper", {"seconds": 2.5}) for _ in range(2)]
    busy = await submit(pg_store, "busy", timeout=2.0, max_attempts=1)
    wait_for(lambda: all(runlog.of(j) for j in [*nappers, busy]), what="the jobs to start")

    proxy.cut()
    cut_at = time.monotonic()

    # Not ready, and saying so quickly.
    ready = wait_for(
        lambda: (r := requests.get(f"{base}/readyz", timeout=10)).status_code == 503 and r.json(),
        timeout=10,
        what="readyz to say 503",
    )
    assert ready["store"] == "unavailable" and ready["status"] == "degraded"
    health, took = jobctl(socket, "health")
    assert health.returncode == 1, health
    assert "unavailable" in health.stdout + health.stderr and took < CALL_BOUND
    # Calls that need the database fail with a clear error instead of hanging.
    for args in (("status", str(nappers[0])), ("submit", "noop"), ("list",)):
        result, took = jobctl(socket, *args)
        assert result.returncode == 3, (args, result)
        assert "store unavailable" in result.stderr, (args, result.stderr)
        assert took < CALL_BOUND, (args, took)

    # The nappers finish while the database is away; the overrunning job is still stopped
    # on time (the supervisor's loop does not wait for the database).
    wait_for(lambda: all(runlog.of(j, "done") for j in nappers), what="the nappers to finish")
    stopping = wait_for(
        lambda: [
            e for e in d.events() if e.get("message") == "stopping job" and e.get("job_id") == busy
        ],
        timeout=10,
        what="the overrunning job to be stopped",
    )
    assert stopping[0]["reason"] == "timeout"
    assert time.monotonic() - cut_at < OUTAGE

    # ... the rest of the outage: the daemon stays up throughout.
    while time.monotonic() - cut_at < OUTAGE:
        assert d.proc.poll() is None, d.stderr()
        time.sleep(0.2)
    for job_id in nappers:  # nothing could be written: still running in the database
        assert (await pg_store.get(job_id)).state is State.RUNNING
    proxy.restore()
    restored_at = time.monotonic()

    # Back: the results kept are written soon (not after the connection pool's doubling
    # retry delay has run its course), each job having run once; work resumes.
    for job_id in nappers:
        job = await _until_state(pg_store, job_id, State.COMPLETED)
        assert job.result == {"slept": 2.5} and job.attempts == 1
        assert runlog.runs()[job_id] == 1
    assert time.monotonic() - restored_at < RESUME_BOUND
    job = await _until_state(pg_store, busy, State.FAILED)
    assert job.last_error.type == "Timeout"
    result, _ = jobctl(socket, "submit", "noop", "--wait", "--wait-timeout", "30")
    assert result.returncode == 0, result
    wait_for(
        lambda: requests.get(f"{base}/readyz", timeout=10).status_code == 200,
        what="readyz to say 200 again",
    )
    health, _ = jobctl(socket, "health")
    assert health.returncode == 0, health
    messages = [e.get("message") for e in d.events()]
    assert "store unavailable" in messages and "store available again" in messages
    assert d.proc.poll() is None

    # A stop asked for while the database is away is heard at once, and the node exits
    # cleanly: its loop is never stuck waiting for the database.
    proxy.cut()
    wait_for(lambda: not requests.get(f"{base}/readyz", timeout=10).ok, what="not ready")
    d.signal(signal.SIGTERM)
    signalled = time.monotonic()
    wait_for(lambda: d.event("draining"), timeout=5, what="the drain to begin")
    assert time.monotonic() - signalled < 3
    assert d.proc.wait(30) == 0


async def _until_state(store: Store, job_id: int, state: State, timeout: float = 30.0):
    async def check():
        job = await store.get(job_id)
        return job if job.state is state else None

    return await eventually(check, timeout, f"job {job_id} to be {state}")


async def test_after_an_outage_longer_than_its_leases_a_node_keeps_its_own_jobs(
    make_daemon, pg_url: str, proxy: TcpProxy, pg_store: Store, runlog: RunLog
) -> None:
    """The database away for longer than the lease: every lease has run out when it returns.
    The node must not take back its own jobs -- the ones it still runs and the ones whose
    results it holds -- and then discard those results: it renews its leases before it
    recovers anyone's, so each job runs once.  (Before the fix its recovery loop often got
    there before its heartbeat and its result writer, and the jobs ran again.)"""
    d = make_daemon(
        JOBD_DATABASE_URL=proxy.url(pg_url),
        JOBD_WORKERS="3",
        JOBD_JOBS_LEASE_SECONDS="2",
        JOBD_JOBS_HEARTBEAT_SECONDS="0.3",
    ).start()
    done_early = [await submit(pg_store, "napper", {"seconds": 0.5}) for _ in range(2)]
    still_running = await submit(pg_store, "napper", {"seconds": 6})
    ids = [*done_early, still_running]
    wait_for(lambda: all(runlog.of(j) for j in ids), what="the jobs to start")
    proxy.cut()
    wait_for(lambda: all(runlog.of(j, "done") for j in done_early), what="results to wait")

    async def leases_run_out() -> bool:  # the test reads the database directly
        jobs = [await pg_store.get(j) for j in ids]
        long_ago = datetime.now(UTC) - timedelta(seconds=2)
        return all(job.lease_expires_at < long_ago for job in jobs)

    await eventually(leases_run_out, 15, "the leases to have run out 2 s ago")
    proxy.restore()
    for job_id in ids:
        job = await _until_state(pg_store, job_id, State.COMPLETED)
        assert job.attempts == 1, job
        assert runlog.runs()[job_id] == 1
    messages = {e.get("message") for e in d.events()}
    assert "recovered a job whose lease expired" not in messages
    assert "result discarded: the job's lease was lost" not in messages
