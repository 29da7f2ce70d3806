"""The PostgreSQL store's operations on queues (schema 6: the queues and audit_log tables):
pausing, the queues' summary, bulk actions in batches, run-now and priority, the audit trail.
PostgresStore takes these functions as its methods, as it does the schedules'."""

from __future__ import annotations

import builtins
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from jobd.domain import IllegalTransition, Job, State
from jobd.errors import Conflict
from jobd.store.base import Changed, JobFilter, Notification, NotificationKind
from jobd.store.postgres import workflows as workflow_rows
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import Row, fetch_one, job_from_row, lookup_id, write_params
from jobd.store.queues import (
    Adjustment,
    AuditEntry,
    AuditRecord,
    BulkAction,
    BulkBatch,
    QueueRecord,
    QueueSummary,
    bulk_filter,
)

if TYPE_CHECKING:
    from jobd.store.postgres.connections import Connection
    from jobd.store.postgres.store import PostgresStore

#: The payload of the NOTIFY a pause or resume sends on the cancel channel (a node before
#: schema 6 reads it as a cancel of no job, and ignores it).
QUEUES_PAYLOAD = "queues"

_RECORDS = """
SELECT name, paused, reason, changed_by, changed_at FROM queues
 WHERE %(name)s::text IS NULL OR name = %(name)s::text
 ORDER BY name
"""
_PAUSE = """
INSERT INTO queues (name, paused, reason, changed_by, changed_at)
VALUES (%(name)s, %(paused)s, %(reason)s, %(actor)s, now())
    ON CONFLICT (name) DO UPDATE
   SET paused = excluded.paused, reason = excluded.reason,
       changed_by = excluded.changed_by, changed_at = excluded.changed_at
RETURNING name, paused, reason, changed_by, changed_at
"""
# The backlog by queue and state (the hot table only), with the oldest due pending job.
_BACKLOG = """
SELECT queue, state, count(*) AS n,
       min(run_at) FILTER (WHERE state = 'pending' AND run_at <= now()) AS oldest_due
  FROM jobs
 GROUP BY queue, state
"""
# Failures since the cutoff (finished_jobs_finished_state_idx): failed jobs live in finished_jobs.
_FAILED = """
SELECT queue, count(*) AS n
  FROM finished_jobs
 WHERE finished_at > now() - make_interval(secs => %(seconds)s)
   AND state = 'failed'
 GROUP BY queue
"""
_FILTERS = """
       (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
   AND (%(type)s::text IS NULL OR type = %(type)s::text)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
   AND (%(created_after)s::timestamptz IS NULL OR created_at > %(created_after)s::timestamptz)
   AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s::timestamptz)
   AND (%(schedule)s::text IS NULL OR schedule = %(schedule)s::text)
"""
_COUNT = f"SELECT count(*) AS n FROM all_jobs WHERE {_FILTERS}"
# A bulk batch's candidates, read without a lock; then locked by id, skipping those another
# transaction holds (a claim, a finish, a heartbeat): a bulk action never waits for a lock,
# so it can neither deadlock with a node's statements nor hold them up.
_CANDIDATES = """
SELECT id FROM {table}
 WHERE id > %(after)s AND {filters}
 ORDER BY id
 LIMIT %(batch)s
"""
_LOCK = """
SELECT *, now() AS db_now FROM {table}
 WHERE id = ANY(%(ids)s::bigint[])
 ORDER BY id
   FOR UPDATE SKIP LOCKED
"""
_MOVE_BACK = """
WITH moved AS (DELETE FROM finished_jobs WHERE id = ANY(%(ids)s::bigint[]) RETURNING *)
INSERT INTO jobs SELECT * FROM moved
"""
_PURGE = "DELETE FROM finished_jobs WHERE id = ANY(%(ids)s::bigint[])"
_LOCK_PENDING = "SELECT *, now() AS db_now FROM jobs WHERE id = %(id)s FOR UPDATE"
_ADJUST = """
UPDATE jobs SET run_at = %(run_at)s, priority = %(priority)s, updated_at = %(updated_at)s
 WHERE id = %(id)s
RETURNING *
"""
_AUDIT = """
INSERT INTO audit_log (actor, action, target, details)
VALUES (%(actor)s, %(action)s, %(target)s, %(details)s)
RETURNING id, at
"""
_AUDIT_PAGE = """
SELECT id, at, actor, action, target, details FROM audit_log
 WHERE %(before)s::bigint IS NULL OR id < %(before)s::bigint
 ORDER BY id DESC
 LIMIT %(limit)s
"""


