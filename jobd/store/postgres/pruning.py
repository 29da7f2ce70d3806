"""Pruning of the PostgreSQL store: finished jobs deleted once past their own `result_ttl`
(schema 10) or, for the jobs that set none, past the retention, in small batches; a job a
dependent still needs (schema 5's workflows) stays, and the edges of the pruned jobs go with
them (the `prune` and `prune_expired` statements)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobd.store.postgres.connections import Connection
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import fetch_one

if TYPE_CHECKING:
    from jobd.store.postgres.store import PostgresStore


async def prune(store: PostgresStore, older_than: timedelta | None, batch: int = 1000) -> int:
    """Delete in batches, each its own transaction (autocommit): first the jobs past their
    own result_ttl, then (unless `older_than` is None: no retention) the others past the
    retention; each pass until a batch comes back short."""
    batch = max(int(batch), 1)
    seconds = None if older_than is None else older_than.total_seconds()
    async with store.pool.connection() as conn:
        cur = await conn.execute(QUERIES["prune_cutoff"], {"seconds": seconds})
        times = await fetch_one(cur)
        deleted = await _batches(conn, "prune_expired", {"now": times["now"]}, batch)
        if times["cutoff"] is not None:
            deleted += await _batches(conn, "prune", {"cutoff": times["cutoff"]}, batch)
        return deleted


async def _batches(conn: Connection, query: str, params: dict[str, datetime], batch: int) -> int:
    deleted = 0
    while True:
        cur = await conn.execute(QUERIES[query], {**params, "batch": batch})
        pruned = int((await fetch_one(cur))["pruned"])
        deleted += pruned
        if pruned < batch:
            return deleted
