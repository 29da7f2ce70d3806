"""The PostgreSQL store's operations on queues (schema 6: the queues and audit_log tables):
pausing, the queues' summary, bulk actions in batches, run-now and priority, the audit trail.
PostgresStore takes these functions as its methods, as it does the schedules'."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from jobd.domain import IllegalTransition, Job
from jobd.errors import Conflict
from jobd.queue_limits import FleetLimits, Rate, Window, room
from jobd.store.base import JobFilter, Notification, NotificationKind, ordering_key
from jobd.store.postgres.bulk import FILTERS, bulk, filter_params
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import (
    Row,
    claim_params,
    fetch_one,
    job_from_row,
    lookup_id,
)
from jobd.store.queues import (
    Adjustment,
    AuditEntry,
    AuditRecord,
    LimitChange,
    LimitedClaim,
    QueueRecord,
    QueueSummary,
    limited_result,
)

if TYPE_CHECKING:
    from jobd.store.postgres.store import PostgresStore

#: The payload of the NOTIFY a pause or resume sends on the cancel channel (a node before
#: schema 6 reads it as a cancel of no job, and ignores it).
QUEUES_PAYLOAD = "queues"

_COLUMNS = """name, paused, reason, changed_by, changed_at, global_concurrency, rate_limit,
       rate_period, limits_changed_by, limits_changed_at"""
_RECORDS = f"""
SELECT {_COLUMNS} FROM queues
 WHERE %(name)s::text IS NULL OR name = %(name)s::text
 ORDER BY name
"""
_PAUSE = f"""
INSERT INTO queues (name, paused, reason, changed_by, changed_at)
VALUES (%(name)s, %(paused)s, %(reason)s, %(actor)s, now())
    ON CONFLICT (name) DO UPDATE
   SET paused = excluded.paused, reason = excluded.reason,
       changed_by = excluded.changed_by, changed_at = excluded.changed_at
RETURNING {_COLUMNS}
"""
# A change of the runtime limits: each value given is set; `reset` drops those not given.
_LIMITS = f"""
INSERT INTO queues (name, global_concurrency, rate_limit, rate_period,
                    limits_changed_by, limits_changed_at)
VALUES (%(name)s, %(gc)s, %(rate)s, %(period)s, %(actor)s, now())
    ON CONFLICT (name) DO UPDATE
   SET global_concurrency = CASE WHEN %(gc)s::integer IS NOT NULL THEN %(gc)s::integer
                                 WHEN %(reset)s THEN NULL ELSE queues.global_concurrency END,
       rate_limit = CASE WHEN %(rate)s::integer IS NOT NULL THEN %(rate)s::integer
                         WHEN %(reset)s THEN NULL ELSE queues.rate_limit END,
       rate_period = CASE WHEN %(rate)s::integer IS NOT NULL THEN %(period)s::float8
                          WHEN %(reset)s THEN NULL ELSE queues.rate_period END,
       limits_changed_by = excluded.limits_changed_by,
       limits_changed_at = excluded.limits_changed_at
RETURNING {_COLUMNS}
"""
# A limited claim (docs/adr/0032): the queue's row, created if need be, then held for the
# transaction, so the claims of the queue from every node take turns; the time after the wait.
_ENSURE = "INSERT INTO queues (name) VALUES (%(queue)s) ON CONFLICT (name) DO NOTHING"
_HOLD = """
SELECT global_concurrency, rate_limit, rate_period, window_start, window_starts,
       extract(epoch FROM clock_timestamp())::float8 AS now
  FROM queues WHERE name = %(queue)s
   FOR UPDATE
"""
# The queue's running jobs, through jobs_running_idx (partial: state = 'running').
_RUNNING = "SELECT count(*) AS n FROM jobs WHERE state = 'running' AND queue = %(queue)s"
# Claimable jobs the claim left for lack of room (at most its shortfall).
_MORE = """
SELECT count(*) AS n FROM (
        SELECT 1 FROM jobs
         WHERE state = 'pending' AND run_at <= now() AND attempts < max_attempts
           AND queue = %(queue)s
           AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[]))
         LIMIT %(n)s
       ) AS more
