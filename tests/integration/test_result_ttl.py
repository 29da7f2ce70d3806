"""A job's own retention, `result_ttl`, with a real `jobd run` on PostgreSQL: a finished job
whose result_ttl has passed is gone after the next prune while one without stays (the
retention, a week, has not passed), a handler's default applies, and a parent whose
result_ttl is 0 stays until the job waiting for it has run (docs/adr/0033)."""

from __future__ import annotations

import pytest

from jobd import Client
from jobd.domain import State
from jobd.errors import NotFound
from jobd.store import Store

from .conftest import eventually

pytestmark = pytest.mark.postgres

PRUNE = {"JOBD_JOBS_PRUNE_INTERVAL": "1"}  # a prune at every maintenance check (5 s)


async def gone(store: Store, job_id: int) -> bool:
    try:
        await store.get(job_id)
    except NotFound:
        return True
    return False


async def state(store: Store, job_id: int) -> State:
    return (await store.get(job_id)).state


async def test_expired_jobs_go_at_the_next_prune_and_a_needed_parent_stays(
    make_daemon, pg_store: Store
) -> None:
    node = make_daemon(**PRUNE).start()
    with Client(node.env["JOBD_SOCKET"], timeout=10) as client:
        client.call("queue_pause", {"name": "held"})
        short = client.submit("noop", result_ttl=1).job
        kept = client.submit("noop").job
        by_handler = client.submit("brief").job
        assert (short.result_ttl, kept.result_ttl, by_handler.result_ttl) == (1, None, 1)
        parent = client.submit("noop", result_ttl=0).job.id
        child = client.submit("noop", queue="held", after=[parent], result_ttl=0).job.id

        async def parent_done() -> bool:
            return await state(pg_store, parent) is State.COMPLETED

        await eventually(parent_done, 30, "the parent to run")
        # A job expired after the parent ended: once it is gone, a prune has run since.
        probe = client.submit("noop", result_ttl=0).job.id

        async def expired_gone() -> bool:
            return all([await gone(pg_store, i) for i in (short.id, by_handler.id, probe)])

        await eventually(expired_gone, 60, "the expired jobs to be pruned")
        assert await state(pg_store, kept.id) is State.COMPLETED
        assert await state(pg_store, parent) is State.COMPLETED  # its child may read it
        assert await state(pg_store, child) is State.PENDING
        assert client.get(parent).result_ttl == 0

        client.call("queue_resume", {"name": "held"})

        async def both_gone() -> bool:
            return await gone(pg_store, child) and await gone(pg_store, parent)

        await eventually(both_gone, 60, "the child to run and both to be pruned")
        assert await state(pg_store, kept.id) is State.COMPLETED
    assert node.stop() == 0
