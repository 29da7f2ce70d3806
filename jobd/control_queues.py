"""The control methods that operate the queues (jobd.protocol_queues): `queues`, `queue_pause`,
`queue_resume`, `queue_limit`, `cancel_many`, `retry_many`, `purge`, `run_now`, `set_priority`
and `audit`, over the same store and supervisor as jobd.control's Operations, which hands them
their calls with the caller's credentials.  Every method that changes something is recorded in
the audit trail (`record`: the one call any operator action makes, the schedules' too)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobd.control_socket import Peer
from jobd.domain import Job, State
from jobd.errors import Unavailable
from jobd.protocol import Call
from jobd.protocol_queues import (
    MAX_ACTOR,
    AdjustParams,
    AuditParams,
    BulkParams,
    LimitParams,
    PauseParams,
)
from jobd.queue_limits import FleetLimits
from jobd.store.queues import (
    FAILED_WITHIN,
    Adjustment,
    AuditEntry,
    BulkAction,
    BulkBatch,
    BulkChange,
    QueueRecord,
    QueueSummary,
    bulk_filter,
)

if TYPE_CHECKING:
    from jobd.control import Operations

log = logging.getLogger("jobd.control")

#: How long health waits for the paused queues (the rest of its answer is already known).
PAUSED_TIMEOUT = 1.0


#: Who makes the control call being served, and through what (see actor_of): set for every
#: call by Operations.call, read by QueueOperations.record.
CALLER: ContextVar[tuple[str, str | None]] = ContextVar("jobd_caller", default=("unknown", None))


def actor_of(peer: Peer | None, claimed: object) -> tuple[str, str | None]:
    """Who acts, and through what: the socket's peer (`uid:1000`), or the principal a proxy
    on that socket says it acts for in the call's `actor` member (the HTTP shim's
    `token:1a2b3c4d`), then `via` the peer."""
    uid = f"uid:{peer.uid}" if peer is not None and peer.uid is not None else "uid:unknown"
    if isinstance(claimed, str) and 0 < len(claimed) <= MAX_ACTOR:
        return claimed, uid
    return uid, None


class QueueOperations:
    def __init__(self, ops: Operations):
        self.ops = ops
        self.methods: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "queues": self.queues,
            "queue_pause": self.queue_pause,
            "queue_resume": self.queue_resume,
            "queue_limit": self.queue_limit,
            "cancel_many": self.bulk,
            "retry_many": self.bulk,
            "purge": self.bulk,
            "run_now": self.adjust,
            "set_priority": self.adjust,
            "audit": self.audit,
        }

    @staticmethod
    def enter(call: Call, peer: Peer | None) -> None:
        """Remember who makes `call` for the rest of it (a connection's calls run one at a
        time in its own task, whose context this is)."""
        CALLER.set(actor_of(peer, call.params.get("actor")))

    async def record(
        self, action: str, target: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        """Record an operator's action by the caller of the control call being served, in the
        audit trail and the log: the one line every operator action adds, e.g.
        `await self.queues.record("schedule_pause", name)` in an Operations method.  A failure
        to record is logged, not raised: the action has been done."""
        actor, via = CALLER.get()
        details = dict(details or {})
        if via is not None:
            details["via"] = via
        entry = AuditEntry(actor, action, target, details)
        log.info("operator action", extra={"actor": actor, "action": action, "target": target})
        try:
            await self.ops._store(self.ops.store.record_audit(entry))
        except Exception as exc:  # the store's trouble, whatever it is
            log.error("could not record an operator action in the audit trail: %s", exc)

    # --- queues --------------------------------------------------------------------------------

    async def queues(self, _: Any) -> dict[str, Any]:
        """Every queue with jobs, failures in the last hour, a pause, or a limit here."""
        store, ops = self.ops.store, self.ops
        summaries: list[QueueSummary] = await ops._store(store.queue_summaries(FAILED_WITHIN))
        records: list[QueueRecord] = await ops._store(store.queue_records())
        settings = ops.supervisor.settings
        limits: dict[str, int] = dict(getattr(settings, "queue_limits", {}) or {})
        fleet: dict[str, FleetLimits] = dict(getattr(settings, "fleet_limits", {}) or {})
        by_name = {s.name: s for s in summaries}
        paused = {r.name: r for r in records}
        now = datetime.now(UTC)
        names = sorted(
            set(by_name)
            | {r.name for r in records if r.paused or r.runtime_limits}
            | set(limits)
            | set(fleet)
        )
        return {
            "queues": [
                {
                    **self._queue(n, by_name, paused, now),
                    **limits_of(n, limits, fleet, paused.get(n)),
                }
                for n in names
            ]
        }

    @staticmethod
    def _queue(
        name: str,
        summaries: dict[str, QueueSummary],
        records: dict[str, QueueRecord],
        now: datetime,
    ) -> dict[str, Any]:
        s = summaries.get(name, QueueSummary(name))
        record = records.get(name, QueueRecord(name, False))
        oldest = None if s.oldest_due_at is None else (now - s.oldest_due_at).total_seconds()
        return {
            "name": name,
            "pending": s.count("pending"),
            "running": s.count("running"),
            "waiting": s.count("waiting"),
            "failed_last_hour": s.failed_recently,
            "oldest_pending_age": None if oldest is None else round(max(oldest, 0.0), 3),
            "paused": record.paused,
            "pause": record.to_dict() if record.paused else None,
        }

    async def queue_limit(self, p: LimitParams) -> dict[str, Any]:
        """Set (or reset) the queue's runtime limits for the whole fleet; the answer gives
        them as stored and the limits in force on this node."""
        actor = CALLER.get()[0]
        call = self.ops.store.set_queue_limits(p.name, p.change, actor=actor)
        record: QueueRecord = await self.ops._store(call)
        await self.record("queue_limit", p.name, p.details())
        settings = self.ops.supervisor.settings
        limits: dict[str, int] = dict(getattr(settings, "queue_limits", {}) or {})
        fleet: dict[str, FleetLimits] = dict(getattr(settings, "fleet_limits", {}) or {})
        return {
            "queue": {"name": p.name, **limits_of(p.name, limits, fleet, record)},
            "runtime": record.limits_dict(),
        }

    async def queue_pause(self, p: PauseParams) -> dict[str, Any]:
        return await self._set_paused(p, True)

    async def queue_resume(self, p: PauseParams) -> dict[str, Any]:
        return await self._set_paused(p, False)

    async def _set_paused(self, p: PauseParams, paused: bool) -> dict[str, Any]:
        actor = CALLER.get()[0]
        call = self.ops.store.set_queue_paused(p.name, paused, reason=p.reason, actor=actor)
        record: QueueRecord = await self.ops._store(call)
        action = "queue_pause" if paused else "queue_resume"
        details = {"reason": p.reason} if p.reason else {}
        await self.record(action, p.name, details)
        return {"queue": record.to_dict()}

    async def paused_warnings(self) -> list[str]:
        """Health's warnings for the paused queues (the status stays ok: a pause is meant)."""
        try:
            records = await self.ops._store(self.ops.store.queue_records(), PAUSED_TIMEOUT)
        except Unavailable:
            return []
        return [
            f"queue {r.name!r} is paused" + (f": {r.reason}" if r.reason else "")
            for r in records
            if r.paused
        ]

    # --- bulk actions --------------------------------------------------------------------------

    async def bulk(self, p: BulkParams) -> dict[str, Any]:
        """`p.action` on the jobs matching the filter, `p.batch` per transaction, at most
        `p.limit` in this call; `next_cursor` continues where it stopped (None: done)."""
        if p.dry_run:
            filters = bulk_filter(p.action, p.filters)
            return {"matched": await self.ops._store(self.ops.store.count_jobs(filters))}
        started = time.monotonic()
        changed = examined = busy = batches = 0
        after, more = p.after, True
        while more and changed < p.limit:
            size = min(p.batch, p.limit - changed)
            batch: BulkBatch = await self.ops._store(
                self.ops.store.bulk(p.action, p.filters, after, size)
            )
            batches += 1
            changed += len(batch.changed)
            examined, busy = examined + batch.examined, busy + batch.busy
            await self._tell(p.action, batch.changed)
            more = batch.last_id is not None and batch.examined >= size
            after = batch.last_id if batch.last_id is not None else after
            await asyncio.sleep(0)  # the control server's other clients get their turn
        answer = {
            "action": p.action.value,
            "changed": changed,
            "examined": examined,
            "busy": busy,
            "batches": batches,
            "batch_size": p.batch,
            "seconds": round(time.monotonic() - started, 3),
            "next_cursor": p.cursor(after) if more else None,
        }
        name = {"cancel": "cancel_many", "retry": "retry_many"}.get(p.action.value, "purge")
        details = {"filter": p.to_dict(), **{k: answer[k] for k in ("changed", "batches")}}
        await self.record(name, None, details | {"continued": p.after > 0})
        return answer

    async def _tell(self, action: BulkAction, changed: list[BulkChange]) -> None:
        """Count and log the changes on the supervisor, and stop this node's canceled jobs."""
        if not changed or action is BulkAction.PURGE:
            return
        sup = self.ops.supervisor
        if action is BulkAction.RETRY:
            for previous in (State.FAILED, State.CANCELED):
                jobs = [c for c in changed if c.previous is previous]
                if jobs:
                    self._events("requeued", jobs, previous.value)
            return
        ended = [c for c in changed if c.state is State.CANCELED]
        if ended:
            self._events("canceled", ended, "pending")
        ours = [c.id for c in changed if c.state is State.RUNNING and c.lease_owner == sup.node]
        if ours:
            await self.ops.on_supervisor.call(lambda: [sup.cancel_running(i) for i in ours])

    def _events(self, event: str, changed: list[BulkChange], source: str) -> None:
        """As Operations._tell, with a bulk action's changes rather than Jobs."""
        sup = self.ops.supervisor
        self.ops.on_supervisor.post(lambda: sup.job_events(event, changed, source))

    # --- one pending job -----------------------------------------------------------------------

    async def adjust(self, p: AdjustParams) -> dict[str, Any]:
        adjustment = Adjustment(run_now=p.run_now, priority=p.priority)
        job: Job = await self.ops._store(self.ops.store.adjust(p.id, adjustment))
        action = "run_now" if p.run_now else "set_priority"
        details = {} if p.priority is None else {"priority": p.priority}
        await self.record(action, str(p.id), details)
        return {"job": job.to_dict()}

    # --- the audit trail -----------------------------------------------------------------------

    async def audit(self, p: AuditParams) -> dict[str, Any]:
        records = await self.ops._store(self.ops.store.audit_records(p.limit + 1, p.before))
        more = len(records) > p.limit
        records = records[: p.limit]
        return {
            "records": [r.to_dict() for r in records],
            "next_before": records[-1].id if more else None,
        }


def limits_of(
    name: str,
    node: dict[str, int],
    file: dict[str, FleetLimits],
    record: QueueRecord | None,
) -> dict[str, Any]:
    """The limits in force for `name` on this node (`limits`) and where each comes from
    (`limit_sources`: `file`, or `runtime` for a value set with `queue_limit` over it)."""
    runtime = record.runtime_limits if record is not None else FleetLimits()
    mine = file.get(name, FleetLimits())
    limits: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if name in node:
        limits["concurrency"], sources["concurrency"] = node[name], "file"
    for key, here, there in (
        ("global_concurrency", mine.global_concurrency, runtime.global_concurrency),
        ("rate", mine.rate, runtime.rate),
    ):
        value = there if there is not None else here
        if value is not None:
            limits[key] = value if isinstance(value, int) else str(value)
            sources[key] = "runtime" if there is not None else "file"
    return {"limits": limits, "limit_sources": sources}
