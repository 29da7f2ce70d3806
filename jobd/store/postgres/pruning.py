"""Pruning of the PostgreSQL store: finished jobs deleted once past the retention, in small
batches; a job a dependent still needs (schema 5's workflows) stays, and the edges of the
pruned jobs go with them (the `prune` statement)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import fetch_one

if TYPE_CHECKING:
    from jobd.store.postgres.store import PostgresStore


async def prune(store: PostgresStore, older_than: timedelta, batch: int = 1000) -> int:
    """Delete in batches, each its own transaction (autocommit), until a batch comes back
    short: nothing older than the cutoff is left."""
    batch = max(int(batch), 1)
    deleted = 0
    async with store.pool.connection() as conn:
        cur = await conn.execute(QUERIES["prune_cutoff"], {"seconds": older_than.total_seconds()})
        cutoff = (await fetch_one(cur))["cutoff"]
        while True:
            cur = await conn.execute(QUERIES["prune"], {"cutoff": cutoff, "batch": batch})
            pruned = int((await fetch_one(cur))["pruned"])
            deleted += pruned
            if pruned < batch:
                return deleted
