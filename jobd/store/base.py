"""The store port: the one async interface the supervisor and the control server use to keep
jobs, whatever the database behind it.

Every implementation passes the contract suite in tests/store/.  Rules they all follow:
- the domain (jobd.domain) decides every transition; a store only applies it atomically;
- `claim` counts the attempt and sets the lease in the same write;
- `claim` draws a fresh lease token for each job it takes (`Job.lease_token`);
- every write that ends an attempt is fenced on (id, attempt, lease owner, lease token): a node
  whose lease was taken over, or whose outcome belongs to an earlier claim of the job (a
  replayed release), gets its write refused (absent from `finish`'s answer), never applied;
- a failure to reach the database raises `jobd.errors.Unavailable`, never a driver exception.
"""

from __future__ import annotations

import abc
import base64
import binascii
import builtins
import enum
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobd.domain import DEFAULT_MAX_ATTEMPTS, ErrorInfo, Job, NewJob, State
from jobd.errors import InvalidParams
from jobd.limits import MAX_LIST_LIMIT, MAX_SUBMIT_MANY
from jobd.store.nodes import Fleet, NodeReport
from jobd.store.values import check_new_job, json_problem, storable_text
from jobd.store.workflows import batch_order

if TYPE_CHECKING:  # jobd.schedules reads job specs, which read this package
    from jobd.queue_limits import FleetLimits
    from jobd.schedules import Schedule
    from jobd.store.activity import Activity
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

#: Where the in-process stores read the time; tests pass a fake one.
Clock = Callable[[], datetime]


class OutcomeKind(enum.StrEnum):
    COMPLETED = "completed"  # the handler returned `result`
    FAILED = "failed"  # the attempt failed: pending again at `retry_at`, or failed if None
    CANCELED = "canceled"  # the worker was stopped because a cancel was requested
    RELEASED = "released"  # given back unstarted or drained: the attempt is not spent


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as the supervisor reports it to the store."""

    job_id: int
    attempt: int
    kind: OutcomeKind
    result: Any = None
    error: ErrorInfo | None = None
    retry_at: datetime | None = None
    crashed: bool = False
    #: The lease token of the claim this attempt belongs to; None fences on (id, attempt,
    #: owner) only (the supervisor always sets it: see WriteBack.record).
    token: int | None = None
    #: When its worker started the attempt (None: never started, or already written).
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Start:
    """A worker started a claimed job at `at`: written with the next batch of outcomes, fenced
    as they are."""

    job_id: int
    attempt: int
    token: int | None
    at: datetime


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """The latest progress a running attempt reported (`ctx.progress`), received by the
    supervisor at `at`: written with the next batch, fenced as a start is."""

    job_id: int
    attempt: int
    token: int | None
    progress: Any
    at: datetime


@dataclass(frozen=True, slots=True)
class Submitted:
    job: Job
    created: bool  # False when an idempotency key matched an existing job


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A claim for a node with idle workers, sent with a submit (Store.submit_claiming): up to
    `limit` jobs leased to `node` for `lease` seconds, of `types`, outside `exclude_queues`."""

    node: str
    limit: int
    lease: float
    types: Sequence[str] | None = None
    exclude_queues: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class SubmittedAndClaimed:
    submitted: Submitted  # as inserted: pending, even if the claim took it
    claimed: list[Job]


@dataclass(frozen=True, slots=True)
class Changed:
    """An operator's change of a job: the job afterwards, and the state it was in before
    (read in the same transaction, so a log of the transition names its real `from`)."""

    job: Job
    previous: State


@dataclass(frozen=True, slots=True)
class JobFilter:
    states: tuple[State, ...] = ()
    type: str | None = None
    queue: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    schedule: str | None = None  # the jobs one schedule created
    #: The jobs linked to this one through `after`, in either direction (itself included).
    workflow: int | None = None

    def matches(self, job: Job) -> bool:
        """Every filter but `workflow`, which the store resolves to a set of ids."""
        return (
            (not self.states or job.state in self.states)
            and (self.type is None or job.type == self.type)
            and (self.queue is None or job.queue == self.queue)
            and (self.created_after is None or job.created_at > self.created_after)
            and (self.created_before is None or job.created_at < self.created_before)
            and (self.schedule is None or job.schedule == self.schedule)
        )


