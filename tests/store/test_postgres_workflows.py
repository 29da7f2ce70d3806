"""Workflows on PostgreSQL beyond the contract: a dependent's submit racing its parent's end on
another node, jobd_enqueue's `after` in the caller's transaction, and fan-in and fan-out of
10,000 whose cost per parent does not grow with the workflow."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import jobd
from jobd.domain import NewJob, State
from jobd.errors import InvalidParams
from jobd.store import Outcome, OutcomeKind, create_store
from jobd.store.postgres import PostgresStore
from tests.eventually import eventually

pytestmark = pytest.mark.postgres

LEASE = 30.0


@pytest.fixture
async def nodes(pg_url: str, pg_schema: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one schema: two nodes, each with its own connections."""
    stores = [create_store(pg_url, schema=pg_schema) for _ in range(2)]
    for store in stores:
        await store.open()
    await stores[0].migrate()
    try:
        yield stores[0], stores[1]  # type: ignore[return-value]
    finally:
        for store in stores:
            await store.close()


async def finish_all(store: PostgresStore, jobs: list[Any], kind: OutcomeKind) -> None:
    outcomes = [Outcome(j.id, j.attempts, kind, result={"v": 1}, token=j.lease_token) for j in jobs]
    applied = await store.finish("node-a", outcomes)
    assert len(applied) == len(jobs)


async def test_a_dependent_submitted_while_its_parent_ends_never_stays_waiting(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    for round_ in range(40):
        parent = (await a.submit(NewJob("p"))).job
        (claimed,) = await a.claim("node-a", 1, lease=LEASE, types=["p"])
        kind = OutcomeKind.COMPLETED if round_ % 2 else OutcomeKind.CANCELED

        async def end(job: Any, kind: OutcomeKind) -> None:
            await asyncio.sleep(random.random() / 500)
            await finish_all(a, [job], kind)

        async def depend(parent_id: int) -> int:
            await asyncio.sleep(random.random() / 500)
            return (await b.submit(NewJob("c", after=(parent_id,)))).job.id

        _, child = await asyncio.gather(end(claimed, kind), depend(parent.id))
        state = (await a.get(child)).state
        expected = State.PENDING if kind is OutcomeKind.COMPLETED else State.CANCELED
        assert state is expected, (round_, state)
        if state is State.PENDING:
            await a.request_cancel(child)  # out of the next rounds' claims


async def waiting_on_a_lock(url: str) -> bool:
    """Whether some session of this database is waiting for a lock."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return bool((await cur.fetchone())[0])  # type: ignore[index]


async def test_a_parent_ending_waits_for_the_submit_that_locked_it(
    pg_url: str, pg_schema: str, nodes: tuple[PostgresStore, PostgresStore]
) -> None:
    """The interleaving the lock is for: the submit has locked the parent and written its edge
    but not committed when the parent's end starts; the end waits for it, then sees the edge."""
    a, _ = nodes
    parent = (await a.submit(NewJob("p"))).job
    (claimed,) = await a.claim("node-a", 1, lease=LEASE, types=["p"])
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        schema = sql.Identifier(pg_schema)
        query = sql.SQL("SELECT {}.jobd_enqueue('c', after => %s)").format(schema)
        child = (await (await conn.execute(query, ([parent.id],))).fetchone())[0]  # type: ignore[index]
        ending = asyncio.create_task(finish_all(a, [claimed], OutcomeKind.COMPLETED))
        await eventually(lambda: waiting_on_a_lock(pg_url), what="the end waiting on the lock")
        assert not ending.done()  # the parent's row is locked by the uncommitted submit
        await conn.commit()
    await ending
    assert (await a.get(child)).state is State.PENDING


async def test_jobd_enqueue_after_in_the_callers_transaction(
    pg_url: str, nodes: tuple[PostgresStore, PostgresStore], pg_schema: str
) -> None:
    a, _ = nodes
    with psycopg.connect(pg_url) as conn:
        with conn.transaction():
            parent = jobd.enqueue(conn, "p", schema=pg_schema)
            child = jobd.enqueue(
                conn, "c", schema=pg_schema, after=[parent], on_parent_failure="run"
            )
        with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
            jobd.enqueue(conn, "c", schema=pg_schema, after=[987654])
        with pytest.raises(InvalidParams, match="after"):
            jobd.enqueue(conn, "c", schema=pg_schema, after=["a-name"])
    job = await a.get(child)
    assert (job.state, job.parents, job.on_parent_failure) == (State.WAITING, (parent,), "run")
    assert len((await a.list()).jobs) == 2


async def test_a_fan_in_of_ten_thousand_costs_each_parent_the_same(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = nodes
    parents = []
    for _ in range(10):
        parents += [s.job.id for s in await a.submit_many([NewJob("p") for _ in range(1000)])]
    child = (await a.submit(NewJob("c", after=tuple(parents)))).job.id
    took = []
    for _ in range(20):
        jobs = await a.claim("node-a", 500, lease=LEASE, types=["p"])
        started = time.perf_counter()
        await finish_all(a, jobs, OutcomeKind.COMPLETED)
        took.append(time.perf_counter() - started)
    assert (await a.get(child)).state is State.PENDING
    first, last = sum(took[:5]), sum(took[-5:])
    assert last < 3 * first + 0.5, took  # no cost growing with the parents already ended


async def test_a_fan_out_of_ten_thousand_is_released_by_one_finish(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = nodes
    parent = (await a.submit(NewJob("p"))).job.id
    for _ in range(10):
        await a.submit_many([NewJob("c", after=(parent,)) for _ in range(1000)])
    (claimed,) = await a.claim("node-a", 1, lease=LEASE, types=["p"])
    await finish_all(a, [claimed], OutcomeKind.COMPLETED)
    counts = (await a.counts()).by_state()
    assert (counts["pending"], counts["waiting"]) == (10_000, 0)
    assert len((await a.links(parent)).children) == 10_000
