"""The PostgreSQL store's `activity` (jobd.store.activity): one range of
finished_jobs_finished_state_idx (schema 11), read index-only, grouped by minute."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobd.store.activity import ACTIVITY_MINUTES, Activity, MinuteCount
from jobd.store.postgres.rows import fetch_one

if TYPE_CHECKING:
    from jobd.store.postgres.store import PostgresStore

_NOW = "SELECT now() AS now"
# The current minute and the ACTIVITY_MINUTES - 1 before it.
_ACTIVITY = """
SELECT date_trunc('minute', finished_at) AS minute,
       count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state = 'failed') AS failed
  FROM finished_jobs
 WHERE finished_at >= date_trunc('minute', %(now)s::timestamptz)
                      - make_interval(mins => %(minutes)s - 1)
   AND state IN ('completed', 'failed')
 GROUP BY 1
 ORDER BY 1
"""


async def activity(store: PostgresStore) -> Activity:
    async with store.pool.connection() as conn:
        now = (await fetch_one(await conn.execute(_NOW)))["now"]
        params = {"now": now, "minutes": ACTIVITY_MINUTES}
        rows = await (await conn.execute(_ACTIVITY, params)).fetchall()
    return Activity(now, [MinuteCount(r["minute"], r["completed"], r["failed"]) for r in rows])
