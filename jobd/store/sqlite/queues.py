"""The SQLite store's operations on queues (the queues and audit_log tables of migration
0006): pausing, the queues' summary, bulk actions in batches, run-now and priority, the audit
trail.  Each write is one write transaction on the database thread, which SQLite holds alone;
one node uses the file, so notifications go to this process's listeners only."""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jobd.domain import IllegalTransition, Job
from jobd.errors import Conflict
from jobd.queue_limits import FleetLimits, Rate, Window, room
from jobd.store import workflows
from jobd.store.base import Changed, JobFilter, Notification, NotificationKind
from jobd.store.queues import (
    Adjustment,
    AuditEntry,
    AuditRecord,
    BulkAction,
    BulkBatch,
    BulkChange,
    LimitChange,
    LimitedClaim,
    QueueRecord,
    QueueSummary,
    bulk_filter,
    limited_result,
)
from jobd.store.sqlite.rows import dt, job_from_row, opt_dt, ts, update_row
from jobd.store.sqlite.sql import (
    COLUMNS,
    DELETE_JOBS,
    PRUNE_EDGES,
    UPDATE_JOB,
    _list_conditions,
    claim_select,
)
from jobd.store.sqlite.thread import write_transaction
from jobd.store.sqlite.workflows import SQLiteGraph

if TYPE_CHECKING:
    from jobd.store.sqlite.store import SQLiteStore

_COLUMNS = """name, paused, reason, changed_by, changed_at, global_concurrency, rate_limit,
       rate_period, limits_changed_by, limits_changed_at"""
_RECORDS = f"SELECT {_COLUMNS} FROM queues ORDER BY name"
_RECORD = f"SELECT {_COLUMNS} FROM queues WHERE name = ?"
_LIMITS = """
INSERT INTO queues (name, changed_at, global_concurrency, rate_limit, rate_period,
                    limits_changed_by, limits_changed_at)
VALUES (?1, ?7, ?2, ?3, ?4, ?6, ?7)
ON CONFLICT (name) DO UPDATE
   SET global_concurrency = CASE WHEN ?2 IS NOT NULL THEN ?2
                                 WHEN ?5 THEN NULL ELSE global_concurrency END,
       rate_limit = CASE WHEN ?3 IS NOT NULL THEN ?3 WHEN ?5 THEN NULL ELSE rate_limit END,
       rate_period = CASE WHEN ?3 IS NOT NULL THEN ?4 WHEN ?5 THEN NULL ELSE rate_period END,
       limits_changed_by = ?6, limits_changed_at = ?7
"""
# A limited claim's row: created if need be, then read (the write transaction holds it).
_ENSURE = "INSERT INTO queues (name, changed_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
_WINDOW = """
SELECT global_concurrency, rate_limit, rate_period, window_start, window_starts
  FROM queues WHERE name = ?
"""
_RUNNING = "SELECT count(*) FROM jobs WHERE state = 'running' AND queue = ?"
_SET_WINDOW = "UPDATE queues SET window_start = ?, window_starts = ? WHERE name = ?"
_PAUSE = """
INSERT INTO queues (name, paused, reason, changed_by, changed_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE
   SET paused = excluded.paused, reason = excluded.reason,
       changed_by = excluded.changed_by, changed_at = excluded.changed_at
"""
_BACKLOG = """
SELECT queue, state, count(*),
       min(CASE WHEN state = 'pending' AND run_at <= ? THEN run_at END)
  FROM jobs
 WHERE state NOT IN ('completed', 'failed', 'canceled')
 GROUP BY queue, state
"""
_FAILED = """
SELECT queue, count(*) FROM jobs WHERE state = 'failed' AND finished_at > ? GROUP BY queue
"""
_ADJUST = "UPDATE jobs SET run_at = ?, priority = ?, updated_at = ? WHERE id = ?"
_AUDIT = "INSERT INTO audit_log (at, actor, action, target, details) VALUES (?, ?, ?, ?, ?)"
_AUDIT_PAGE = """
SELECT id, at, actor, action, target, details FROM audit_log
 WHERE ? IS NULL OR id < ?
 ORDER BY id DESC
 LIMIT ?
"""


async def queue_records(store: SQLiteStore) -> builtins.list[QueueRecord]:
    rows = await store.db.run(lambda conn: conn.execute(_RECORDS).fetchall())
    return [_record(row) for row in rows]