@dataclass(frozen=True, slots=True)
class Links:
    """A job's neighbours in its workflow (ids, ascending)."""

    children: list[int]
    unfinished_parents: list[int]  # the parents that have not ended


@dataclass(frozen=True, slots=True)
class Page:
    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class CountRow:
    queue: str
    type: str
    state: State
    count: int


@dataclass(frozen=True, slots=True)
class Counts:
    rows: list[CountRow] = field(default_factory=list)

    def by_state(self) -> dict[str, int]:
        out = {s.value: 0 for s in State}
        for row in self.rows:
            out[row.state.value] += row.count
        return out

    def by(self, key: str) -> dict[str, dict[str, int]]:
        """Counts per queue or per type (`key`), each split by state."""
        out: dict[str, dict[str, int]] = {}
        for row in self.rows:
            per_state = out.setdefault(getattr(row, key), {})
            per_state[row.state.value] = per_state.get(row.state.value, 0) + row.count
        return out


class NotificationKind(enum.StrEnum):
    SUBMITTED = "submitted"  # new pending work in `queue`
    CANCEL = "cancel"  # a cancel was requested for running job `job_id`
    FINISHED = "finished"  # job `job_id` reached a terminal state (this process only)
    QUEUES = "queues"  # a queue was paused or resumed: read the queues' state again


@dataclass(frozen=True, slots=True)
class Notification:
    kind: NotificationKind
    queue: str | None = None
    job_id: int | None = None


Listener = Callable[[Notification], None]


# --- cursors: opaque to clients, a job id inside ---------------------------------------


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"j{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("j"):
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidParams(f"cursor: not a cursor this server issued: {cursor!r}") from None


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidParams("limit: must be a positive integer")
    return min(limit, MAX_LIST_LIMIT)


