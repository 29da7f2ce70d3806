"""The store as the supervisor sees it: the store's async interface, every call run under a
deadline where the store runs (the I/O thread, docs/adr/0022; PostgreSQL's on the supervisor's
own loop, docs/adr/0040), its notifications delivered on the supervisor's loop.

A call whose deadline passes is Unavailable at once, like a refused connection: the supervisor
keeps what it was writing and retries, and its loop never waits for the database.  The call
left behind is cancelled where it runs, without being waited for; psycopg then cancels the
statement, or closes the connection when the server does not answer that either, and the pool
opens a new one.

Every call that comes back counts as a round trip (`on_answer`): how long ago the last one was is
what `health` reports, without waiting for a new one."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from jobd.domain import DEFAULT_MAX_ATTEMPTS, Job, NewJob, State
from jobd.errors import Unavailable
from jobd.queue_limits import FleetLimits
from jobd.schedules import Schedule
from jobd.store import (
    Changed,
    Counts,
    JobFilter,
    Links,
    Notification,
    NotificationKind,
    Outcome,
    Page,
    ProgressReport,
    Start,
    Store,
    Submitted,
)
from jobd.store.activity import Activity
from jobd.store.base import Listener
from jobd.store.nodes import Fleet, NodeReport
from jobd.store.queues import (
    Adjustment,
    AuditEntry,
    AuditRecord,
    BulkAction,
    BulkBatch,
    LimitChange,
    LimitedClaim,
    QueueRecord,
    QueueSummary,
)
from jobd.store.schedules import ScheduleRecord, TickResult
from jobd.supervisor.crossing import Crossing
from jobd.write_priority import PRIORITY

T = TypeVar("T")

#: Deadline of the store's maintenance and pruning (a VACUUM, batches of deletes): these do
#: much more than one statement, and nothing waits for them.
MAINTENANCE_DEADLINE = 600.0


class StoreProxy(Store):
    def __init__(
        self,
        store: Store,
        crossing: Crossing,
        home: asyncio.AbstractEventLoop,
        announcers: Sequence[Store] = (),
    ):
        super().__init__()
        self.store = store
        #: The process's other stores (the control server's, on a thread of its own): what
        #: they announce (a submit's SUBMITTED, a cancel's CANCEL) reaches the supervisor too.
        self._announcers = tuple(announcers)
        self.kind = store.kind
        self._crossing = crossing
        self._home = home  # the supervisor's loop: where notifications are delivered
        #: Called on the supervisor's loop for every round trip that came back.
        self.on_answer: Callable[[], None] = lambda: None
        self._relays: dict[Listener, Listener] = {}

    async def _call(self, call: Awaitable[T], timeout: float | None = None) -> T:
        result = await self._crossing.run(_awaiting(call), timeout)
        self.on_answer()
        return result

    async def _answered(self, call: Awaitable[T], timeout: float | None = None) -> T:
        """`_call`, where an error the store raised is an answer too (NotFound, Conflict)."""
        try:
            return await self._call(call, timeout)
        except Unavailable:
            raise
        except Exception:
            self.on_answer()
            raise

    # --- life cycle: the daemon opens and closes the store on its own thread ---------------

    async def open(self) -> None:
        await self._call(self.store.open())

    async def close(self) -> None:
        await self._call(self.store.close())

    async def migrate(self) -> list[str]:
        return await self._call(self.store.migrate(), MAINTENANCE_DEADLINE)

    async def pending_migrations(self) -> list[str]:
        return await self._call(self.store.pending_migrations())

    async def ping(self) -> None:
        await self._call(self.store.ping())

    # --- clients' operations -------------------------------------------------------------

    async def submit_many(self, specs: Sequence[NewJob]) -> list[Submitted]:
        return await self._answered(self.store.submit_many(specs))

    async def get(self, job_id: int) -> Job:
        return await self._answered(self.store.get(job_id))

    async def list(
        self, filters: JobFilter = JobFilter(), limit: int = 100, cursor: str | None = None
    ) -> Page:
        return await self._answered(self.store.list(filters, limit, cursor))

    async def request_cancel(self, job_id: int) -> Job:
        return await self._answered(self.store.request_cancel(job_id))

    async def operator_retry(self, job_id: int) -> Changed:
        return await self._answered(self.store.operator_retry(job_id))

    async def counts(self) -> Counts:
        return await self._call(self.store.counts())

    async def links(self, job_id: int) -> Links:
        return await self._answered(self.store.links(job_id))

    async def parent_results(self, job_id: int) -> dict[int, Any]:
        return await self._answered(self.store.parent_results(job_id))

    # --- the supervisor's operations -----------------------------------------------------

    async def claim(
        self,
        node: str,
        limit: int,
        *,
        lease: float,
        queues: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        exclude_queues: Sequence[str] | None = None,
    ) -> builtins.list[Job]:
        jobs = await self._call(
            self.store.claim(
                node, limit, lease=lease, queues=queues, types=types, exclude_queues=exclude_queues
            )
        )
        if queues is None:  # the node's claim, not one limited queue's
            PRIORITY.claimed(full=len(jobs) >= limit > 0)
        return jobs

    async def heartbeat(
        self, node: str, lease: float, job_ids: Collection[int] | None = None
    ) -> builtins.list[int]:
        return await self._call(self.store.heartbeat(node, lease, job_ids))

    async def finish(
        self, node: str, outcomes: Sequence[Outcome], starts: Sequence[Start] = ()
    ) -> dict[int, State]:
        call = self.store.finish(node, outcomes, starts)
        PRIORITY.begin()
        try:  # a failed or timed-out write-back releases the submits waiting on it too
            return await self._call(call)
        finally:
            PRIORITY.end()

    async def record_progress(
        self, node: str, reports: Sequence[ProgressReport]
    ) -> builtins.list[int]:
        return await self._call(self.store.record_progress(node, reports))

    async def recover_expired(self) -> builtins.list[Job]:
        return await self._call(self.store.recover_expired())

    async def prune(self, older_than: timedelta | None, batch: int = 1000) -> int:
        return await self._call(self.store.prune(older_than, batch), MAINTENANCE_DEADLINE)

    async def maintain(self) -> bool:
        return await self._call(self.store.maintain(), MAINTENANCE_DEADLINE)

    async def report_node(self, report: NodeReport) -> None:
        await self._call(self.store.report_node(report))

    async def fleet(self, lease: float) -> Fleet:
        return await self._call(self.store.fleet(lease))

    async def prune_nodes(self, older_than: timedelta) -> int:
        return await self._call(self.store.prune_nodes(older_than), MAINTENANCE_DEADLINE)

    # --- schedules: the default deadline, like any one-transaction write -------------------

    async def enqueue_ticks(
        self, schedule: Schedule, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> TickResult:
        return await self._call(self.store.enqueue_ticks(schedule, default_max_attempts))

    async def trigger_schedule(
        self, schedule: Schedule, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> Job:
        return await self._answered(self.store.trigger_schedule(schedule, default_max_attempts))

    async def schedule_records(self) -> builtins.list[ScheduleRecord]:
        return await self._call(self.store.schedule_records())

    async def set_schedule_paused(self, name: str, paused: bool) -> ScheduleRecord:
        return await self._answered(self.store.set_schedule_paused(name, paused))

    # --- queues: the default deadline (a bulk batch is one bounded transaction) ----------------

    async def queue_records(self) -> builtins.list[QueueRecord]:
        return await self._call(self.store.queue_records())

    async def set_queue_paused(
        self, name: str, paused: bool, *, reason: str | None = None, actor: str | None = None
    ) -> QueueRecord:
        call = self.store.set_queue_paused(name, paused, reason=reason, actor=actor)
        return await self._answered(call)

    async def set_queue_limits(
        self, name: str, change: LimitChange, *, actor: str | None = None
    ) -> QueueRecord:
        return await self._answered(self.store.set_queue_limits(name, change, actor=actor))

    async def claim_limited(
        self,
        node: str,
        queue: str,
        limit: int,
        *,
        lease: float,
        types: Sequence[str] | None,
        limits: FleetLimits,
    ) -> LimitedClaim:
        call = self.store.claim_limited(node, queue, limit, lease=lease, types=types, limits=limits)
        return await self._call(call)

    async def activity(self) -> Activity:
        return await self._call(self.store.activity())

    async def queue_summaries(self, failed_within: timedelta) -> builtins.list[QueueSummary]:
        return await self._call(self.store.queue_summaries(failed_within))

    async def count_jobs(self, filters: JobFilter) -> int:
        return await self._answered(self.store.count_jobs(filters))

    async def bulk(
        self, action: BulkAction, filters: JobFilter, after: int, batch: int
    ) -> BulkBatch:
        return await self._answered(self.store.bulk(action, filters, after, batch))

    async def adjust(self, job_id: int, adjustment: Adjustment) -> Job:
        return await self._answered(self.store.adjust(job_id, adjustment))

    async def record_audit(self, entry: AuditEntry) -> AuditRecord:
        return await self._answered(self.store.record_audit(entry))

    async def audit_records(
        self, limit: int, before: int | None = None
    ) -> builtins.list[AuditRecord]:
        return await self._call(self.store.audit_records(limit, before))

    # --- notifications: heard on the I/O thread, delivered on the supervisor's loop ----------

    def add_listener(self, listener: Listener) -> None:
        def relay(notification: Notification) -> None:
            # The supervisor acts on new work and cancels only.  A finished job is announced
            # once per job, and each crossing costs a write to the loop's wake-up pipe and a
            # hand-over of the interpreter lock: relaying those halved the burn-down.
            if notification.kind is NotificationKind.FINISHED:
                return
            with contextlib.suppress(RuntimeError):  # the supervisor's loop has closed
                self._home.call_soon_threadsafe(listener, notification)

        self._relays[listener] = relay
        for store in (self.store, *self._announcers):
            store.add_listener(relay)

    def remove_listener(self, listener: Listener) -> None:
        relay = self._relays.pop(listener, None)
        if relay is not None:
            for store in (self.store, *self._announcers):
                store.remove_listener(relay)


async def _awaiting(call: Awaitable[T]) -> T:
    return await call
