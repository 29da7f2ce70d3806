"""`jobd run` as a real subprocess on a real PostgreSQL: the life of jobs through the supervisor
and its workers, including the ways processes die."""

from __future__ import annotations

import itertools
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from jobd.domain import NewJob, State
from jobd.garbage_collection import YOUNG_THRESHOLD
from jobd.store import Store

from .conftest import RunLog, eventually, wait_for

pytestmark = pytest.mark.postgres


async def submit(store: Store, type_: str, payload: dict | None = None, **kw) -> int:
    return (await store.submit(NewJob(type_, payload or {}, **kw))).job.id


async def until_state(store: Store, job_id: int, *states: State, timeout: float = 20.0):
    async def check():
        job = await store.get(job_id)
        return job if job.state in states else None

    return await eventually(check, timeout, f"job {job_id} to be {'/'.join(states)}")


async def test_success(make_daemon, pg_store: Store, runlog: RunLog) -> None:
    make_daemon().start()
    job_id = await submit(pg_store, "flaky", {"fail_times": 0})
    job = await until_state(pg_store, job_id, State.COMPLETED)
    assert job.result == {"attempt": 1} and job.attempts == 1
    assert job.lease_owner is None and job.finished_at is not None
    assert runlog.runs()[job_id] == 1


async def test_a_backlog_waiting_at_start_is_claimed_at_once(
    make_daemon, pg_store: Store, runlog: RunLog
) -> None:
    """Jobs submitted before the daemon starts send it no notification: it claims them as soon
    as its workers are ready, not on its first poll tick (a restart under a backlog used to
    idle a whole poll interval)."""
    poll = 1.0  # the longest jobs.poll_interval there is: the gap it used to leave
    ids = [await submit(pg_store, "noop") for _ in range(4)]
    d = make_daemon(JOBD_JOBS_POLL_INTERVAL=str(poll)).start()
    for job_id in ids:
        await until_state(pg_store, job_id, State.COMPLETED)
    started = datetime.fromisoformat(d.event("jobd started")["ts"]).timestamp()
    first_run = min(ts for job_id, _, _, event, ts in runlog.lines() if event == "run")
    # Both stamps are the daemon's own; a wait for the poll tick would make this >= 1 s.
    assert first_run - started < poll / 2, (started, first_run)


async def test_retry_then_success(make_daemon, pg_store: Store, runlog: RunLog) -> None:
    make_daemon().start()
    job_id = await submit(pg_store, "flaky", {"fail_times": 2}, max_attempts=3)
    job = await until_state(pg_store, job_id, State.COMPLETED)
    assert job.attempts == 3 and job.result == {"attempt": 3}
    assert job.last_error is not None and "attempt 2" in job.last_error.message
    assert runlog.runs()[job_id] == 3


async def test_retries_exhausted_fail_with_last_error(make_daemon, pg_store: Store) -> None:
    make_daemon().start()
    job_id = await submit(pg_store, "flaky", {"fail_times": 5}, max_attempts=2)
    job = await until_state(pg_store, job_id, State.FAILED)
    assert job.attempts == 2
    assert job.last_error.type == "ValueError"
    assert job.last_error.message == "flaky failure on attempt 2"
    assert (
        "Traceback" in job.last_error.traceback and "itest_handlers.py" in job.last_error.traceback
    )


async def test_permanent_error_is_not_retried(make_daemon, pg_store: Store) -> None:
    make_daemon().start()
    job_id = await submit(pg_store, "permanent", max_attempts=5)
    job = await until_state(pg_store, job_id, State.FAILED)
    assert job.attempts == 1 and job.last_error.type == "PermanentError"


async def test_backoff_delays_grow_as_configured(make_daemon, pg_store: Store, runlog) -> None:
    make_daemon().start()
    job_id = await submit(pg_store, "growing", max_attempts=4)
    await until_state(pg_store, job_id, State.FAILED)
    starts = [line[4] for line in runlog.of(job_id)]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 3
    for gap, configured in zip(gaps, (0.3, 0.6, 1.2), strict=True):  # base 0.3, factor 2
        assert gap >= configured, (gaps, configured)
    assert gaps[0] < gaps[1] < gaps[2]