class Store(abc.ABC):
    """Durable job storage.  All methods are coroutines run on the supervisor's event loop."""

    #: Short name shown in logs and `jobd config check`: "postgres", "sqlite", "memory".
    kind: str = ""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    # --- life cycle ---------------------------------------------------------------------

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect (and, for the notification listener, start listening)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release every connection; the store cannot be used afterwards."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Apply the migrations this database lacks; return their names (empty: up to date)."""

    @abc.abstractmethod
    async def pending_migrations(self) -> list[str]:
        """The migrations this database lacks, without applying them."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise Unavailable unless the database answers."""

    # --- clients' operations --------------------------------------------------------------

    async def submit(self, spec: NewJob) -> Submitted:
        (submitted,) = await self.submit_many([spec])
        return submitted

    async def submit_claiming(self, spec: NewJob, claim: ClaimRequest) -> SubmittedAndClaimed:
        """`submit`, then `claim`: the job answered as inserted, and the jobs the claim took
        (the new one among them when it comes first in claim order).  PostgreSQL sends both
        in one round trip and one transaction (docs/adr/0042)."""
        submitted = await self.submit(spec)
        c = claim
        jobs = await self.claim(
            c.node, c.limit, lease=c.lease, types=c.types, exclude_queues=c.exclude_queues
        )
        return SubmittedAndClaimed(submitted, jobs)

    @abc.abstractmethod
    async def submit_many(self, specs: Sequence[NewJob]) -> list[Submitted]:
        """Insert every job in one transaction.  A job whose idempotency key exists already
        is not inserted; the existing job is returned with created=False.

        A job `after` others (ids, or BatchRefs to jobs of the same batch, which come first)
        is waiting, pending if they have all ended, or canceled at once if one failed and it
        cancels on that (jobd.store.workflows.wait_for_parents); the edges are written in the
        same transaction, each parent locked against its own end meanwhile.  An unknown parent
        or a cycle is InvalidParams naming the field, and nothing is written."""

    @abc.abstractmethod
    async def get(self, job_id: int) -> Job:
        """The job, or NotFound."""

    @abc.abstractmethod
    async def list(
        self, filters: JobFilter = JobFilter(), limit: int = 100, cursor: str | None = None
    ) -> Page:
        """Jobs matching `filters`, newest first, at most `limit` (capped at 1000)."""

    @abc.abstractmethod
    async def request_cancel(self, job_id: int) -> Job:
        """Cancel a waiting or pending job, or mark a running one; Conflict when it has
        finished.  A job that ends here ends its dependents' wait as a finish does."""

    async def retry(self, job_id: int) -> Job:
        """Operator retry of a failed or canceled job; Conflict otherwise."""
        return (await self.operator_retry(job_id)).job

    @abc.abstractmethod
    async def operator_retry(self, job_id: int) -> Changed:
        """`retry`, telling the state the job was retried from.  A job with unfinished parents
        goes back to waiting; its dependents that its failure canceled wait for it again
        (jobd.store.workflows.parent_reopened)."""

    @abc.abstractmethod
    async def counts(self) -> Counts:
        """Job counts by queue, type and state."""

    # --- workflows (jobd.store.workflows) -----------------------------------------------------

    @abc.abstractmethod
    async def links(self, job_id: int) -> Links:
        """The job's place in its workflow: the jobs submitted `after` it, and the parents it
        still waits for (NotFound: no such job)."""

    @abc.abstractmethod
    async def parent_results(self, job_id: int) -> dict[int, Any]:
        """The result of each of the job's parents (None for one that did not complete), read
        when its handler asks (`ctx.parent_results()`)."""

    # --- the supervisor's operations ------------------------------------------------------

    @abc.abstractmethod
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
        """Take up to `limit` pending jobs whose run_at has come, in (priority desc, run_at, id)
        order, restricted to `queues` and `types` when given and outside `exclude_queues`: each
        becomes running, owned by `node` until now + `lease` seconds, its attempt counted."""

    @abc.abstractmethod
    async def heartbeat(
        self, node: str, lease: float, job_ids: Collection[int] | None = None
    ) -> builtins.list[int]:
        """Extend the leases `node` holds to now + `lease` -- only those of `job_ids` when
        given -- and return the ids of the extended jobs whose cancel has been requested (so a
        missed notification is caught here).

        The supervisor passes the jobs it knows it holds: a job the database gave the node but
        the node never heard of (the claim's answer was lost with its connection) must not be
        kept alive by the heartbeat, or it would stay `running` for ever; left out, its lease
        expires and any node recovers it."""

    @abc.abstractmethod
    async def finish(
        self, node: str, outcomes: Sequence[Outcome], starts: Sequence[Start] = ()
    ) -> dict[int, State]:
        """Record each start, then apply each outcome, whose (job id, attempt, node, lease
        token) still owns the job; return the new state of each applied outcome.  Outcomes
        that lost their lease are left out.  An outcome's `started_at`, when set, is written
        with it.  The dependents of the jobs that ended move on in the same transaction
        (jobd.store.workflows.parents_ended)."""

    @abc.abstractmethod
    async def record_progress(
        self, node: str, reports: Sequence[ProgressReport]
    ) -> builtins.list[int]:
        """Store each report as its job's `progress` and `progress_at` where (job id,
        attempt, node, lease token) still owns the running job; return the ids written.  A
        report of an attempt that ended or lost its lease is left out (its job keeps the
        progress it had)."""

    @abc.abstractmethod
    async def recover_expired(self) -> builtins.list[Job]:
        """Jobs of any node whose lease has expired: back to pending with the attempt spent,
        failed when none is left, canceled when a cancel was requested."""

    @abc.abstractmethod
    async def prune(self, older_than: timedelta | None, batch: int = 1000) -> int:
        """Delete finished jobs past their own `result_ttl` (finished_at + result_ttl is not
        after now: 0 goes at once), and those that set none whose finished_at is older than
        `older_than` (None: no retention, they are kept); at most `batch` rows per
        transaction; return how many went.  A job with a dependent that has not finished
        stays, whatever its result_ttl (the dependent may still wait for it, or read its
        result)."""

    # --- the fleet ------------------------------------------------------------------------

    @abc.abstractmethod
    async def report_node(self, report: NodeReport) -> None:
        """Write `report` as its node's row, its heartbeat now (the database's clock)."""

    @abc.abstractmethod
    async def fleet(self, lease: float) -> Fleet:
        """The fleet's rules, every node's row (live: a heartbeat within `lease` seconds) and
        the pending jobs by type."""

    @abc.abstractmethod
    async def prune_nodes(self, older_than: timedelta) -> int:
        """Delete the rows of nodes whose heartbeat is older than `older_than`; how many."""

    # --- schedules (jobd.store.schedules) ---------------------------------------------------

    @abc.abstractmethod
    async def enqueue_ticks(
        self, schedule: Schedule, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> TickResult:
        """In one transaction, by the database's clock: lock the schedule's row (creating it),
        decide its due ticks (jobd.store.schedules.decide), insert their jobs, record the new
        last tick and the history.  A tick gets its job once, whichever nodes ask."""

    @abc.abstractmethod
    async def trigger_schedule(
        self, schedule: Schedule, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> Job:
        """One job of `schedule` now, outside its ticks (recorded in its history)."""

    @abc.abstractmethod
    async def schedule_records(self) -> builtins.list[ScheduleRecord]:
        """Every schedule's row, by name, with the job its last run created."""

    @abc.abstractmethod
    async def set_schedule_paused(self, name: str, paused: bool) -> ScheduleRecord:
        """Pause or resume `name` for the whole fleet (creating its row if need be)."""

    # --- operating the queues (jobd.store.queues) -------------------------------------------

    @abc.abstractmethod
    async def queue_records(self) -> builtins.list[QueueRecord]:
        """Every queue's persisted state, by name (a queue without one is not paused)."""

    @abc.abstractmethod
    async def set_queue_paused(
        self, name: str, paused: bool, *, reason: str | None = None, actor: str | None = None
    ) -> QueueRecord:
        """Pause or resume `name` for the whole fleet, and tell every node (QUEUES)."""

    @abc.abstractmethod
    async def set_queue_limits(
        self, name: str, change: LimitChange, *, actor: str | None = None
    ) -> QueueRecord:
        """Change `name`'s runtime limits for the whole fleet (creating its row if need be),
        and tell every node (QUEUES)."""

    @abc.abstractmethod
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
        """`claim` of up to `limit` jobs of `queue` within its fleet-wide limits
        (docs/adr/0032): in one transaction that holds the queue's row (creating it), so
        that claims of the queue from every node take turns; the queue's runtime limits
        apply over `limits` (the node's file values); it counts the queue's running jobs,
        takes at most the room left and counts the claims in the rate's window."""

    @abc.abstractmethod
    async def activity(self) -> Activity:
        """The jobs that ended completed or failed in each of the last hour's minutes
        (jobd.store.activity)."""

    @abc.abstractmethod
    async def queue_summaries(self, failed_within: timedelta) -> builtins.list[QueueSummary]:
        """Each queue that has unfinished jobs or failures within `failed_within`, by name."""

    @abc.abstractmethod
    async def count_jobs(self, filters: JobFilter) -> int:
        """How many jobs match `filters`."""

    @abc.abstractmethod
    async def bulk(
        self, action: BulkAction, filters: JobFilter, after: int, batch: int
    ) -> BulkBatch:
        """One transaction of `action` on at most `batch` jobs matching `filters` (restricted
        by jobd.store.queues.bulk_filter) whose id is above `after`, ids ascending; nodes are
        told as for the one-job operations (CANCEL, SUBMITTED)."""

    @abc.abstractmethod
    async def adjust(self, job_id: int, adjustment: Adjustment) -> Job:
        """Make a pending job due now and/or give it a priority; NotFound, or Conflict
        unless it is pending."""

    @abc.abstractmethod
    async def record_audit(self, entry: AuditEntry) -> AuditRecord:
        """Append `entry` to the audit trail, timed by the store's clock."""

    @abc.abstractmethod
    async def audit_records(
        self, limit: int, before: int | None = None
    ) -> builtins.list[AuditRecord]:
        """The newest `limit` audit records with an id below `before`, newest first."""

    async def maintain(self) -> bool:
        """Housekeeping the database needs under a busy queue (PostgreSQL: VACUUM when dead
        rows pile up); called every few seconds by the supervisor.  True if it did something."""
        return False

    # --- notifications --------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call `listener` on the event loop for every notification (see NotificationKind)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, notification: Notification) -> None:
        for listener in list(self._listeners):
            listener(notification)

    def announce(self, notifications: Iterable[Notification]) -> None:
        """Deliver `notifications` to this store's listeners as if it had made the changes
        itself: another store of the same process did (the daemon's two PostgreSQL stores)."""
        for notification in notifications:
            self._notify(notification)

    def _notify_cancel_requested(self, job: Job) -> None:
        """After an operator's cancel: a running job's node is told to stop it (CANCEL); a
        job that was pending has ended (FINISHED)."""
        kind = NotificationKind.CANCEL if job.state is State.RUNNING else NotificationKind.FINISHED
        self._notify(Notification(kind, job_id=job.id))

    def _notify_submitted(self, jobs: Sequence[Job]) -> None:
        """New pending work: one SUBMITTED per queue of `jobs`."""
        for queue in {job.queue for job in jobs}:
            self._notify(Notification(NotificationKind.SUBMITTED, queue=queue))

    def _notify_retried(self, job: Job) -> None:
        self._notify(Notification(NotificationKind.SUBMITTED, queue=job.queue))

    def _notify_finished(
        self, states: Mapping[int, State], queues: Mapping[int, str] | None = None
    ) -> None:
        """Announce the jobs a finish or a lease recovery settled: FINISHED for a terminal
        state, SUBMITTED for a job pending again (with its queue when the store has it)."""
        for job_id, state in states.items():
            kind = NotificationKind.FINISHED if state.terminal else NotificationKind.SUBMITTED
            queue = queues.get(job_id) if queues is not None else None
            self._notify(Notification(kind, queue=queue, job_id=job_id))

    def _notify_dependents(self, changed: Sequence[Job]) -> None:
        """Dependents a parent's end (or retry) moved on: SUBMITTED for those now pending,
        FINISHED for those canceled."""
        self._notify_submitted([job for job in changed if job.state is State.PENDING])
        for job in changed:
            if job.state.terminal:
                self._notify(Notification(NotificationKind.FINISHED, job_id=job.id))


def validate_specs(specs: Sequence[NewJob]) -> None:
    """Refuse a batch that is too long or holds a value no store can hold (jobd.store.values:
    the job spec refuses those first; this is for callers that bypass it)."""
    if len(specs) > MAX_SUBMIT_MANY:
        raise InvalidParams(f"jobs: at most {MAX_SUBMIT_MANY} jobs in one call, got {len(specs)}")
    for index, spec in enumerate(specs):
        check_new_job(spec, f"jobs[{index}]." if len(specs) > 1 else "")
    batch_order(specs)  # a reference out of the batch or a cycle: refused before any write


#: The error type of an attempt whose result no store can hold.
UNSTORABLE_RESULT = "UnstorableResult"


def storable_outcome(outcome: Outcome) -> Outcome:
    """`outcome` as every store can hold it: a result no store can hold fails the attempt (no
    retry: the handler would return it again), and error text is cleaned (see REPLACEMENT)."""
    if outcome.kind is OutcomeKind.COMPLETED:
        found = json_problem(outcome.result, "result")
        if found is not None:
            where, problem = found
            error = ErrorInfo(UNSTORABLE_RESULT, f"the handler's {where} {problem}")
            return replace(
                outcome, kind=OutcomeKind.FAILED, result=None, error=error, retry_at=None
            )
    if outcome.error is not None:
        error = outcome.error
        cleaned = ErrorInfo(
            storable_text(error.type),
            storable_text(error.message),
            None if error.traceback is None else storable_text(error.traceback),
        )
        if cleaned != error:
            return replace(outcome, error=cleaned)
    return outcome


def lease_until(now: datetime, lease: float) -> datetime:
    return now + timedelta(seconds=lease)


def outcome_applied(job: Job, outcome: Outcome, now: datetime) -> Job:
    """The job after `outcome`, by the domain's rules (used by the memory and SQLite stores)."""
    if outcome.started_at is not None:
        job = job.start(outcome.started_at)
    if outcome.kind is OutcomeKind.COMPLETED:
        return job.complete(outcome.result, now)
    if outcome.kind is OutcomeKind.RELEASED:
        return job.release(now)
    if outcome.kind is OutcomeKind.CANCELED:
        changes: dict[str, Any] = {"crashes": job.crashes + (1 if outcome.crashed else 0)}
        if outcome.error:
            changes["last_error"] = outcome.error
        return job.cancel(now, **changes)
    error = outcome.error or ErrorInfo("Error", "attempt failed")
    return job.fail_attempt(error, outcome.retry_at, now, crashed=outcome.crashed)


def owns(job: Job, node: str, outcome: Outcome | Start | ProgressReport) -> bool:
    """Whether `outcome` (or a start) is still `node`'s to write: the same claim of the job,
    still running."""
    return (
        job.state is State.RUNNING
        and job.lease_owner == node
        and job.attempts == outcome.attempt
        and (outcome.token is None or job.lease_token == outcome.token)
    )


def ordering_key(job: Job) -> tuple[int, datetime, int]:
    return (-job.priority, job.run_at, job.id)


def json_default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
