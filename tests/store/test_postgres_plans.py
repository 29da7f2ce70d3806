"""The statements a busy node runs many times a second find their rows of the jobs table by id,
whatever its statistics say.

A queue's table swings from empty to a backlog of millions and back; statistics taken while it
was nearly empty (a drained queue between bursts, with autovacuum off or behind) tell the
planner jobs holds one row.  Under a flooding producer that made the claim, then written as a
join, scan the whole table once per locked row (claims of 120 s with a backlog of a million),
and the write-back compare every outcome with every row in a nested loop: a stalled node
(docs/adr/0043).  Here the statistics are taken the same way, and every plan is the generic
one a prepared statement settles on."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobd.domain import NewJob
from jobd.store import Outcome, OutcomeKind
from jobd.store.postgres import QUERIES, PostgresStore

pytestmark = pytest.mark.postgres

#: The statements of the claim, the heartbeat and the write-back (supervisor.writeback).
HOT = ("claim", "heartbeat", "finish", "finish_retry", "mark_started", "record_progress")
#: Of those, the ones whose rows are chosen by a locking SELECT: they may not join it.
LOCKING = ("claim", "heartbeat")
#: And the write-back's, which join an array of outcomes to the rows they end.
WRITE_BACK = ("finish", "finish_retry", "mark_started", "record_progress")

JOINS = {"Nested Loop", "Hash Join", "Merge Join"}
COMPLETED = OutcomeKind.COMPLETED


@pytest.fixture
async def conn(
    make_store: Callable[..., Awaitable[PostgresStore]], pg_url: str, pg_schema: str
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A session as the store's own, on a jobs table analyzed while nearly empty and then
    filled with a backlog."""
    store = await make_store()
    await store.migrate()
    for _ in range(3):  # a busy spell: claimed, run and ended
        await store.submit_many([NewJob(type="noop") for _ in range(1000)])
        jobs = await store.claim("a", 1000, lease=60)
        await store.finish(
            "a", [Outcome(j.id, j.attempts, COMPLETED, token=j.lease_token) for j in jobs]
        )
    await store.submit_many([NewJob(type="noop")])
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as c:
        await c.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        await c.execute("VACUUM (ANALYZE) jobs")  # one job left
        for _ in range(3):
            await store.submit_many([NewJob(type="noop") for _ in range(1000)])
        await c.execute("SET enable_sort = off; SET jit = off")  # as the pool's sessions
        await c.execute("SET plan_cache_mode = force_generic_plan")
        yield c


async def generic_plan(conn: psycopg.AsyncConnection[Any], name: str) -> dict[str, Any]:
    """The generic plan of statement `name`, as EXPLAIN (FORMAT JSON) gives it, planned with
    what the store sends before it (the write-back's settings)."""
    if name in WRITE_BACK:
        async with conn.transaction():
            await conn.execute(QUERIES["write_back_hash_joins"])
            return await _generic_plan(conn, name)
    return await _generic_plan(conn, name)


async def _generic_plan(conn: psycopg.AsyncConnection[Any], name: str) -> dict[str, Any]:
    params: list[str] = []

    def numbered(m: re.Match[str]) -> str:
        if m.group(1) not in params:
            params.append(m.group(1))
        return f"${params.index(m.group(1)) + 1}"

    text = re.sub(r"%\((\w+)\)[sb]", numbered, QUERIES[name])
    await conn.execute(f"PREPARE {name} AS {text}")  # the parameters' types from the text
    args = ", ".join(["NULL"] * len(params))
    cur = await conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({args})")
    row = await cur.fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def target_scans(plan: dict[str, Any]) -> list[str]:
    """How each scan of the statement's target rows (the table under its own name; a locking
    SELECT's scan is aliased jobs_1) finds them: its index and index conditions, a bitmap
    scan's from the index scans below it."""
    found = []
    for node in nodes(plan):
        scan = node["Node Type"].endswith("Scan")
        if scan and node.get("Relation Name") == "jobs" and node.get("Alias") == "jobs":
            found.append(
                " ".join(
                    f"{n.get('Index Name', '')}: {n.get('Index Cond', '')}" for n in nodes(node)
                )
            )
    return found


@pytest.mark.parametrize("name", HOT)
async def test_a_hot_statement_reaches_its_rows_by_id_never_by_a_scan_of_the_table(
    conn: psycopg.AsyncConnection[Any], name: str
) -> None:
    """By the ids it is about, or, for the write-back, through the running rows' own index
    (what the fleet holds, never the backlog)."""
    scans = target_scans(await generic_plan(conn, name))
    assert scans, f"{name}: no scan of jobs found in its plan"
    for scan in scans:
        by_id = re.search(r"jobs_pkey: \(?id = ANY\b", scan)
        assert by_id or "jobs_running_idx: " in scan, f"{name} scans jobs by {scan!r}"


@pytest.mark.parametrize("name", LOCKING)
async def test_the_rows_a_statement_locks_reach_its_update_as_an_array_not_a_join(
    conn: psycopg.AsyncConnection[Any], name: str
) -> None:
    plan = await generic_plan(conn, name)
    assert not [n["Node Type"] for n in nodes(plan) if n["Node Type"] in JOINS]


@pytest.mark.parametrize("name", WRITE_BACK)
async def test_the_write_back_joins_its_outcomes_to_their_rows_in_linear_time(
    conn: psycopg.AsyncConnection[Any], name: str
) -> None:
    """A nested loop over the outcomes and the rows they end compares every pair: a
    write-back that fell behind, with a larger batch, fell further behind."""
    for node in nodes(await generic_plan(conn, name)):
        if node["Node Type"] == "Nested Loop":
            joined = {n.get("Alias") for n in inputs(node)}
            assert "jobs" not in joined, f"{name} joins jobs by a nested loop"


def inputs(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The nodes whose rows flow into `plan`'s (its outer and inner sides, not the common
    table expressions or init plans it runs beside them)."""
    for child in plan.get("Plans", []):
        if child.get("Parent Relationship") in ("Outer", "Inner", "Member"):
            yield child
            yield from inputs(child)