"""
_SET_WINDOW = """
UPDATE queues SET window_start = %(start)s, window_starts = %(starts)s WHERE name = %(queue)s
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
_COUNT = f"SELECT count(*) AS n FROM all_jobs WHERE {FILTERS}"
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


async def set_queue_limits(
    store: PostgresStore, name: str, change: LimitChange, *, actor: str | None = None
) -> QueueRecord:
    rate = change.rate
    params = {
        "name": name,
        "gc": change.global_concurrency,
        "rate": None if rate is None else rate.count,
        "period": None if rate is None else rate.period,
        "reset": change.reset,
        "actor": actor,
    }
    async with store.pool.connection() as conn, conn.transaction():
        record = _record(await fetch_one(await conn.execute(_LIMITS, params)))
        await store._pg_notify(conn, store.cancel_channel, [QUEUES_PAYLOAD])
        await store._pg_notify(conn, store.submit_channel, [name])  # room may have grown
    store._notify(Notification(NotificationKind.QUEUES, queue=name))
    store._notify(Notification(NotificationKind.SUBMITTED, queue=name))
    return record


async def claim_limited(
    store: PostgresStore,
    node: str,
    queue: str,
    limit: int,
    *,
    lease: float,
    types: Sequence[str] | None,
    limits: FleetLimits,
) -> LimitedClaim:
    if limit <= 0:
        return LimitedClaim([], limits)
    q = {"queue": queue}
    async with store.pool.connection() as conn, conn.transaction():
        await conn.execute(_ENSURE, q, prepare=True)
        row = await fetch_one(await conn.execute(_HOLD, q, prepare=True))
        applied = limits.over(_runtime(row))
        running = 0
        if applied.global_concurrency is not None:
            running = (await fetch_one(await conn.execute(_RUNNING, q, prepare=True)))["n"]
        window = Window(row["window_start"], row["window_starts"])
        decided = room(limit, running, applied, window, row["now"])
        jobs: builtins.list[Job] = []
        if decided.room > 0:
            params = claim_params(node, decided.room, lease, [queue], types)
            cur = await conn.execute(QUERIES["claim"], params, prepare=True)
            jobs = sorted((job_from_row(r) for r in await cur.fetchall()), key=ordering_key)
        more = 0
        if decided.room < limit:
            params = {**q, "types": None if types is None else list(types)}
            params["n"] = limit - decided.room
            more = (await fetch_one(await conn.execute(_MORE, params, prepare=True)))["n"]
        if applied.rate is not None:
            taken = decided.taken(len(jobs))
            params = {**q, "start": taken.start, "starts": taken.starts}
            await conn.execute(_SET_WINDOW, params, prepare=True)
    return limited_result(jobs, applied, decided, limit, more)


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


def _record(row: Row) -> QueueRecord:
    runtime = _runtime(row)
    return QueueRecord(
        row["name"],
        row["paused"],
        row["reason"],
        row["changed_by"],
        row["changed_at"],
        runtime.global_concurrency,
        runtime.rate,
        row["limits_changed_by"],
        row["limits_changed_at"],
    )


def _runtime(row: Row) -> FleetLimits:
    count, period = row["rate_limit"], row["rate_period"]
    rate = None if count is None or period is None else Rate(count, period)
    return FleetLimits(row["global_concurrency"], rate)


class QueueMethods:
    """These operations as methods of PostgresStore (which lists this class first among its
    bases, so that they implement the Store's abstract methods)."""

    queue_records = queue_records
    set_queue_paused = set_queue_paused
    set_queue_limits = set_queue_limits
    claim_limited = claim_limited
    queue_summaries = queue_summaries
    count_jobs = count_jobs
    bulk = bulk
    adjust = adjust
    record_audit = record_audit
    audit_records = audit_records