async def test_timeout_kills_a_handler_that_ignores_cancellation(
    make_daemon, pg_store: Store, runlog: RunLog
) -> None:
    d = make_daemon().start()
    job_id = await submit(pg_store, "busy", timeout=0.5, max_attempts=1)
    wait_for(lambda: runlog.of(job_id), what="the busy job to start")
    busy_pid = runlog.of(job_id)[0][2]
    job = await until_state(pg_store, job_id, State.FAILED)
    assert job.last_error.type == "Timeout"
    assert job.last_error.message == "timed out after 0.5s"
    wait_for(lambda: not _alive(busy_pid), what="the busy worker to be killed")
    wait_for(lambda: len(d.worker_pids()) == 2, what="the worker to be replaced")
    assert busy_pid not in d.worker_pids()
    follow = await submit(pg_store, "noop")
    await until_state(pg_store, follow, State.COMPLETED)


async def test_cancel_pending(make_daemon, pg_store: Store, runlog: RunLog) -> None:
    make_daemon().start()
    later = datetime.now(UTC) + timedelta(seconds=2)
    job_id = await submit(pg_store, "noop", run_at=later)
    job = await pg_store.request_cancel(job_id)
    assert job.state is State.CANCELED
    marker = await submit(pg_store, "noop", run_at=later + timedelta(seconds=0.5))
    await until_state(pg_store, marker, State.COMPLETED)
    assert runlog.runs()[job_id] == 0
    assert (await pg_store.get(job_id)).state is State.CANCELED


async def test_cancel_running_busy_loop(make_daemon, pg_store: Store, runlog: RunLog) -> None:
    d = make_daemon().start()
    job_id = await submit(pg_store, "busy", max_attempts=3)
    wait_for(lambda: runlog.of(job_id), what="the busy job to start")
    busy_pid = runlog.of(job_id)[0][2]
    requested = await pg_store.request_cancel(job_id)  # as another client would: via NOTIFY
    assert requested.state is State.RUNNING and requested.cancel_requested
    job = await until_state(pg_store, job_id, State.CANCELED)
    assert job.attempts == 1 and not job.cancel_requested
    wait_for(lambda: not _alive(busy_pid), what="the busy worker to be killed")
    wait_for(lambda: len(d.worker_pids()) == 2, what="the worker to be replaced")


async def test_cancel_cooperative_handler(make_daemon, pg_store: Store, runlog: RunLog) -> None:
    d = make_daemon().start()
    job_id = await submit(pg_store, "napper", {"seconds": 60})
    wait_for(lambda: runlog.of(job_id), what="the napper to start")
    pid = runlog.of(job_id)[0][2]
    await pg_store.request_cancel(job_id)
    await until_state(pg_store, job_id, State.CANCELED)
    assert pid in d.worker_pids()  # it stopped by itself: no kill, no replacement


async def test_worker_killed_by_sigkill(make_daemon, pg_store: Store, runlog: RunLog) -> None:
    make_daemon().start()
    job_id = await submit(pg_store, "die_once", max_attempts=3)
    wait_for(lambda: runlog.of(job_id), what="the first attempt to start")
    os.kill(runlog.of(job_id)[0][2], signal.SIGKILL)
    job = await until_state(pg_store, job_id, State.COMPLETED)
    assert job.attempts == 2 and job.crashes == 1 and job.result == {"attempt": 2}
    assert job.last_error.type == "WorkerCrashed"
    assert "killed by SIGKILL (perhaps out of memory)" in job.last_error.message


async def test_os_exit_is_a_crash_and_a_poison_job_fails(make_daemon, pg_store: Store) -> None:
    make_daemon(JOBD_WORKERS_MAX_CRASHES="3").start()
    job_id = await submit(pg_store, "exit3", max_attempts=10)
    job = await until_state(pg_store, job_id, State.FAILED)
    assert job.attempts == 3 and job.crashes == 3
    assert job.last_error.type == "PoisonJob"
    assert "exited with code 3" in job.last_error.message
    other = await submit(pg_store, "noop")
    await until_state(pg_store, other, State.COMPLETED)


