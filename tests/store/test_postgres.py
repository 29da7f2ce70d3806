"""What only the PostgreSQL store has to prove: concurrency between nodes (separate stores,
separate connections, one database), migrations, the claim query's index, LISTEN/NOTIFY, and
driver errors surfacing as Unavailable.  The behaviour every store shares is in
test_contract.py.

Nothing here sleeps a fixed amount: each wait polls a condition until a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobd import migrations
from jobd.domain import ErrorInfo, Job, NewJob, ParentFailure, State
from jobd.errors import InvalidParams, Unavailable
from jobd.protocol import encode
from jobd.schedules import parse_schedule
from jobd.store import Notification, NotificationKind, Outcome, OutcomeKind, create_store
from jobd.store.memory import MemoryStore
from jobd.store.postgres import QUERIES, PostgresStore
from tests.eventually import eventually as poll_until

pytestmark = pytest.mark.postgres


MakeStore = Callable[..., Awaitable[PostgresStore]]  # the make_store fixture (conftest.py)

# The shared poll, with this file's deadline.
eventually = partial(poll_until, timeout=10.0)


@pytest.fixture
async def pg(make_store: MakeStore) -> PostgresStore:
    store = await make_store()
    await store.migrate()
    return store


@pytest.fixture
async def raw(pg_url: str, pg_schema: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A plain connection to the test's schema, for looking behind the store's back."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        yield conn


def spec(**kw: Any) -> NewJob:
    return NewJob(type=kw.pop("type", "echo"), **kw)


# --- concurrency between nodes -------------------------------------------------------------


async def test_eight_nodes_claim_each_of_2000_jobs_exactly_once(
    pg: PostgresStore, make_store: MakeStore
) -> None:
    for _ in range(2):
        await pg.submit_many([spec(payload={"i": i}) for i in range(1000)])
    nodes = [await make_store(min_size=1, max_size=2) for _ in range(8)]
    claimed: dict[str, list[int]] = {}

    async def work(node: str, store: PostgresStore) -> None:
        rng = random.Random(node)
        mine = claimed.setdefault(node, [])
        while jobs := await store.claim(node, rng.randint(1, 25), lease=60):
            assert all(j.state is State.RUNNING and j.attempts == 1 for j in jobs)
            mine.extend(j.id for j in jobs)
            outcomes = [Outcome(j.id, 1, OutcomeKind.COMPLETED, result=j.id) for j in jobs]
            applied = await store.finish(node, outcomes)
            assert applied == {j.id: State.COMPLETED for j in jobs}

    await asyncio.gather(*(work(f"node-{n}", s) for n, s in enumerate(nodes)))

    every = [job_id for ids in claimed.values() for job_id in ids]
    assert len(every) == 2000
    assert len(set(every)) == 2000
    assert sum(1 for ids in claimed.values() if ids) > 1  # the nodes really competed
    assert (await pg.counts()).by_state()["completed"] == 2000


async def test_stale_owner_cannot_finish_after_its_lease_was_recovered(
    pg: PostgresStore, make_store: MakeStore
) -> None:
    job = (await pg.submit(spec())).job
    other = await make_store()
    (claimed,) = await pg.claim("stale", 1, lease=0.05)

    recovered = await eventually(pg.recover_expired)
    assert [j.id for j in recovered] == [job.id]
    assert recovered[0].state is State.PENDING
    assert recovered[0].last_error == ErrorInfo("LeaseExpired", "lease of node stale expired")

    (taken,) = await other.claim("fresh", 1, lease=60)
    assert (taken.id, taken.attempts, taken.lease_owner) == (job.id, 2, "fresh")

    # The stale node reports its attempt, then tries the new attempt number too: both refused.
    for attempt in (claimed.attempts, taken.attempts):
        done = Outcome(job.id, attempt, OutcomeKind.COMPLETED, result="stale")
        assert await pg.finish("stale", [done]) == {}
    current = await pg.get(job.id)
    assert (current.state, current.lease_owner, current.result) == (State.RUNNING, "fresh", None)

    done = Outcome(job.id, taken.attempts, OutcomeKind.COMPLETED, result="fresh")
    assert await other.finish("fresh", [done]) == {job.id: State.COMPLETED}
    assert (await pg.get(job.id)).result == "fresh"


async def test_twenty_concurrent_submits_of_one_key_create_one_job(
    pg: PostgresStore, make_store: MakeStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    nodes = [pg, *[await make_store(min_size=1, max_size=4) for _ in range(4)]]
    new = spec(idempotency_key="order-42", payload={"order": 42})

    results = await asyncio.gather(*(nodes[i % len(nodes)].submit(new) for i in range(20)))

    assert sum(r.created for r in results) == 1
    assert {r.job.id for r in results} == {results[0].job.id}
    assert {r.job.payload["order"] for r in results} == {42}
    cur = await raw.execute("SELECT count(*) FROM all_jobs WHERE idempotency_key = 'order-42'")
    assert (await cur.fetchone()) == (1,)


async def test_a_key_stays_taken_while_its_job_moves_to_finished_jobs(
    pg: PostgresStore, make_store: MakeStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    """The unique index covers only the hot table: a submit racing the finish that moves the
    key's holder out of it must still answer with the holder, not create a second job."""
    nodes = [pg, *[await make_store(min_size=1, max_size=4) for _ in range(3)]]
    for round_ in range(20):
        key = f"race-{round_}"
        holder = (await pg.submit(spec(idempotency_key=key))).job
        await pg.claim("n", 1, lease=60)
        done = pg.finish("n", [Outcome(holder.id, 1, OutcomeKind.COMPLETED)])
        submits = [nodes[i % len(nodes)].submit(spec(idempotency_key=key)) for i in range(8)]
        results = await asyncio.gather(done, *submits)
        assert {r.job.id for r in results[1:]} == {holder.id}
        assert not any(r.created for r in results[1:])
        cur = await raw.execute("SELECT count(*) FROM all_jobs WHERE idempotency_key = %s", (key,))
        assert (await cur.fetchone()) == (1,)


