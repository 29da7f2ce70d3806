"""The PostgreSQL store's progress write: the latest progress of this node's running
attempts, one statement for the whole batch (schema 8, docs/adr/0031-job-progress.md)."""

from __future__ import annotations

from collections.abc import Sequence

from jobd.store.base import ProgressReport
from jobd.store.postgres.connections import Connection
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import json_text


async def record_progress(
    conn: Connection, node: str, reports: Sequence[ProgressReport]
) -> list[int]:
    if not reports:
        return []
    params = {
        "node": node,
        "ids": [r.job_id for r in reports],
        "attempts": [r.attempt for r in reports],
        "tokens": [r.token for r in reports],
        "progress": [json_text(r.progress, "progress") for r in reports],
        "ats": [r.at for r in reports],
    }
    async with conn.pipeline():  # one round trip, one implicit transaction
        await conn.execute(QUERIES["write_back_hash_joins"], prepare=True)
        cur = await conn.execute(QUERIES["record_progress"], params, prepare=True)
    return [row["id"] for row in await cur.fetchall()]