async def test_workers_recycled_after_n_jobs(make_daemon, pg_store: Store) -> None:
    make_daemon(JOBD_WORKERS_MAX_JOBS_PER_WORKER="5").start()
    ids = [await submit(pg_store, "whoami") for _ in range(20)]
    pids = []
    for job_id in ids:
        pids.append((await until_state(pg_store, job_id, State.COMPLETED)).result["pid"])
    per_pid = {pid: pids.count(pid) for pid in set(pids)}
    assert max(per_pid.values()) <= 5 and len(per_pid) >= 4, per_pid


async def test_unknown_type_waits_unclaimed(make_daemon, pg_store: Store, runlog) -> None:
    """A type no node runs stays pending for a node that runs it (ADR 0023), while the node
    goes on with the types it knows."""
    make_daemon().start()
    job_id = await submit(pg_store, "no_such_type", max_attempts=5)
    known = await submit(pg_store, "noop")
    await until_state(pg_store, known, State.COMPLETED)
    job = await pg_store.get(job_id)
    assert job.state is State.PENDING and job.attempts == 0 and job.last_error is None


async def test_sigterm_drains(make_daemon, pg_store: Store, runlog: RunLog) -> None:
    d = make_daemon(JOBD_SHUTDOWN_DRAIN_TIMEOUT="1.5").start()
    short = await submit(pg_store, "napper", {"seconds": 0.5})
    long = await submit(pg_store, "napper", {"seconds": 60})
    wait_for(lambda: runlog.of(short) and runlog.of(long), what="both jobs to start")
    d.signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0, d.stderr()
    s = await pg_store.get(short)
    lj = await pg_store.get(long)
    assert s.state is State.COMPLETED
    assert lj.state is State.PENDING and lj.attempts == 0 and lj.lease_owner is None
    assert d.event("draining") and d.event("jobd stopped")


async def test_drain_gives_back_claimed_jobs_and_a_second_signal_is_immediate(
    make_daemon, pg_store: Store, runlog: RunLog
) -> None:
    d = make_daemon(JOBD_SHUTDOWN_DRAIN_TIMEOUT="60", JOBD_WORKERS="1").start()
    ids = [await submit(pg_store, "napper", {"seconds": 60}) for _ in range(3)]
    wait_for(lambda: runlog.lines(), what="a job to start")
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    wait_for(lambda: d.event("draining"), what="the drain to begin")
    d.signal(signal.SIGINT)
    assert d.proc.wait(20) == 0, d.stderr()
    assert time.monotonic() - started < 15
    for job_id in ids:
        job = await pg_store.get(job_id)
        assert job.state is State.PENDING and job.attempts == 0, job


async def test_kill_9_then_restart_loses_nothing(make_daemon, pg_store: Store, runlog) -> None:
    d = make_daemon(JOBD_JOBS_LEASE_SECONDS="2").start()
    ids = [await submit(pg_store, "napper", {"seconds": 0.3}) for _ in range(12)]
    wait_for(lambda: len(runlog.lines()) >= 4, what="some jobs to run")
    d.kill()
    d.start()
    for job_id in ids:
        await until_state(pg_store, job_id, State.COMPLETED, timeout=30)
    assert d.stop() == 0


async def test_cancel_requested_while_node_dead_ends_canceled(
    make_daemon, pg_store: Store, runlog: RunLog
) -> None:
    d = make_daemon(JOBD_JOBS_LEASE_SECONDS="2").start()
    job_id = await submit(pg_store, "napper", {"seconds": 60})
    wait_for(lambda: runlog.of(job_id), what="the job to start")
    d.kill()
    await pg_store.request_cancel(job_id)
    d.start()
    job = await until_state(pg_store, job_id, State.CANCELED)
    assert job.state is State.CANCELED


async def test_handler_module_that_does_not_import_stops_the_daemon(make_daemon) -> None:
    d = make_daemon(JOBD_HANDLER_MODULES="no_such_module_xyz")
    with pytest.raises(AssertionError):
        d.start()
    assert d.proc.wait(10) == 2
    assert "handler module 'no_such_module_xyz' failed to import" in d.stderr()


