"""The memory store's operations on queues (jobd.store.queues): the same rules as the SQL
stores, on the store's dictionaries under its lock."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobd.domain import IllegalTransition, Job, State
from jobd.errors import Conflict
from jobd.queue_limits import FleetLimits, Window, room
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
    bulk_candidates,
    bulk_filter,
    limited_result,
)

if TYPE_CHECKING:
    from jobd.store.memory import MemoryStore


async def queue_records(store: MemoryStore) -> builtins.list[QueueRecord]:
    with store._lock:
        return [store._queues[name] for name in sorted(store._queues)]


async def set_queue_paused(
    store: MemoryStore,
    name: str,
    paused: bool,
    *,
    reason: str | None = None,
    actor: str | None = None,
) -> QueueRecord:
    with store._lock:
        before = store._queues.get(name, QueueRecord(name, False))
        record = replace(
            before, paused=paused, reason=reason, changed_by=actor, changed_at=store._clock()
        )
        store._queues[name] = record
    store._notify(Notification(NotificationKind.QUEUES, queue=name))
    if not paused:
        store._notify(Notification(NotificationKind.SUBMITTED, queue=name))
    return record


async def set_queue_limits(
    store: MemoryStore, name: str, change: LimitChange, *, actor: str | None = None
) -> QueueRecord:
    with store._lock:
        now = store._clock()
        before = store._queues.get(name, QueueRecord(name, False, changed_at=now))
        after = change.apply(before.runtime_limits)
        record = replace(
            before,
            global_concurrency=after.global_concurrency,
            rate=after.rate,
            limits_changed_by=actor,
            limits_changed_at=now,
        )
        store._queues[name] = record
    store._notify(Notification(NotificationKind.QUEUES, queue=name))
    store._notify(Notification(NotificationKind.SUBMITTED, queue=name))  # room may have grown
    return record


async def claim_limited(
    store: MemoryStore,
    node: str,
    queue: str,
    limit: int,
    *,
    lease: float,
    types: Sequence[str] | None,
    limits: FleetLimits,
) -> LimitedClaim:
    with store._lock:
        record = store._queues.get(queue, QueueRecord(queue, False))
        applied = limits.over(record.runtime_limits)
        held = store._jobs.values()
        running = sum(1 for j in held if j.queue == queue and j.state is State.RUNNING)
        window = store._windows.get(queue, Window())
        decided = room(limit, running, applied, window, store._clock().timestamp())
        ready = store._claimable([queue], types)
        jobs = store._take(node, ready[: decided.room], lease)
        store._windows[queue] = decided.taken(len(jobs))
        more = min(len(ready) - len(jobs), limit - decided.room)
    return limited_result(jobs, applied, decided, limit, more)


async def queue_summaries(store: MemoryStore, failed_within: timedelta) -> list[QueueSummary]:
    with store._lock:
        now = store._clock()
        jobs = list(store._jobs.values())
    by_state: dict[str, dict[str, int]] = {}
    oldest: dict[str, datetime] = {}
    failed: dict[str, int] = {}
    for job in jobs:
        if job.state is State.FAILED and job.finished_at and job.finished_at > now - failed_within:
            failed[job.queue] = failed.get(job.queue, 0) + 1
        if job.state.terminal:
            continue
        counts = by_state.setdefault(job.queue, {})
        counts[job.state.value] = counts.get(job.state.value, 0) + 1
        if job.state is State.PENDING and job.run_at <= now:
            oldest[job.queue] = min(oldest.get(job.queue, job.run_at), job.run_at)
    return [
        QueueSummary(name, by_state.get(name, {}), failed.get(name, 0), oldest.get(name))
        for name in sorted(set(by_state) | set(failed))
    ]


async def count_jobs(store: MemoryStore, filters: JobFilter) -> int:
    with store._lock:
        return sum(1 for job in store._jobs.values() if filters.matches(job))


async def bulk(
    store: MemoryStore, action: BulkAction, filters: JobFilter, after: int, batch: int
) -> BulkBatch:
    filters = bulk_filter(action, filters)
    with store._lock:
        jobs = bulk_candidates(list(store._jobs.values()), filters, after, batch)
        if not jobs:
            return BulkBatch([], 0, None)
        now = store._clock()
        graph = store.graph()
        if action is BulkAction.PURGE:
            targets = [job for job in jobs if not workflows.needed(graph, job)]
            changed = [Changed(job, job.state) for job in targets]
            store.forget([job.id for job in targets])
            dependents: list[Job] = []
        elif action is BulkAction.RETRY:
            retried, dependents = workflows.retry_all(graph, jobs, now)
            changed = [
                Changed(job, before.state) for job, before in zip(retried, jobs, strict=True)
            ]
        else:
            changed = [Changed(action.apply(job, now), job.state) for job in jobs]
            for c in changed:
                store._jobs[c.job.id] = c.job
            dependents = workflows.parents_ended(graph, [c.job for c in changed], now)
    store._notify_dependents(dependents)
    for c in changed:
        if action is BulkAction.CANCEL:
            store._notify_cancel_requested(c.job)
    if action is BulkAction.RETRY:
        store._notify_submitted([c.job for c in changed])
    return BulkBatch([BulkChange.of(c) for c in changed], len(jobs), jobs[-1].id)


async def adjust(store: MemoryStore, job_id: int, adjustment: Adjustment) -> Job:
    with store._lock:
        try:
            job = adjustment.apply(store._get(job_id), store._clock())
        except IllegalTransition as exc:
            raise Conflict(str(exc), id=job_id, state=exc.current.value) from None
        store._jobs[job_id] = job
    if adjustment.run_now:
        store._notify_submitted([job])
    return job


async def record_audit(store: MemoryStore, entry: AuditEntry) -> AuditRecord:
    with store._lock:
        record = AuditRecord(len(store._audit) + 1, store._clock(), entry)
        store._audit.append(record)
    return record


async def audit_records(
    store: MemoryStore, limit: int, before: int | None = None
) -> builtins.list[AuditRecord]:
    with store._lock:
        records = [r for r in reversed(store._audit) if before is None or r.id < before]
    return records[:limit]


class QueueMethods:
    """These operations as methods of MemoryStore (listed first among its bases)."""

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
