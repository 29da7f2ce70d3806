"""Workflows through `jobd run` on PostgreSQL: jobs submitted `after` others run when their
parents have ended, read their results, follow on_parent_failure, and come back with a retry
of the parent that failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobd.client import Client
from jobd.domain import BatchRef, NewJob, ParentFailure, State
from jobd.store import Store

from .conftest import RunLog, eventually

pytestmark = pytest.mark.postgres


async def until_state(store: Store, job_id: int, *states: State, timeout: float = 30.0):
    async def check():
        job = await store.get(job_id)
        return job if job.state in states else None

    return await eventually(check, timeout, f"job {job_id} to be {'/'.join(states)}")


def spec(type_: str, *after: int | BatchRef, **kw: Any) -> NewJob:
    return NewJob(type_, kw.pop("payload", {}), after=tuple(after), **kw)


async def test_a_three_step_chain_runs_in_order_and_reads_results(
    make_daemon, pg_store: Store, runlog: RunLog
) -> None:
    d = make_daemon().start()
    with Client(d.env["JOBD_SOCKET"]) as client:
        batch = client.submit_batch(
            [
                {"name": "fetch", "type": "gather", "payload": {"value": 1}},
                {"name": "transform", "type": "gather", "payload": {"value": 10},
                 "after": ["fetch"]},
                {"name": "report", "type": "gather", "payload": {"value": 100},
                 "after": ["transform"]},
            ]
        )  # fmt: skip
        ids = batch.names
        assert [r.job.state_name for r in batch.results] == ["pending", "waiting", "waiting"]
        waited = client.wait(ids["report"], timeout=30)
    assert waited.job.state is State.COMPLETED
    assert waited.job.result == {"value": 111, "parents": 1}
    ends = [runlog.of(ids[name])[0][4] for name in ("fetch", "transform", "report")]
    assert ends == sorted(ends)


async def test_a_fan_out_and_fan_in_of_a_thousand(make_daemon, pg_store: Store) -> None:
    make_daemon(JOBD_WORKERS="2").start()
    root = (await pg_store.submit(spec("gather", payload={"value": 0}))).job.id
    middle = await pg_store.submit_many([spec("gather", root) for _ in range(1000)])
    ids = [s.job.id for s in middle]
    sink = (await pg_store.submit(spec("gather", *ids, payload={"value": 0}))).job.id
    assert (await pg_store.get(sink)).state is State.WAITING
    job = await until_state(pg_store, sink, State.COMPLETED, timeout=120)
    assert job.result == {"value": 1000, "parents": 1000}


async def test_a_failed_parent_cancels_or_runs_its_dependents(
    make_daemon, pg_store: Store, runlog: RunLog
) -> None:
    make_daemon().start()
    out = await pg_store.submit_many(
        [
            spec("permanent"),
            spec("gather", BatchRef(0)),
            spec("gather", BatchRef(1)),
            spec("gather", BatchRef(0), on_parent_failure=ParentFailure.RUN),
        ]
    )
    root, child, grandchild, cleanup = (s.job.id for s in out)
    finished = await until_state(pg_store, cleanup, State.COMPLETED)
    assert finished.result == {"value": 1, "parents": 1}
    for job_id in (child, grandchild):
        job = await until_state(pg_store, job_id, State.CANCELED)
        assert job.last_error.type == "ParentFailed"
        assert job_id not in runlog.runs()
    assert (await pg_store.get(root)).state is State.FAILED


async def test_cancel_of_a_workflow_root_cancels_what_waits_for_it(
    make_daemon, pg_store: Store, runlog: RunLog
) -> None:
    d = make_daemon().start()
    later = datetime.now(UTC) + timedelta(hours=1)  # the root waits: nothing runs
    out = await pg_store.submit_many(
        [spec("gather", run_at=later), spec("gather", BatchRef(0)), spec("gather", BatchRef(1))]
    )
    root, child, grandchild = (s.job.id for s in out)
    with Client(d.env["JOBD_SOCKET"]) as client:
        assert client.get(child).waiting_for == (root,)
        assert client.get(root).children == (child,)
        assert client.cancel(root).state is State.CANCELED
        for job_id in (child, grandchild):
            assert client.wait(job_id, timeout=10).job.state is State.CANCELED
    assert not runlog.runs()


async def test_retry_of_a_failed_parent_runs_what_it_had_canceled(
    make_daemon, pg_store: Store, runlog: RunLog
) -> None:
    d = make_daemon().start()
    out = await pg_store.submit_many(
        [spec("fails_once", max_attempts=1), spec("gather", BatchRef(0)),
         spec("gather", BatchRef(1))]
    )  # fmt: skip
    root, child, grandchild = (s.job.id for s in out)
    await until_state(pg_store, grandchild, State.CANCELED)
    with Client(d.env["JOBD_SOCKET"]) as client:
        client.retry(root)
        assert client.get(child).state is State.WAITING
        done = client.wait(grandchild, timeout=30).job
    assert done.state is State.COMPLETED and done.result == {"value": 102, "parents": 1}
    assert runlog.runs()[root] == 2
