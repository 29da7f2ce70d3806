"""What a real daemon's log says about transitions and dead workers: every field means what
its name says (the `from` of an operator's retry, the pid of the worker that died)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobd import Client
from jobd.domain import NewJob, State
from jobd.store import Store

from .conftest import RunLog, eventually, wait_for
from .test_supervisor import until_state

pytestmark = pytest.mark.postgres


async def test_requeued_names_the_state_it_was_retried_from(make_daemon, pg_store: Store) -> None:
    d = make_daemon(JOBD_LOGGING_JOB_EVENTS="true").start()
    failed = (await pg_store.submit(NewJob("permanent", {}, max_attempts=1))).job
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    canceled = (await pg_store.submit(NewJob("noop", {}, run_at=tomorrow))).job
    await until_state(pg_store, failed.id, State.FAILED)
    with Client(d.env["JOBD_SOCKET"]) as client:
        client.cancel(canceled.id)
        client.retry(failed.id)
        client.retry(canceled.id)

    def requeued() -> dict[int, str] | None:
        found = {e["job_id"]: e["from"] for e in d.events() if e.get("message") == "job requeued"}
        return found if len(found) == 2 else None

    assert wait_for(requeued) == {failed.id: "failed", canceled.id: "canceled"}
    assert d.stop() == 0


async def test_worker_died_names_the_dead_workers_pid(
    make_daemon, pg_store: Store, runlog: RunLog
) -> None:
    d = make_daemon().start()
    job = (await pg_store.submit(NewJob("exit3", {}, max_attempts=1))).job
    await until_state(pg_store, job.id, State.FAILED)
    died = wait_for(lambda: d.event("worker died"))
    ((_, _, worker_pid, _, _),) = runlog.of(job.id)
    assert died["worker_pid"] == worker_pid  # the worker that ran the job
    assert died["pid"] == d.proc.pid  # every line's own: the supervisor wrote it
    assert d.stop() == 0


async def test_a_claimed_job_is_not_started_until_its_worker_starts_it(
    make_daemon, pg_store: Store
) -> None:
    d = make_daemon(JOBD_WORKERS="1", JOBD_WORKERS_PREFETCH="1").start()
    first = (await pg_store.submit(NewJob("napper", {"seconds": 30}, priority=1))).job
    queued = (await pg_store.submit(NewJob("napper", {"seconds": 0}))).job

    async def both_claimed() -> bool:
        jobs = [await pg_store.get(first.id), await pg_store.get(queued.id)]
        return all(j.state is State.RUNNING for j in jobs) and jobs[0].started_at is not None

    await eventually(both_claimed, 20, "a job running and one queued behind it")
    assert (await pg_store.get(queued.id)).started_at is None  # claimed, not started
    running = await pg_store.get(first.id)
    with Client(d.env["JOBD_SOCKET"]) as client:
        client.cancel(first.id)
    done = await until_state(pg_store, queued.id, State.COMPLETED)
    assert done.started_at is not None and done.started_at > running.started_at
    assert d.stop() == 0
