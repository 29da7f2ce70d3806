"""A store in this process's memory: for unit tests and `--store memory://` throwaway runs.

Thread-safe (one lock around every operation); nothing survives the process."""

from __future__ import annotations

import builtins
import dataclasses
import itertools
import threading
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from jobd.clock import utcnow
from jobd.domain import DEFAULT_MAX_ATTEMPTS, IllegalTransition, Job, NewJob, State, prunable
from jobd.errors import Conflict, NotFound
from jobd.queue_limits import Window
from jobd.schedules import Schedule
from jobd.store.activity import memory_activity
from jobd.store.base import (
    Changed,
    Clock,
    CountRow,
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
    check_limit,
    decode_cursor,
    encode_cursor,
    lease_until,
    ordering_key,
    outcome_applied,
    owns,
    storable_outcome,
    validate_specs,
)
from jobd.store.memory_queues import QueueMethods
from jobd.store.nodes import Fleet, NodeReport, NodeStatus
from jobd.store.queues import AuditRecord, QueueRecord
from jobd.store.schedules import (
    HISTORY_KEPT,
    RunKind,
    ScheduleRecord,
    TickResult,
    decide,
    other_definition,
    tick_job,
)
from jobd.store.workflows import (
    batch_order,
    connected,
    needed,
    parents_ended,
    resolve_after,
    retry_all,
    unknown_parent,
    wait_for_parents,
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Run:
    """A row of a schedule's history."""

    tick: datetime
    job_id: int
    kind: RunKind


class _Graph:
    """The memory store's jobs and edges as jobd.store.workflows walks them (under its lock)."""

    def __init__(self, store: MemoryStore):
        self._store = store

    def job(self, job_id: int) -> Job | None:
        return self._store._jobs.get(job_id)

    def children_of(self, job_id: int) -> list[int]:
        return self._store._children.get(job_id, [])

    def parents_of(self, job_id: int) -> tuple[int, ...]:
        job = self._store._jobs.get(job_id)
        return job.parents if job is not None else ()

    def save(self, job: Job) -> None:
        self._store._jobs[job.id] = job


class MemoryStore(QueueMethods, Store):
    kind = "memory"

    def __init__(self, clock: Clock = utcnow):
        super().__init__()
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._keys: dict[str, int] = {}
        self._next_id = 1
        self._tokens = itertools.count(1)  # lease tokens, one per claim
        self._nodes: dict[str, tuple[NodeReport, datetime]] = {}  # with its last heartbeat
        self._children: dict[int, list[int]] = {}  # the workflow edges, parent -> children
        self._schedules: dict[str, ScheduleRecord] = {}
        self._runs: dict[str, list[_Run]] = {}  # each schedule's history, oldest first
        self._queues: dict[str, QueueRecord] = {}  # jobd.store.memory_queues
        self._windows: dict[str, Window] = {}  # each rate-limited queue's window
        self._audit: list[AuditRecord] = []
        #: The fleet's minimum node version (a migration sets it in the SQL stores).
        self.min_node_version: str | None = None

    async def migrate(self) -> list[str]:
        return []

    async def pending_migrations(self) -> list[str]:
        return []

    async def ping(self) -> None:
        return None

    async def submit_many(self, specs: Sequence[NewJob]) -> list[Submitted]:
        validate_specs(specs)
        out = []
        with self._lock:
            now = self._clock()
            self._check_parents(specs)
            for spec in specs:
                existing = self._keys.get(spec.idempotency_key) if spec.idempotency_key else None
                if existing is not None:
                    out.append(Submitted(self._jobs[existing], created=False))
                    continue
                out.append(Submitted(self._insert(spec, now), created=True))
            out = self._link(specs, out, now)
        for queue in {s.job.queue for s in out if s.created and s.job.state is State.PENDING}:
            self._notify(Notification(NotificationKind.SUBMITTED, queue=queue))
        return out

    def _check_parents(self, specs: Sequence[NewJob]) -> None:
        for index, spec in enumerate(specs):
            for parent in spec.after:
                if isinstance(parent, int) and parent not in self._jobs:
                    raise unknown_parent(spec, parent, index, len(specs))

    def _link(
        self, specs: Sequence[NewJob], out: list[Submitted], now: datetime
    ) -> list[Submitted]:
        """The batch's new jobs with parents wait for them, parents first (batch_order)."""
        ids: list[int | None] = [s.job.id for s in out]
        graph = _Graph(self)
        for index in batch_order(specs):
            submitted = out[index]
            if not submitted.created or not specs[index].after:
                continue
            parents = resolve_after(specs[index], ids)
            for parent in parents:
                self._children.setdefault(parent, []).append(submitted.job.id)
            job = dataclasses.replace(submitted.job, parents=parents)
            out[index] = Submitted(wait_for_parents(graph, job, now), created=True)
        return out

    def _insert(self, spec: NewJob, now: datetime) -> Job:
        job = Job.new(self._next_id, spec, now)
        self._next_id += 1
        self._jobs[job.id] = job
        if spec.idempotency_key:
            self._keys[spec.idempotency_key] = job.id
        return job

    async def get(self, job_id: int) -> Job:
        with self._lock:
            return self._get(job_id)

    def _get(self, job_id: int) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFound(f"job {job_id} not found", id=job_id) from None

    async def list(
        self, filters: JobFilter = JobFilter(), limit: int = 100, cursor: str | None = None
    ) -> Page:
        limit = check_limit(limit)
        before = decode_cursor(cursor) if cursor else None
        with self._lock:
            ids = sorted(self._jobs, reverse=True)
            workflow = None
            if filters.workflow is not None:
                workflow = connected(_Graph(self), filters.workflow)
            matched = []
            for job_id in ids:
                if before is not None and job_id >= before:
                    continue
                job = self._jobs[job_id]
                if filters.matches(job) and (workflow is None or job_id in workflow):
                    matched.append(job)
                    if len(matched) > limit:
                        break
        more = len(matched) > limit
        jobs = matched[:limit]
        return Page(jobs, encode_cursor(jobs[-1].id) if more else None)

    async def request_cancel(self, job_id: int) -> Job:
        with self._lock:
            now = self._clock()
            job = self._apply(job_id, lambda j: j.request_cancel(now))
            dependents = parents_ended(_Graph(self), [job], now)
        self._notify_cancel_requested(job)
        self._notify_dependents(dependents)
        return job

    async def operator_retry(self, job_id: int) -> Changed:
        with self._lock:
            now = self._clock()
            before = self._get(job_id)
            try:
                (job,), dependents = retry_all(self.graph(), [before], now)
            except IllegalTransition as exc:
                raise Conflict(str(exc), id=job_id, state=exc.current.value) from None
            previous = before.state
        self._notify_retried(job)
        self._notify_dependents(dependents)
        return Changed(job, previous)

    # --- workflows ----------------------------------------------------------------------

    async def links(self, job_id: int) -> Links:
        with self._lock:
            job = self._get(job_id)
            unfinished = [
                p for p in job.parents if p in self._jobs and not self._jobs[p].state.terminal
            ]
            return Links(sorted(self._children.get(job_id, ())), unfinished)

    async def parent_results(self, job_id: int) -> dict[int, Any]:
        with self._lock:
            job = self._get(job_id)
            parents = [self._jobs.get(i) for i in job.parents]
            return {p.id: p.result for p in parents if p is not None}

    def _apply(self, job_id: int, change: Callable[[Job], Job]) -> Job:
        try:
            job = change(self._get(job_id))
        except IllegalTransition as exc:
            raise Conflict(str(exc), id=job_id, state=exc.current.value) from None
        self._jobs[job_id] = job
        return job

    async def counts(self) -> Counts:
        tally: dict[tuple[str, str, State], int] = {}
        with self._lock:
            for job in self._jobs.values():
                key = (job.queue, job.type, job.state)
                tally[key] = tally.get(key, 0) + 1
        return Counts([CountRow(q, t, s, n) for (q, t, s), n in sorted(tally.items())])

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
        with self._lock:
            ready = self._claimable(queues, types, exclude_queues)
            return self._take(node, ready[: max(limit, 0)], lease)

    def _claimable(
        self,
        queues: Sequence[str] | None,
        types: Sequence[str] | None,
        exclude_queues: Sequence[str] | None = None,
    ) -> builtins.list[Job]:
        """The jobs a claim may take, in claim order (under the lock)."""
        now = self._clock()
        ready = [
            j
            for j in self._jobs.values()
            if j.state is State.PENDING
            and j.attempts < j.max_attempts
            and j.run_at <= now
            and (queues is None or j.queue in queues)
            and (types is None or j.type in types)
            and not (exclude_queues and j.queue in exclude_queues)
        ]
        ready.sort(key=ordering_key)
        return ready

    def _take(self, node: str, jobs: builtins.list[Job], lease: float) -> builtins.list[Job]:
        """Claim `jobs` for `node` (under the lock)."""
        now = self._clock()
        until = lease_until(now, lease)
        claimed = [j.claim(node, until, now, next(self._tokens)) for j in jobs]
        for job in claimed:
            self._jobs[job.id] = job
        return claimed

    async def heartbeat(
        self, node: str, lease: float, job_ids: Collection[int] | None = None
    ) -> builtins.list[int]:
        to_cancel = []
        wanted = None if job_ids is None else set(job_ids)
        with self._lock:
            now = self._clock()
            for job in list(self._jobs.values()):
                if wanted is not None and job.id not in wanted:
                    continue
                if job.state is State.RUNNING and job.lease_owner == node:
                    self._jobs[job.id] = dataclasses.replace(
                        job, lease_expires_at=lease_until(now, lease)
                    )
                    if job.cancel_requested:
                        to_cancel.append(job.id)
        return to_cancel

    async def finish(
        self, node: str, outcomes: Sequence[Outcome], starts: Sequence[Start] = ()
    ) -> dict[int, State]:
        applied: dict[int, Job] = {}
        with self._lock:
            now = self._clock()
            for start in starts:
                job = self._jobs.get(start.job_id)
                if job is not None and owns(job, node, start):
                    self._jobs[job.id] = job.start(start.at)
            for outcome in map(storable_outcome, outcomes):
                job = self._jobs.get(outcome.job_id)
                if job is None or not owns(job, node, outcome):
                    continue
                job = outcome_applied(job, outcome, now)
                self._jobs[job.id] = job
                applied[job.id] = job
            dependents = parents_ended(_Graph(self), applied.values(), now)
        states = {job_id: job.state for job_id, job in applied.items()}
        self._notify_finished(states, {job.id: job.queue for job in applied.values()})
        self._notify_dependents(dependents)
        return states

    async def record_progress(
        self, node: str, reports: Sequence[ProgressReport]
    ) -> builtins.list[int]:
        written: builtins.list[int] = []
        with self._lock:
            for report in reports:
                job = self._jobs.get(report.job_id)
                if job is not None and owns(job, node, report):
                    self._jobs[job.id] = job.report_progress(report.progress, report.at)
                    written.append(job.id)
        return written

    async def recover_expired(self) -> builtins.list[Job]:
        with self._lock:
            now = self._clock()
            recovered = [
                j.recover(now)
                for j in self._jobs.values()
                if j.state is State.RUNNING
                and j.lease_expires_at is not None
                and j.lease_expires_at <= now
            ]
            for job in recovered:
                self._jobs[job.id] = job
            dependents = parents_ended(_Graph(self), recovered, now)
        queues = {job.id: job.queue for job in recovered}
        self._notify_finished({job.id: job.state for job in recovered}, queues)
        self._notify_dependents(dependents)
        return recovered

    activity = memory_activity  # the last hour's ends per minute (jobd.store.activity)

    async def prune(self, older_than: timedelta | None, batch: int = 1000) -> int:
        with self._lock:
            now = self._clock()
            cutoff = None if older_than is None else now - older_than
            graph = self.graph()
            doomed = [
                j.id
                for j in self._jobs.values()
                if prunable(j, now, cutoff) and not needed(graph, j)
            ]
            self.forget(doomed)
        return len(doomed)

    def graph(self) -> _Graph:
        """The jobs and edges as jobd.store.workflows walks them (hold the lock)."""
        return _Graph(self)

    def forget(self, ids: Collection[int]) -> None:
        """Delete these jobs, their idempotency keys and their edges (hold the lock)."""
        for job_id in ids:
            job = self._jobs.pop(job_id)
            if job.idempotency_key:
                self._keys.pop(job.idempotency_key, None)
            for parent in job.parents:  # its edges: the ones to its parents, and to its children
                if parent in self._children:
                    self._children[parent].remove(job_id)
            self._children.pop(job_id, None)

    async def report_node(self, report: NodeReport) -> None:
        with self._lock:
            self._nodes[report.id] = (report, self._clock())

    async def fleet(self, lease: float) -> Fleet:
        with self._lock:
            now = self._clock()
            nodes = [
                NodeStatus(report, beat, beat > now - timedelta(seconds=lease))
                for report, beat in sorted(self._nodes.values(), key=lambda n: n[0].id)
            ]
            pending: dict[str, int] = {}
            for job in self._jobs.values():
                if job.state is State.PENDING:
                    pending[job.type] = pending.get(job.type, 0) + 1
        return Fleet(self.min_node_version, nodes, pending)

    async def prune_nodes(self, older_than: timedelta) -> int:
        with self._lock:
            cutoff = self._clock() - older_than
            gone = [node for node, (_, beat) in self._nodes.items() if beat < cutoff]
            for node in gone:
                del self._nodes[node]
        return len(gone)

    # --- schedules ----------------------------------------------------------------------

    async def enqueue_ticks(
        self, schedule: Schedule, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> TickResult:
        with self._lock:
            now = self._clock()
            record = self._schedules.get(schedule.name)
            decision = decide(schedule, record, now, self._busy(schedule.name))
            jobs = tuple(
                self._run(schedule, tick, RunKind.TICK, now, default_max_attempts)
                for tick in decision.ticks
            )
            paused = record is not None and record.paused
            self._schedules[schedule.name] = ScheduleRecord(
                schedule.name,
                decision.settled or (record.last_tick if record else None),
                paused,
                schedule.definition_hash,
            )
        self._notify_submitted(jobs)
        other = other_definition(record, schedule)
        return TickResult(jobs, decision.missed, decision.overlap_skipped, paused, other)

    async def trigger_schedule(
        self, schedule: Schedule, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> Job:
        with self._lock:
            now = self._clock()
            job = self._run(schedule, now, RunKind.TRIGGER, now, default_max_attempts)
            record = self._schedules.get(schedule.name)
            if record is None:
                self._schedules[schedule.name] = ScheduleRecord(
                    schedule.name, None, False, schedule.definition_hash
                )
        self._notify_submitted((job,))
        return job

    def _run(
        self, schedule: Schedule, tick: datetime, kind: RunKind, now: datetime, attempts: int
    ) -> Job:
        job = self._insert(tick_job(schedule, tick, attempts), now)
        runs = self._runs.setdefault(schedule.name, [])
        runs.append(_Run(tick, job.id, kind))
        runs[:] = [run for run in runs if run.tick >= now - HISTORY_KEPT]
        return job

    def _busy(self, name: str) -> bool:
        return any(
            job.schedule == name and job.state in (State.PENDING, State.RUNNING)
            for job in self._jobs.values()
        )

    async def schedule_records(self) -> builtins.list[ScheduleRecord]:
        with self._lock:
            return [self._with_last_job(self._schedules[name]) for name in sorted(self._schedules)]

    def _with_last_job(self, record: ScheduleRecord) -> ScheduleRecord:
        runs = self._runs.get(record.name)
        if not runs:
            return record
        job = self._jobs.get(runs[-1].job_id)
        state = job.state if job is not None else None
        return dataclasses.replace(record, last_job_id=runs[-1].job_id, last_job_state=state)

    async def set_schedule_paused(self, name: str, paused: bool) -> ScheduleRecord:
        with self._lock:
            record = self._schedules.get(name) or ScheduleRecord(name, None, False, None)
            record = dataclasses.replace(record, paused=paused)
            self._schedules[name] = record
            return self._with_last_job(record)