async def queue_records(store: PostgresStore) -> builtins.list[QueueRecord]:
    async with store.pool.connection() as conn:
        cur = await conn.execute(_RECORDS, {"name": None})
        return [_record(row) for row in await cur.fetchall()]


async def set_queue_paused(
    store: PostgresStore,
    name: str,
    paused: bool,
    *,
    reason: str | None = None,
    actor: str | None = None,
) -> QueueRecord:
    params = {"name": name, "paused": paused, "reason": reason, "actor": actor}
    async with store.pool.connection() as conn, conn.transaction():
        record = _record(await fetch_one(await conn.execute(_PAUSE, params)))
        await store._pg_notify(conn, store.cancel_channel, [QUEUES_PAYLOAD])
        if not paused:  # nodes before schema 6 never stopped; newer ones look again at once
            await store._pg_notify(conn, store.submit_channel, [name])
    store._notify(Notification(NotificationKind.QUEUES, queue=name))
    if not paused:
        store._notify(Notification(NotificationKind.SUBMITTED, queue=name))
    return record


async def queue_summaries(
    store: PostgresStore, failed_within: timedelta
) -> builtins.list[QueueSummary]:
    async with store.pool.connection() as conn:
        backlog = await (await conn.execute(_BACKLOG)).fetchall()
        params = {"seconds": failed_within.total_seconds()}
        failed = await (await conn.execute(_FAILED, params)).fetchall()
    return summaries(backlog, {row["queue"]: row["n"] for row in failed})


def summaries(backlog: list[Row], failed: dict[str, int]) -> builtins.list[QueueSummary]:
    by_queue: dict[str, dict[str, Any]] = {}
    for row in backlog:
        entry = by_queue.setdefault(row["queue"], {"by_state": {}, "oldest": None})
        entry["by_state"][row["state"]] = row["n"]
        if row["oldest_due"] is not None:
            entry["oldest"] = row["oldest_due"]
    names = sorted(set(by_queue) | set(failed))
    return [
        QueueSummary(
            name,
            by_queue.get(name, {}).get("by_state", {}),
            failed.get(name, 0),
            by_queue.get(name, {}).get("oldest"),
        )
        for name in names
    ]


async def count_jobs(store: PostgresStore, filters: JobFilter) -> int:
    async with store.pool.connection() as conn:
        row = await fetch_one(await conn.execute(_COUNT, filter_params(filters)))
    return int(row["n"])


async def bulk(
    store: PostgresStore, action: BulkAction, filters: JobFilter, after: int, batch: int
) -> BulkBatch:
    filters = bulk_filter(action, filters)
    # Unfinished jobs are in jobs, finished ones in finished_jobs (ADR 0019).
    table = "jobs" if action is BulkAction.CANCEL else "finished_jobs"
    params = {**filter_params(filters), "after": after, "batch": max(int(batch), 1)}
    async with store.pool.connection() as conn, conn.transaction():
        candidates_sql = _CANDIDATES.format(table=table, filters=_FILTERS)
        ids = [row["id"] for row in await (await conn.execute(candidates_sql, params)).fetchall()]
        if not ids:
            return BulkBatch([], 0, None)
        cur = await conn.execute(_LOCK.format(table=table), {"ids": ids})
        rows = await cur.fetchall()
        jobs = [job_from_row(row) for row in rows]
        now = rows[0]["db_now"] if rows else None
        targets = [job for job in jobs if filters.matches(job)]
        changed = await _act(store, conn, action, targets, now)
    _announce(store, action, changed)
    return BulkBatch(changed, len(ids), ids[-1], busy=len(ids) - len(jobs))