async def test_the_hot_table_holds_only_jobs_that_can_still_run(
    pg: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    """Every way a job ends moves it to finished_jobs; a retry moves it back."""
    ids = [s.job.id for s in await pg.submit_many([spec(max_attempts=1) for _ in range(6)])]
    done, failed, retried, canceled, recovered, pending = ids
    await pg.claim("n", 4, lease=60)
    await pg.request_cancel(canceled)  # running: a request, it stays until the worker stops
    await pg.finish(
        "n",
        [
            Outcome(done, 1, OutcomeKind.COMPLETED, result={"ok": True}),
            Outcome(failed, 1, OutcomeKind.FAILED, error=ErrorInfo("E", "for good")),
            Outcome(retried, 1, OutcomeKind.FAILED, retry_at=datetime.now(UTC)),  # none left
            Outcome(canceled, 1, OutcomeKind.RELEASED),  # a release of a cancel-requested job
        ],
    )
    await pg.claim("n", 1, lease=0.001)
    await eventually(lambda: pg.recover_expired())  # no attempt left: failed
    await pg.request_cancel(pending)
    states = {i: (await pg.get(i)).state for i in ids}
    assert states == {
        done: State.COMPLETED,
        failed: State.FAILED,
        retried: State.FAILED,
        canceled: State.CANCELED,
        recovered: State.FAILED,
        pending: State.CANCELED,
    }
    cur = await raw.execute("SELECT count(*) FROM jobs")
    assert (await cur.fetchone()) == (0,)

    again = await pg.retry(failed)
    assert again.state is State.PENDING and (await pg.get(failed)).state is State.PENDING
    cur = await raw.execute("SELECT id FROM jobs")
    assert await cur.fetchall() == [(failed,)]
    cur = await raw.execute("SELECT count(*) FROM finished_jobs WHERE id = %s", (failed,))
    assert (await cur.fetchone()) == (0,)


async def test_both_tables_have_the_same_columns_in_the_same_order(
    pg: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    """Moves are INSERT ... SELECT * and all_jobs is a UNION ALL: a column added to one table
    and not the other, or in another place, must fail here, not in production."""
    query = (
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    )
    hot = await (await raw.execute(query, ("jobs",))).fetchall()
    finished = await (await raw.execute(query, ("finished_jobs",))).fetchall()
    assert hot == finished


async def test_a_key_repeated_within_one_batch_returns_the_first_job(pg: PostgresStore) -> None:
    out = await pg.submit_many(
        [
            spec(payload={"n": 1}, idempotency_key="k"),
            spec(payload={"n": 2}),
            spec(payload={"n": 3}, idempotency_key="k"),
        ]
    )
    assert [s.created for s in out] == [True, True, False]
    assert out[2].job == out[0].job
    assert [s.job.payload for s in out] == [{"n": 1}, {"n": 2}, {"n": 1}]


async def test_the_jobs_a_submit_answers_with_are_the_jobs_as_stored(pg: PostgresStore) -> None:
    """The submit builds its answer from the request and the few values its statement returns
    (docs/adr/0037): the answer must be the job a read finds, down to the protocol's text."""
    ist = timezone(timedelta(hours=5, minutes=30))
    specs = [
        spec(),
        # Members in jsonb's order (shorter names first), numbers as jsonb spells them: the
        # text then matches too (the answer carries the request's own payload).
        spec(payload={"a": 1, "bb": [1, 2.5, "ü"], "ccc": {"d": None}}, priority=-4),
        spec(queue="q", max_attempts=7, timeout=30, result_ttl=86400, schedule="nightly"),
        spec(run_at=datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=ist), timeout=2.5),
        spec(idempotency_key="key", correlation_id="corr", result_ttl=0.5),
        spec(on_parent_failure=ParentFailure.RUN),  # without parents the table's default holds
    ]
    out = await pg.submit_many(specs)
    assert [s.created for s in out] == [True] * len(specs)
    for submitted in out:
        stored = await pg.get(submitted.job.id)
        assert submitted.job == stored
        assert encode(submitted.job.to_dict()) == encode(stored.to_dict())


# --- finish and recover mirror the domain --------------------------------------------------


class FrozenClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def comparable(job: Job, original: Job, retry_at: datetime | None) -> dict[str, Any]:
    """The fields two stores must agree on; timestamps as facts, not values."""
    return {
        "state": job.state,
        "attempts": job.attempts,
        "crashes": job.crashes,
        "last_error": job.last_error,
        "result": job.result,
        "cancel_requested": job.cancel_requested,
        "lease": (job.lease_owner, job.lease_expires_at),
        "finished": job.finished_at is not None,
        "run_at": (
            "retry_at"
            if retry_at is not None and job.run_at == retry_at
            else "unchanged"
            if job.run_at == original.run_at
            else "moved"
        ),
    }


async def test_finish_applies_every_outcome_as_the_domain_does(pg: PostgresStore) -> None:
    """Every combination of outcome and job, in one batch, against the memory store (which
    calls the domain)."""
    memory = MemoryStore(clock=FrozenClock())
    retry_at = datetime.now(UTC) + timedelta(hours=1)
    cases = list(
        itertools.product(
            OutcomeKind,
            (False, True),  # cancel requested while running
            (1, 2),  # max_attempts (the claim spends one)
            (None, retry_at),
            (None, ErrorInfo("Boom", "it broke", "Traceback ...")),
            (False, True),  # crashed
        )
    )
    results: dict[str, list[dict[str, Any]]] = {}
    for store in (memory, pg):
        jobs = await store.submit_many([spec(max_attempts=c[2]) for c in cases])
        claimed = await store.claim("n", len(cases), lease=60)
        assert len(claimed) == len(cases)
        by_id = {j.id: j for j in claimed}
        for submitted, case in zip(jobs, cases, strict=True):
            if case[1]:
                await store.request_cancel(submitted.job.id)
        outcomes = [
            Outcome(s.job.id, 1, kind, result={"k": kind.value}, error=err, retry_at=at, crashed=c)
            for s, (kind, _, _, at, err, c) in zip(jobs, cases, strict=True)
        ]
        applied = await store.finish("n", outcomes)
        assert len(applied) == len(cases)
        results[store.kind] = [
            comparable(await store.get(s.job.id), by_id[s.job.id], case[3])
            for s, case in zip(jobs, cases, strict=True)
        ]
    for case, mem, pg_job in zip(cases, results["memory"], results["postgres"], strict=True):
        assert pg_job == mem, case


async def test_recover_expired_mirrors_the_domain(pg: PostgresStore) -> None:
    clock = FrozenClock()
    memory = MemoryStore(clock=clock)
    cases = list(itertools.product((False, True), (1, 2)))  # cancel requested, max_attempts
    results: dict[str, list[dict[str, Any]]] = {}
    for store in (memory, pg):
        jobs = [(await store.submit(spec(max_attempts=m))).job for _, m in cases]
        claimed = {j.id: j for j in await store.claim("gone", len(cases), lease=0.05)}
        for job, (cancel, _) in zip(jobs, cases, strict=True):
            if cancel:
                await store.request_cancel(job.id)
        clock.now += timedelta(seconds=1)
        recovered = await eventually(store.recover_expired)
        assert sorted(j.id for j in recovered) == sorted(claimed)
        results[store.kind] = [comparable(await store.get(j.id), claimed[j.id], None) for j in jobs]
    assert results["postgres"] == results["memory"]
    assert [r["state"] for r in results["postgres"]] == [
        State.FAILED,
        State.PENDING,
        State.CANCELED,
        State.CANCELED,
    ]


async def test_heartbeat_extends_only_its_nodes_leases(pg: PostgresStore) -> None:
    a, b = (await pg.submit(spec())).job, (await pg.submit(spec())).job
    (ja,) = await pg.claim("a", 1, lease=60)
    (jb,) = await pg.claim("b", 1, lease=60)
    await pg.request_cancel(jb.id)

    assert await pg.heartbeat("a", 600) == []
    assert await pg.heartbeat("b", 600) == [jb.id]
    assert (await pg.get(ja.id)).lease_expires_at > ja.lease_expires_at + timedelta(seconds=500)
    assert {a.id, b.id} == {ja.id, jb.id}


async def test_heartbeat_skips_a_row_another_transaction_holds_instead_of_waiting(
    pg: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    """The node's write-back locks the rows it ends in an order of its own; a heartbeat that
    waited for one of them while holding others was a deadlock.  It takes what is free and
    leaves the rest to its next round."""
    await pg.submit_many([spec(), spec()])
    held, free = await pg.claim("a", 2, lease=60)
    async with raw.transaction():
        await raw.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (held.id,))
        # without SKIP LOCKED this waits for the lock, until the statement times out
        await asyncio.wait_for(pg.heartbeat("a", 600, [held.id, free.id]), timeout=5)
    assert (await pg.get(free.id)).lease_expires_at > free.lease_expires_at + timedelta(seconds=500)
    assert (await pg.get(held.id)).lease_expires_at == held.lease_expires_at

    await pg.heartbeat("a", 600, [held.id, free.id])  # the next round, the lock gone
    assert (await pg.get(held.id)).lease_expires_at > held.lease_expires_at + timedelta(seconds=500)


async def test_prune_deletes_in_batches_until_none_is_left(
    pg: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    ids = [s.job.id for s in await pg.submit_many([spec() for _ in range(25)])]
    keep = (await pg.submit(spec())).job
    await pg.claim("n", 25, lease=60)
    await pg.finish("n", [Outcome(i, 1, OutcomeKind.COMPLETED) for i in ids])
    await raw.execute("UPDATE finished_jobs SET finished_at = now() - interval '2 days'")

    assert await pg.prune(timedelta(days=1), batch=10) == 25
    assert await pg.prune(timedelta(days=1), batch=10) == 0
    assert (await pg.get(keep.id)).state is State.PENDING


# --- migrations ----------------------------------------------------------------------------


def _every_migration() -> list[str]:
    return [m.name for m in migrations.load("postgres")]


async def test_migrate_twice_is_a_no_op(make_store: MakeStore, pg_schema: str) -> None:
    store = await make_store()
    every = _every_migration()
    assert await store.pending_migrations() == every  # the schema does not exist yet
    assert await store.migrate() == every
    assert await store.migrate() == []
    assert await store.pending_migrations() == []
    async with store.pool.connection() as conn:
        cur = await conn.execute(
            sql.SQL("SELECT version, name FROM {}.schema_migrations").format(
                sql.Identifier(pg_schema)
            )
        )
        assert await cur.fetchall() == [
            {"version": m.version, "name": m.name} for m in migrations.load("postgres")
        ]


async def test_concurrent_migrations_apply_each_migration_once(make_store: MakeStore) -> None:
    stores = [await make_store() for _ in range(4)]
    applied = await asyncio.gather(*(s.migrate() for s in stores))
    every = _every_migration()
    # Each migration is its own locked transaction (schema.migrate), so the runs take turns
    # migration by migration: which run applies which is a matter of timing, but every
    # migration is applied exactly once, and each run applies its share in order.
    assert sorted(name for names in applied for name in names) == every
    assert all(names == sorted(names) for names in applied)


async def test_schema_2_moves_the_finished_jobs_of_schema_1(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await make_store()
    every = migrations.load("postgres")
    monkeypatch.setattr(migrations, "load", lambda dialect: every[:1])
    assert await store.migrate() == ["0001_init"]
    async with store.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO jobs (type, state, finished_at, idempotency_key)"
            " SELECT 'echo', s, now(), s FROM unnest(%s::text[]) AS s",
            (["completed", "failed", "canceled", "pending"],),
        )
    monkeypatch.undo()

    assert await store.migrate() == _every_migration()[1:]
    async with store.pool.connection() as conn:
        cur = await conn.execute("SELECT state FROM jobs")
        assert await cur.fetchall() == [{"state": "pending"}]
        cur = await conn.execute("SELECT state FROM finished_jobs ORDER BY id")
        assert [r["state"] for r in await cur.fetchall()] == ["completed", "failed", "canceled"]
    assert [j.state for j in (await store.list()).jobs] == [
        "pending",
        "canceled",
        "failed",
        "completed",
    ]
    taken = await store.submit(spec(idempotency_key="completed"))
    assert not taken.created and taken.job.state is State.COMPLETED


async def test_claim_uses_the_partial_index_on_pending_jobs(
    pg: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    # A realistic table: a few thousand pending, a few running.
    await raw.execute(
        "INSERT INTO jobs (type, state, attempts, lease_owner, lease_expires_at)"
        " SELECT 'echo', 'running', 1, 'n', now() FROM generate_series(1, 50)"
    )
    await raw.execute(
        "INSERT INTO jobs (type, priority) SELECT 'echo', i % 5 FROM generate_series(1, 5000) AS i"
    )
    await raw.execute("ANALYZE jobs")
    params = {"node": "n", "limit": 10, "lease": 30.0, "queues": ["default"]}
    params |= {"types": None, "exclude_queues": None}
    cur = psycopg.AsyncClientCursor(raw)  # binds client-side, so EXPLAIN sees the values
    await cur.execute("EXPLAIN " + QUERIES["claim"], params)
    plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "jobs_claim_idx" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_claim_walks_the_index_even_when_statistics_are_stale(
    pg: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    """A burst of submits to an empty table, no ANALYZE since: the planner believes a few
    jobs are pending.  The claim must still walk the index instead of sorting the backlog,
    and no statement may pay for JIT compilation (both set up per connection)."""
    await raw.execute(
        "INSERT INTO jobs (type, priority) SELECT 'echo', i % 5 FROM generate_series(1, 20000) i"
    )
    params = {"node": "n", "limit": 10, "lease": 30.0, "queues": None, "types": None}
    params["exclude_queues"] = None
    async with pg.pool.connection() as conn:
        cur = psycopg.AsyncClientCursor(conn)
        await cur.execute("EXPLAIN " + QUERIES["claim"], params)
        plan = "\n".join(row["QUERY PLAN"] for row in await cur.fetchall())
        assert "jobs_claim_idx" in plan, plan
        assert "Sort" not in plan, plan
        cur = await conn.execute("EXPLAIN (ANALYZE) SELECT * FROM jobs ORDER BY type LIMIT 1")
        plan = "\n".join(row["QUERY PLAN"] for row in await cur.fetchall())
        assert "Sort" in plan and "JIT" not in plan, plan  # a needed sort stays, JIT does not


async def test_jobd_enqueue_submits_from_an_applications_transaction(
    pg: PostgresStore, pg_url: str, pg_schema: str
) -> None:
    seen: list[Notification] = []
    pg.add_listener(seen.append)
    enqueue = sql.SQL(
        "SELECT {}.jobd_enqueue('report', '{{\"m\": 6}}', queue => 'batch',"
        " idempotency_key => 'r-6')"
    ).format(sql.Identifier(pg_schema))
    async with await psycopg.AsyncConnection.connect(pg_url) as app:  # its own search_path
        job_id = (await (await app.execute(enqueue)).fetchone())[0]
        assert (await pg.list()).jobs == []  # not before the application commits
        assert (await (await app.execute(enqueue)).fetchone())[0] == job_id
        await app.commit()
    job = await pg.get(job_id)
    assert (job.type, job.queue, job.payload, job.state) == ("report", "batch", {"m": 6}, "pending")
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as app:
        with pytest.raises(psycopg.errors.CheckViolation):  # the table keeps the domain's rules
            await app.execute(
                sql.SQL("SELECT {}.jobd_enqueue('report', '[1, 2]')").format(
                    sql.Identifier(pg_schema)
                )
            )
    await eventually(lambda: Notification(NotificationKind.SUBMITTED, queue="batch") in seen)

    # Its key stays taken once the job has finished and moved to finished_jobs.
    await pg.claim("n", 1, lease=60, queues=["batch"])
    await pg.finish("n", [Outcome(job_id, 1, OutcomeKind.COMPLETED)])
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as app:
        assert (await (await app.execute(enqueue)).fetchone())[0] == job_id
    assert [j.id for j in (await pg.list()).jobs] == [job_id]


# --- notifications between nodes -----------------------------------------------------------


async def test_another_node_hears_submit_and_cancel(
    pg: PostgresStore, make_store: MakeStore
) -> None:
    other = await make_store()
    heard: list[Notification] = []
    other.add_listener(heard.append)
    said: list[Notification] = []
    pg.add_listener(said.append)

    job = (await pg.submit(spec(queue="mail"))).job
    await eventually(lambda: Notification(NotificationKind.SUBMITTED, queue="mail") in heard)

    await pg.claim("n", 1, lease=60)
    await pg.request_cancel(job.id)
    await eventually(lambda: Notification(NotificationKind.CANCEL, job_id=job.id) in heard)

    # The node that sent them told its own listeners once, directly, and dropped the echo of
    # its NOTIFYs: once a later notification from the other node has arrived, so have they.
    await other.submit(spec(queue="marker"))
    await eventually(lambda: Notification(NotificationKind.SUBMITTED, queue="marker") in said)
    assert said.count(Notification(NotificationKind.SUBMITTED, queue="mail")) == 1
    assert said.count(Notification(NotificationKind.CANCEL, job_id=job.id)) == 1


async def test_a_sibling_store_without_listen_is_an_echo_of_its_process(
    pg: PostgresStore, make_store: MakeStore, raw: psycopg.AsyncConnection[Any], pg_schema: str
) -> None:
    """The daemon's second store (the control server's, docs/adr/0036) opens no LISTEN
    connection, names its sessions apart, and the first store drops its NOTIFYs as its own
    echoes: the supervisor hears its changes once, from the store directly."""
    sibling = await make_store(listen=False, application_name="jobd-control")
    pg.pool.share_echoes(sibling.pool)
    other = await make_store()  # another node
    said: list[Notification] = []
    pg.add_listener(said.append)

    await sibling.submit(spec(queue="mail"))
    await other.submit(spec(queue="marker"))  # NOTIFYs arrive in commit order
    await eventually(lambda: Notification(NotificationKind.SUBMITTED, queue="marker") in said)
    assert Notification(NotificationKind.SUBMITTED, queue="mail") not in said

    cur = await raw.execute(
        "SELECT application_name, query FROM pg_stat_activity"
        " WHERE application_name = 'jobd-control' AND datname = current_database()"
    )
    rows = await cur.fetchall()
    assert rows, "the sibling's pooled sessions carry its application name"
    assert not [r for r in rows if r[1] == f'LISTEN "{pg_schema}_cancel"']


async def test_listener_reconnects_after_losing_its_connection(
    pg: PostgresStore, make_store: MakeStore, raw: psycopg.AsyncConnection[Any], pg_schema: str
) -> None:
    other = await make_store()
    heard: list[Notification] = []
    other.add_listener(heard.append)
    cur = await raw.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE query = %s AND pid <> pg_backend_pid()",
        (f'LISTEN "{pg_schema}_cancel"',),
    )
    assert len(await cur.fetchall()) == 2  # both nodes' listeners

    # Back: listeners are told to look for work they may have missed, then hear new work.
    await eventually(lambda: Notification(NotificationKind.SUBMITTED) in heard)
    await pg.submit(spec(queue="after"))
    await eventually(lambda: Notification(NotificationKind.SUBMITTED, queue="after") in heard)


async def test_a_63_character_schema_gets_working_channels(pg_url: str, pg_schema: str) -> None:
    schema = (pg_schema + "_" + "x" * 63)[:63]
    stores = [create_store(pg_url, schema=schema) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        await stores[0].migrate()
        heard: list[Notification] = []
        stores[1].add_listener(heard.append)
        await stores[0].submit(spec(queue="long"))
        await eventually(lambda: Notification(NotificationKind.SUBMITTED, queue="long") in heard)
        async with stores[0].pool.connection() as conn:  # jobd_enqueue names the channel alike
            await conn.execute("SELECT jobd_enqueue('echo', queue => 'sql')")
        await eventually(lambda: Notification(NotificationKind.SUBMITTED, queue="sql") in heard)
    finally:
        for store in stores:
            await store.close()


# --- errors --------------------------------------------------------------------------------


async def test_unreachable_server_is_unavailable() -> None:
    store = create_store("postgresql://postgres@127.0.0.1:1/jobd", connect_timeout=2)
    with pytest.raises(Unavailable, match="store unavailable"):
        await store.open()
    with pytest.raises(Unavailable, match="not open"):
        await store.get(1)


async def test_a_dropped_connection_is_unavailable_then_recovers(
    pg: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    job = (await pg.submit(spec())).job
    await raw.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'jobd' AND datname = current_database()"
        " AND pid <> pg_backend_pid() AND query NOT LIKE 'LISTEN%'"
    )
    with pytest.raises(Unavailable):
        await pg.get(job.id)
    assert (await eventually(lambda: _get_or_none(pg, job.id))).id == job.id


async def _get_or_none(store: PostgresStore, job_id: int) -> Job | None:
    try:
        return await store.get(job_id)
    except Unavailable:
        return None


async def test_payload_postgres_cannot_store_is_invalid(pg: PostgresStore) -> None:
    with pytest.raises(InvalidParams, match="payload"):
        await pg.submit(spec(payload={"x": float("nan")}))
    with pytest.raises(InvalidParams):
        await pg.submit(spec(payload={"x": "nul \x00 byte"}))
    assert (await pg.counts()).rows == []


def test_schema_must_be_a_plain_identifier() -> None:
    with pytest.raises(ValueError, match=r"database\.schema"):
        PostgresStore("postgresql://localhost/x", schema='evil"; DROP')


async def test_maintain_vacuums_the_jobs_table_once_dead_rows_pile_up(
    pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobd.store.postgres.store as pg_module

    store = create_store(pg_url, schema=pg_schema)
    await store.open()
    try:
        await store.migrate()
        assert await store.maintain() is False  # nothing dead yet
        await store.submit_many([NewJob("echo", {}) for _ in range(300)])
        jobs = await store.claim("n", 300, lease=30)
        await store.finish("n", [Outcome(j.id, 1, OutcomeKind.COMPLETED) for j in jobs])
        monkeypatch.setattr(pg_module, "VACUUM_DEAD_ROWS", 100)

        async def dead_rows() -> int:
            async with store.pool.connection() as conn:
                cur = await conn.execute(pg_module.QUERIES["dead_rows"])
                return (await cur.fetchone())["dead"]

        deadline = time.monotonic() + 20
        while await dead_rows() < 100:  # cumulative statistics arrive a little late
            assert time.monotonic() < deadline, "statistics never showed the dead rows"
            await asyncio.sleep(0.1)
        assert await store.maintain() is True
        deadline = time.monotonic() + 20
        while await dead_rows() >= 100:
            assert time.monotonic() < deadline, "VACUUM left the dead rows"
            await asyncio.sleep(0.1)
    finally:
        await store.close()


async def test_claim_restricted_to_the_nodes_types_still_walks_the_index(
    pg: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    """Every node now claims with its types (ADR 0023): the filter rides on the index walk,
    and a backlog of a type the node does not run is skipped, not sorted."""
    await raw.execute(
        "INSERT INTO jobs (type, priority)"
        " SELECT CASE WHEN i % 2 = 0 THEN 'echo' ELSE 'new_type' END, i % 5"
        " FROM generate_series(1, 5000) AS i"
    )
    await raw.execute("ANALYZE jobs")
    params = {"node": "n", "limit": 10, "lease": 30.0, "queues": None}
    params |= {"types": ["echo", "sleep"], "exclude_queues": None}
    cur = psycopg.AsyncClientCursor(raw)
    await cur.execute("EXPLAIN " + QUERIES["claim"], params)
    plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "jobs_claim_idx" in plan, plan
    assert "Seq Scan" not in plan and "Sort" not in plan, plan


# --- schedules ------------------------------------------------------------------------------


async def test_a_trigger_at_the_instant_of_a_tick_does_not_stop_that_ticks_run(
    pg: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    """A trigger's history row is timed by now(): one landing exactly on a tick (a whole
    second) must not make the tick's own run collide with it (schema 7's key)."""
    schedule = parse_schedule("pulse", {"every": "1s", "type": "echo"})
    await pg.enqueue_ticks(schedule)
    triggered = await pg.trigger_schedule(schedule)
    cur = await raw.execute("SELECT date_trunc('second', now()) + interval '1 second' AS t")
    tick = (await cur.fetchone())[0]  # type: ignore[index]
    await raw.execute("UPDATE schedule_runs SET tick = %s WHERE job_id = %s", (tick, triggered.id))

    async def the_ticks_run() -> list[Job]:
        return [job for job in (await pg.enqueue_ticks(schedule)).jobs if job.run_at == tick]

    (job,) = await eventually(the_ticks_run, what="the run of the triggered tick")
    cur = await raw.execute("SELECT kind FROM schedule_runs WHERE tick = %s ORDER BY kind", (tick,))
    assert [row[0] for row in await cur.fetchall()] == ["tick", "trigger"]
    assert job.id != triggered.id