async def set_queue_paused(
    store: SQLiteStore,
    name: str,
    paused: bool,
    *,
    reason: str | None = None,
    actor: str | None = None,
) -> QueueRecord:
    def run(conn: sqlite3.Connection) -> QueueRecord:
        with write_transaction(conn):
            conn.execute(_PAUSE, (name, int(paused), reason, actor, ts(store._clock())))
            return _record(conn.execute(_RECORD, (name,)).fetchone())

    record = await store.db.run(run)
    store._notify(Notification(NotificationKind.QUEUES, queue=name))
    if not paused:
        store._notify(Notification(NotificationKind.SUBMITTED, queue=name))
    return record


async def set_queue_limits(
    store: SQLiteStore, name: str, change: LimitChange, *, actor: str | None = None
) -> QueueRecord:
    rate = change.rate
    params = (
        name,
        change.global_concurrency,
        None if rate is None else rate.count,
        None if rate is None else rate.period,
        int(change.reset),
        actor,
        ts(store._clock()),
    )

    def run(conn: sqlite3.Connection) -> QueueRecord:
        with write_transaction(conn):
            conn.execute(_LIMITS, params)
            return _record(conn.execute(_RECORD, (name,)).fetchone())

    record = await store.db.run(run)
    store._notify(Notification(NotificationKind.QUEUES, queue=name))
    store._notify(Notification(NotificationKind.SUBMITTED, queue=name))  # room may have grown
    return record


async def claim_limited(
    store: SQLiteStore,
    node: str,
    queue: str,
    limit: int,
    *,
    lease: float,
    types: Sequence[str] | None,
    limits: FleetLimits,
) -> LimitedClaim:
    if limit < 1 or (types is not None and not types):
        return LimitedClaim([], limits)
    sql, filter_params = claim_select([queue], types, None)

    def run(conn: sqlite3.Connection) -> LimitedClaim:
        with write_transaction(conn):  # the write lock: claims take turns
            now = store._clock()
            conn.execute(_ENSURE, (queue, ts(now)))
            gc, count, period, start, starts = conn.execute(_WINDOW, (queue,)).fetchone()
            applied = limits.over(_runtime(gc, count, period))
            running = 0
            if applied.global_concurrency is not None:
                (running,) = conn.execute(_RUNNING, (queue,)).fetchone()
            decided = room(limit, running, applied, Window(start, starts), ts(now))
            jobs: list[Job] = []
            if decided.room > 0:
                jobs = store.claim_rows(conn, node, decided.room, lease, sql, filter_params)
            more = 0
            if decided.room < limit:
                left = conn.execute(sql, (ts(now), *filter_params, limit - decided.room))
                more = len(left.fetchall())
            if applied.rate is not None:
                window = decided.taken(len(jobs))
                conn.execute(_SET_WINDOW, (window.start, window.starts, queue))
        return limited_result(jobs, applied, decided, limit, more)

    return await store.db.run(run)


async def queue_summaries(store: SQLiteStore, failed_within: timedelta) -> list[QueueSummary]:
    def run(conn: sqlite3.Connection) -> list[QueueSummary]:
        now = store._clock()
        backlog = conn.execute(_BACKLOG, (ts(now),)).fetchall()
        failed = dict(conn.execute(_FAILED, (ts(now - failed_within),)).fetchall())
        by_queue: dict[str, tuple[dict[str, int], list[float]]] = {}
        for queue, state, n, oldest in backlog:
            by_state, due = by_queue.setdefault(queue, ({}, []))
            by_state[state] = n
            if oldest is not None:
                due.append(oldest)
        return [
            QueueSummary(
                name,
                by_queue.get(name, ({}, []))[0],
                failed.get(name, 0),
                dt(min(by_queue[name][1])) if name in by_queue and by_queue[name][1] else None,
            )
            for name in sorted(set(by_queue) | set(failed))
        ]

    return await store.db.run(run)


async def count_jobs(store: SQLiteStore, filters: JobFilter) -> int:
    where, params = _list_conditions(filters, None)
    sql = f"SELECT count(*) FROM jobs{where}"
    (n,) = await store.db.run(lambda conn: conn.execute(sql, params).fetchone())
    return int(n)