async def test_out_of_date_schema_refused_without_migrate(
    make_daemon, pg_url: str, pg_schema: str
) -> None:
    d = make_daemon(JOBD_DATABASE_SCHEMA=pg_schema + "_fresh")
    with pytest.raises(AssertionError):
        d.start()
    assert d.proc.wait(10) == 2
    assert "jobd migrate" in d.stderr()
    d.start("--migrate")
    assert d.stop() == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_three_daemons_share_the_work_exactly_once(
    make_daemon, pg_store: Store, runlog: RunLog
) -> None:
    daemons = [make_daemon(f"node{i}").start() for i in range(3)]
    ids = []
    for _ in range(3):
        batch = [NewJob("noop", {}) for _ in range(1000)]
        ids += [s.job.id for s in await pg_store.submit_many(batch)]

    async def all_done():
        return (await pg_store.counts()).by_state()["completed"] == len(ids)

    await eventually(all_done, timeout=120, what="3,000 jobs to complete")
    runs = runlog.runs()
    assert sorted(runs) == sorted(ids)
    assert set(runs.values()) == {1}, "a job ran more than once"
    pids_by_node = {d.name: set(d.worker_pids()) for d in daemons}
    ran_on = {pid for _, _, pid, _, _ in runlog.lines()}
    assert all(ran_on & pids for pids in pids_by_node.values()), "a node did no work"
    for d in daemons:
        assert d.stop() == 0


async def test_per_queue_concurrency_limit(make_daemon, pg_store: Store, runlog: RunLog) -> None:
    make_daemon(JOBD_WORKERS="3", JOBD_QUEUES="slow=1").start()
    slow = [await submit(pg_store, "napper", {"seconds": 0.3}, queue="slow") for _ in range(3)]
    fast = [await submit(pg_store, "napper", {"seconds": 0.3}) for _ in range(4)]
    for job_id in slow + fast:
        await until_state(pg_store, job_id, State.COMPLETED)
    spans = sorted((runlog.of(j)[0][4], runlog.of(j, "done")[0][4]) for j in slow)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"two jobs of queue 'slow' overlapped: {spans}"
    fast_spans = sorted((runlog.of(j)[0][4], runlog.of(j, "done")[0][4]) for j in fast)
    overlapping = any(b[0] < a[1] for a, b in itertools.pairwise(fast_spans))
    assert overlapping, "the unlimited queue should run jobs side by side"


async def test_segfault_is_named(make_daemon, pg_store: Store) -> None:
    make_daemon().start()
    job_id = await submit(pg_store, "segfault", max_attempts=1)
    job = await until_state(pg_store, job_id, State.FAILED)
    assert job.crashes == 1 and "killed by SIGSEGV" in job.last_error.message


async def test_workers_recycled_above_max_memory(make_daemon, pg_store: Store) -> None:
    make_daemon(JOBD_WORKERS="1", JOBD_WORKERS_MAX_MEMORY="60MiB").start()
    pids = []
    for _ in range(3):
        job_id = await submit(pg_store, "hog", {"mib": 64})
        pids.append((await until_state(pg_store, job_id, State.COMPLETED)).result["pid"])
    assert len(set(pids)) == 3, "each hog should have left its worker above the limit"


async def test_the_collector_skips_what_the_processes_started_with(
    make_daemon, pg_store: Store
) -> None:
    """The supervisor and each worker freeze what exists once they have started, so no
    collection walks it again, and collect the young generation less often (ADR 0046)."""
    d = make_daemon(JOBD_LOGGING_LEVEL="DEBUG").start()
    assert d.running is not None
    supervisor = d.running.pid

    def settled() -> dict | None:
        lines = (e for e in d.events() if e["message"] == "garbage collector settled")
        return next((e for e in lines if e["pid"] == supervisor), None)

    line = wait_for(settled, what="the supervisor's collector settled")
    assert line["frozen"] > 10_000 and line["young_threshold"] == YOUNG_THRESHOLD
    job_id = await submit(pg_store, "collector")
    job = await until_state(pg_store, job_id, State.COMPLETED)
    assert job.result["frozen"] > 10_000
    assert job.result["young_threshold"] == YOUNG_THRESHOLD
