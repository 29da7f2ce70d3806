"""The PostgreSQL prune reads what it deletes through an index, never the whole of
finished_jobs: on a table of 100,000 finished jobs, a few with a result_ttl of their own, both
of its statements are index scans (docs/adr/0033-result-retention-per-job.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobd.store import create_store
from jobd.store.postgres import QUERIES, PostgresStore

pytestmark = pytest.mark.postgres

# 100,000 jobs ended over the last ten days; one in a hundred set a result_ttl.
_FILL = """
INSERT INTO finished_jobs (id, type, state, attempts, finished_at, created_at, updated_at,
                           result_ttl)
SELECT i, 'echo', 'completed', 1, now() - make_interval(secs => i * 8.64),
       now() - make_interval(secs => i * 8.64), now(),
       CASE WHEN i % 100 = 0 THEN 3600 END
  FROM generate_series(1, 100000) AS i
"""


@pytest.fixture
async def pg(pg_url: str, pg_schema: str) -> AsyncIterator[PostgresStore]:
    store = create_store(pg_url, schema=pg_schema)
    assert isinstance(store, PostgresStore)
    await store.open()
    await store.migrate()
    yield store
    await store.close()


async def plan(conn: psycopg.AsyncConnection[Any], query: str, params: dict[str, Any]) -> str:
    cur = psycopg.AsyncClientCursor(conn)  # binds client-side, so EXPLAIN sees the values
    await cur.execute("EXPLAIN " + QUERIES[query], params)
    return "\n".join(row[0] for row in await cur.fetchall())


async def test_both_prune_statements_use_an_index_on_100k_finished_jobs(
    pg: PostgresStore, pg_url: str, pg_schema: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        await conn.execute(_FILL)
        await conn.execute("ANALYZE finished_jobs")
        now = datetime.now(UTC)
        expired = await plan(conn, "prune_expired", {"now": now, "batch": 1000})
        assert "finished_jobs_expiry_idx" in expired, expired
        assert "Seq Scan on finished_jobs" not in expired, expired
        cutoff = now - timedelta(days=7)
        retention = await plan(conn, "prune", {"cutoff": cutoff, "batch": 1000})
        assert "finished_jobs_finished_state_idx" in retention, retention
        assert "Seq Scan on finished_jobs" not in retention, retention
    # And they delete what they should: of the 1,000 with a result_ttl of an hour, the 996
    # that ended over an hour ago (job i ended i * 8.64 s ago); of the others, the 29,700
    # that ended over a week ago (jobs 70,001 to 100,000 but for their 300 with a result_ttl).
    assert await pg.prune(timedelta(days=7), batch=5000) == 996 + 29700
