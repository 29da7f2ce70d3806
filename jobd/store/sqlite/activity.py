"""The SQLite store's `activity` (jobd.store.activity): the range of jobs_finished (schema 1)
from the oldest minute counted, grouped by minute (finished_at is epoch seconds)."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from jobd.store.activity import Activity, MinuteCount, window_start
from jobd.store.sqlite.rows import dt, ts

if TYPE_CHECKING:
    from jobd.store.sqlite.store import SQLiteStore

ACTIVITY = """
SELECT CAST(finished_at / 60 AS INTEGER) * 60 AS minute,
       sum(state = 'completed'), sum(state = 'failed')
  FROM jobs
 WHERE finished_at >= ? AND state IN ('completed', 'failed')
 GROUP BY 1
 ORDER BY 1
"""


async def activity(store: SQLiteStore) -> Activity:
    def run(conn: sqlite3.Connection) -> Activity:
        now = store._clock()
        rows = conn.execute(ACTIVITY, (ts(window_start(now)),)).fetchall()
        return Activity(now, [MinuteCount(dt(m), int(c), int(f)) for m, c, f in rows])

    result: Activity = await store.db.run(run)
    return result
