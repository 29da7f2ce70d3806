"""The statements on an idle node's path, counted in round trips: libpq's trace of the store's
one connection (one ReadyForQuery each, whose status says whether a transaction is open), and
a second connection that LISTENs.  A submit with no idempotency key and no parent is one
statement with no transaction around it, which sends the submit channel's NOTIFY itself (ADR
0041); a claim goes with it in the same round trip (ADR 0042); `get`, which `wait` calls
twice, reads a job and its parents in one."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from jobd.domain import BatchRef, Job, NewJob
from jobd.store import ClaimRequest, Notification, NotificationKind, SubmittedAndClaimed
from jobd.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres


@pytest.fixture
async def store(make_store: Callable[..., Awaitable[PostgresStore]]) -> PostgresStore:
    s = await make_store(listen=False, min_size=1, max_size=1)  # one connection, to trace
    await s.migrate()
    return s


@pytest.fixture
async def conn(
    store: PostgresStore, pg_url: str, pg_schema: str
) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as c:
        await c.execute(sql.SQL("LISTEN {}").format(sql.Identifier(store.submit_channel)))
        yield c


async def round_trips(
    store: PostgresStore, call: Callable[[], Awaitable[object]], trace: Path
) -> list[str]:
    """Await `call()`; the transaction status of each ReadyForQuery the store's connection
    got meanwhile ("I": idle, "T": in a transaction)."""
    with trace.open("w") as f:
        async with store.pool.connection() as c, c.lock:  # the pool's only connection
            c.pgconn.trace(f.fileno())
        try:
            await call()
        finally:
            async with store.pool.connection() as c, c.lock:
                c.pgconn.untrace()
    return re.findall(r"\tB\t5\tReadyForQuery\t (\w)", trace.read_text())


async def notified(conn: psycopg.AsyncConnection[tuple[object, ...]], count: int) -> list[str]:
    """The payloads of the next `count` NOTIFYs, in the order of their commits."""
    payloads: list[str] = []
    gen = conn.notifies(timeout=10.0, stop_after=count)
    try:
        async for n in gen:
            payloads.append(n.payload)
    finally:
        await gen.aclose()
    assert len(payloads) == count, f"only {payloads} within 10 s"
    return payloads


async def test_a_plain_batch_is_one_round_trip_that_notifies_each_queue_once(
    store: PostgresStore, conn: psycopg.AsyncConnection[tuple[object, ...]], tmp_path: Path
) -> None:
    jobs = [NewJob(type="noop", queue=q) for q in ("mail", "mail", "reports")]
    assert await round_trips(store, lambda: store.submit_many(jobs), tmp_path / "trace") == ["I"]
    assert sorted(await notified(conn, 2)) == ["mail", "reports"]
    await store.submit_many([NewJob(type="noop", queue="marker")])
    assert await notified(conn, 1) == ["marker"]  # not a second "mail"


@pytest.mark.parametrize(
    "jobs",
    [
        [NewJob(type="noop", idempotency_key="k1")],
        [NewJob(type="noop"), NewJob(type="noop", after=(BatchRef(0),))],
    ],
    ids=["keyed", "parents"],
)
async def test_a_keyed_batch_or_one_with_parents_keeps_its_transaction(
    store: PostgresStore,
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    tmp_path: Path,
    jobs: list[NewJob],
) -> None:
    trips = await round_trips(store, lambda: store.submit_many(jobs), tmp_path / "trace")
    assert trips[0] == "T" and trips[-1] == "I" and len(trips) >= 3  # BEGIN ... COMMIT
    assert await notified(conn, 1) == ["default"]


async def test_a_batch_that_creates_nothing_notifies_nobody(
    store: PostgresStore, conn: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    await store.submit_many([NewJob(type="noop", idempotency_key="k1")])
    assert await notified(conn, 1) == ["default"]
    again = await store.submit_many([NewJob(type="noop", idempotency_key="k1")])
    assert [s.created for s in again] == [False]
    await store.submit_many([NewJob(type="noop", queue="marker")])
    # Delivered in the order of their commits: a NOTIFY of the taken key's would come first.
    assert await notified(conn, 1) == ["marker"]


async def test_a_submit_with_a_claim_is_one_round_trip_and_wakes_no_one_here_for_its_job(
    store: PostgresStore, conn: psycopg.AsyncConnection[tuple[object, ...]], tmp_path: Path
) -> None:
    """ADR 0042: the claim goes in the submit's round trip and transaction.  A job it took
    needs no claimer woken on this node; one it left pending does."""
    heard: list[Notification] = []
    store.add_listener(heard.append)
    claim = ClaimRequest("node-a", 1, 30.0, exclude_queues=["held"])
    answers: list[SubmittedAndClaimed] = []

    async def submit(queue: str) -> None:
        answers.append(await store.submit_claiming(NewJob(type="noop", queue=queue), claim))

    assert await round_trips(store, lambda: submit("mail"), tmp_path / "trace") == ["I"]
    assert [j.id for j in answers[0].claimed] == [answers[0].submitted.job.id]
    assert heard == []
    await submit("held")
    assert answers[1].claimed == []
    assert heard == [Notification(NotificationKind.SUBMITTED, queue="held")]
    assert await notified(conn, 2) == ["mail", "held"]  # other nodes hear of both


async def test_get_reads_a_job_and_its_parents_in_one_round_trip(
    store: PostgresStore, tmp_path: Path
) -> None:
    batch = await store.submit_many(
        [NewJob(type="noop"), NewJob(type="noop", after=(BatchRef(0),))]
    )
    parent, child = (s.job.id for s in batch)
    got: list[Job] = []

    async def get(job_id: int) -> None:
        got.append(await store.get(job_id))

    assert await round_trips(store, lambda: get(child), tmp_path / "child") == ["I"]
    assert await round_trips(store, lambda: get(parent), tmp_path / "parent") == ["I"]
    assert [job.parents for job in got] == [(parent,), ()]