async def bulk(
    store: SQLiteStore, action: BulkAction, filters: JobFilter, after: int, batch: int
) -> BulkBatch:
    filters = bulk_filter(action, filters)
    where, params = _list_conditions(filters, None)
    where = (where + " AND" if where else " WHERE") + " id > ?"
    sql = f"SELECT {COLUMNS} FROM jobs{where} ORDER BY id LIMIT ?"

    def run(conn: sqlite3.Connection) -> tuple[list[Changed], list[Job], list[Job]]:
        with write_transaction(conn):
            jobs = [job_from_row(row) for row in conn.execute(sql, (*params, after, batch))]
            if not jobs:
                return [], [], []
            now = store._clock()
            graph = SQLiteGraph(conn)
            if action is BulkAction.PURGE:
                targets = [job for job in jobs if not workflows.needed(graph, job)]
                ids = json.dumps([job.id for job in targets])
                conn.execute(DELETE_JOBS, (ids,))
                conn.execute(PRUNE_EDGES, (ids,))
                return [Changed(j, j.state) for j in targets], jobs, []
            if action is BulkAction.RETRY:
                retried, dependents = workflows.retry_all(graph, jobs, now)
                changed = [Changed(job, b.state) for job, b in zip(retried, jobs, strict=True)]
            else:
                changed = [Changed(action.apply(job, now), job.state) for job in jobs]
                conn.executemany(UPDATE_JOB, [update_row(c.job) for c in changed])
                dependents = workflows.parents_ended(graph, [c.job for c in changed], now)
            return changed, jobs, dependents

    changed, examined, dependents = await store.db.run(run)
    store._notify_dependents(dependents)
    for c in changed:
        if action is BulkAction.CANCEL:
            store._notify_cancel_requested(c.job)
    if action is BulkAction.RETRY:
        store._notify_submitted([c.job for c in changed])
    if not examined:
        return BulkBatch([], 0, None)
    return BulkBatch([BulkChange.of(c) for c in changed], len(examined), examined[-1].id)


async def adjust(store: SQLiteStore, job_id: int, adjustment: Adjustment) -> Job:
    def run(conn: sqlite3.Connection) -> Job:
        with write_transaction(conn):
            before = store._get(conn, job_id)
            try:
                job = adjustment.apply(before, store._clock())
            except IllegalTransition as exc:
                raise Conflict(str(exc), id=job_id, state=exc.current.value) from None
            conn.execute(_ADJUST, (ts(job.run_at), job.priority, ts(job.updated_at), job.id))
            return job

    job = await store.db.run(run)
    if adjustment.run_now:
        store._notify_submitted([job])
    return job


async def record_audit(store: SQLiteStore, entry: AuditEntry) -> AuditRecord:
    def run(conn: sqlite3.Connection) -> AuditRecord:
        now = store._clock()
        with write_transaction(conn):
            details = json.dumps(entry.details, default=str)
            cur = conn.execute(_AUDIT, (ts(now), entry.actor, entry.action, entry.target, details))
            assert cur.lastrowid is not None
            return AuditRecord(cur.lastrowid, now, entry)

    return await store.db.run(run)


async def audit_records(
    store: SQLiteStore, limit: int, before: int | None = None
) -> builtins.list[AuditRecord]:
    rows = await store.db.run(
        lambda conn: conn.execute(_AUDIT_PAGE, (before, before, limit)).fetchall()
    )
    return [
        AuditRecord(id_, dt(at), AuditEntry(actor, action, target, json.loads(details)))
        for id_, at, actor, action, target, details in rows
    ]


def _record(row: Any) -> QueueRecord:
    name, paused, reason, changed_by, changed_at, gc, count, period, by, at = row
    runtime = _runtime(gc, count, period)
    return QueueRecord(
        name,
        bool(paused),
        reason,
        changed_by,
        opt_dt(changed_at),
        runtime.global_concurrency,
        runtime.rate,
        by,
        opt_dt(at),
    )


def _runtime(gc: int | None, count: int | None, period: float | None) -> FleetLimits:
    rate = None if count is None or period is None else Rate(int(count), float(period))
    return FleetLimits(gc, rate)


class QueueMethods:
    """These operations as methods of SQLiteStore (listed first among its bases)."""

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