async def _act(
    store: PostgresStore, conn: Connection, action: BulkAction, jobs: list[Job], now: Any
) -> list[Changed]:
    if not jobs:
        return []
    ids = [job.id for job in jobs]
    if action is BulkAction.PURGE:
        jobs = await workflow_rows.purgeable(conn, jobs)
        ids = [job.id for job in jobs]
        await conn.execute(_PURGE, {"ids": ids})
        await workflow_rows.forget(conn, ids)
        return [Changed(job, job.state) for job in jobs]
    changed = [Changed(action.apply(job, now), job.state) for job in jobs]
    if action is BulkAction.RETRY:
        await conn.execute(_MOVE_BACK, {"ids": ids})
    async with conn.cursor() as cur:
        await cur.executemany(QUERIES["write_job"], [write_params(c.job) for c in changed])
    ended = [c.job.id for c in changed if c.job.state.terminal]
    if ended:
        await conn.execute(QUERIES["move_finished"], {"ids": ended})
        await workflow_rows.parents_ended(conn, [c.job for c in changed])
    if action is BulkAction.RETRY:
        now_is = await workflow_rows.retried(conn, ids)
        changed = [Changed(now_is[c.job.id], c.previous) for c in changed]
    stopping = [str(c.job.id) for c in changed if c.job.state is State.RUNNING]
    await store._pg_notify(conn, store.cancel_channel, stopping)
    ready = sorted({c.job.queue for c in changed if c.job.state is State.PENDING})
    await store._pg_notify(conn, store.submit_channel, ready)
    return changed


def _announce(store: PostgresStore, action: BulkAction, changed: list[Changed]) -> None:
    """This process's listeners hear what other nodes hear through NOTIFY."""
    if action is BulkAction.PURGE:
        return
    for c in changed:
        if action is BulkAction.CANCEL:
            store._notify_cancel_requested(c.job)
    if action is BulkAction.RETRY:
        store._notify_submitted([c.job for c in changed])


async def adjust(store: PostgresStore, job_id: int, adjustment: Adjustment) -> Job:
    async with store.pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(_LOCK_PENDING, {"id": lookup_id(job_id)})).fetchone()
        before = job_from_row(row) if row is not None else await store.get(job_id)
        try:
            after = adjustment.apply(before, row["db_now"] if row is not None else before.run_at)
        except IllegalTransition as exc:
            raise Conflict(str(exc), id=job_id, state=exc.current.value) from None
        params = {
            "id": after.id,
            "run_at": after.run_at,
            "priority": after.priority,
            "updated_at": after.updated_at,
        }
        job = job_from_row(await fetch_one(await conn.execute(_ADJUST, params)))
        if adjustment.run_now:
            await store._pg_notify(conn, store.submit_channel, [job.queue])
    if adjustment.run_now:
        store._notify_submitted([job])
    return job


async def record_audit(store: PostgresStore, entry: AuditEntry) -> AuditRecord:
    params = {
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "details": Jsonb(entry.details),
    }
    async with store.pool.connection() as conn:
        row = await fetch_one(await conn.execute(_AUDIT, params))
    return AuditRecord(row["id"], row["at"], entry)


async def audit_records(
    store: PostgresStore, limit: int, before: int | None = None
) -> builtins.list[AuditRecord]:
    async with store.pool.connection() as conn:
        cur = await conn.execute(_AUDIT_PAGE, {"limit": limit, "before": before})
        rows = await cur.fetchall()
    return [
        AuditRecord(
            row["id"],
            row["at"],
            AuditEntry(row["actor"], row["action"], row["target"], row["details"] or {}),
        )
        for row in rows
    ]


def filter_params(filters: JobFilter) -> dict[str, Any]:
    return {
        "states": [State(s).value for s in filters.states] or None,
        "type": filters.type,
        "queue": filters.queue,
        "created_after": filters.created_after,
        "created_before": filters.created_before,
        "schedule": filters.schedule,
    }


def _record(row: Row) -> QueueRecord:
    return QueueRecord(
        row["name"], row["paused"], row["reason"], row["changed_by"], row["changed_at"]
    )


class QueueMethods:
    """These operations as methods of PostgresStore (which lists this class first among its
    bases, so that they implement the Store's abstract methods)."""

    queue_records = queue_records
    set_queue_paused = set_queue_paused
    queue_summaries = queue_summaries
    count_jobs = count_jobs
    bulk = bulk
    adjust = adjust
    record_audit = record_audit
    audit_records = audit_records
