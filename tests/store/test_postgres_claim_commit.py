"""A claim alone commits without waiting for the WAL flush (ADR 0039), and nothing else does:
a trigger on the jobs table notes the `synchronous_commit` of each statement's transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest
from psycopg import sql

from jobd.domain import NewJob
from jobd.store import Outcome, OutcomeKind
from jobd.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

NOTE_SETTING = """
CREATE TABLE seen (operation text, setting text);
CREATE FUNCTION note_commit_setting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seen VALUES (TG_OP, current_setting('synchronous_commit'));
    RETURN NULL;
END $$;
CREATE TRIGGER note_commit_setting AFTER UPDATE OR DELETE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION note_commit_setting();
"""


@pytest.fixture
async def store(make_store: Callable[..., Awaitable[PostgresStore]]) -> PostgresStore:
    s = await make_store()
    await s.migrate()
    return s


@pytest.fixture
async def conn(store: PostgresStore, pg_url: str, pg_schema: str) -> AsyncIterator[object]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as c:
        await c.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        await c.execute(NOTE_SETTING)
        yield c


async def seen(conn: psycopg.AsyncConnection[tuple[str, str]]) -> list[tuple[str, str]]:
    cur = await conn.execute("DELETE FROM seen RETURNING operation, setting")
    return await cur.fetchall()


async def test_a_claim_alone_does_not_wait_for_the_flush_and_its_finish_does(
    store: PostgresStore, conn: psycopg.AsyncConnection[tuple[str, str]]
) -> None:
    await store.submit_many([NewJob(type="noop") for _ in range(3)])
    jobs = await store.claim("node-a", 3, lease=30.0)
    assert len(jobs) == 3
    assert await seen(conn) == [("UPDATE", "off")]

    done = [Outcome(j.id, j.attempts, OutcomeKind.COMPLETED, token=j.lease_token) for j in jobs]
    await store.finish("node-a", done)
    assert await seen(conn) == [("DELETE", "on")]
