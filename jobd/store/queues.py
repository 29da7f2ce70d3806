"""What every store keeps for operating the queues (docs/adr/0030-operating-the-queues.md,
docs/adr/0032-fleet-wide-queue-limits.md): the fleet-wide state of each queue (paused or not,
its runtime limits), the room of a limited claim, a summary of each queue's jobs, the
bulk actions by filter and their batches, and the audit trail of operators' actions.  Pure:
no I/O; each store implements the methods of jobd.store.base that read and write these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobd.domain import Job, State
from jobd.errors import InvalidParams
from jobd.queue_limits import FleetLimits, Rate, Room
from jobd.store.base import Changed, JobFilter

#: A queue's failures counted in its summary are those of this last stretch of time.
FAILED_WITHIN = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class QueueRecord:
    """A queue's persisted state, for the whole fleet: a queue without a row is not paused and
    has no runtime limits.  `global_concurrency` and `rate` are the runtime limits an operator
    set (`queue_limit`), over every node's file values; None: the file's apply."""

    name: str
    paused: bool
    reason: str | None = None
    changed_by: str | None = None  # who paused (or resumed) it last
    changed_at: datetime | None = None
    global_concurrency: int | None = None
    rate: Rate | None = None
    limits_changed_by: str | None = None  # who set (or reset) the runtime limits last
    limits_changed_at: datetime | None = None

    @property
    def runtime_limits(self) -> FleetLimits:
        return FleetLimits(self.global_concurrency, self.rate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "paused": self.paused,
            "reason": self.reason,
            "changed_by": self.changed_by,
            "changed_at": None if self.changed_at is None else self.changed_at.isoformat(),
        }

    def limits_dict(self) -> dict[str, Any]:
        """The runtime limits, and who set them when (the `queue_limit` answer)."""
        at = self.limits_changed_at
        return {
            "global_concurrency": self.global_concurrency,
            "rate": None if self.rate is None else str(self.rate),
            "changed_by": self.limits_changed_by,
            "changed_at": None if at is None else at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class LimitChange:
    """An operator's change of a queue's runtime limits: `reset` drops both first (the
    file's apply again), then each value given is set; one not given stays as it was."""

    global_concurrency: int | None = None
    rate: Rate | None = None
    reset: bool = False

    def apply(self, current: FleetLimits) -> FleetLimits:
        base = FleetLimits() if self.reset else current
        return base.over(FleetLimits(self.global_concurrency, self.rate))


@dataclass(frozen=True, slots=True)
class LimitedClaim:
    """A claim from one queue with fleet-wide limits (`Store.claim_limited`): the jobs
    claimed; the limits it applied (the runtime ones over the node's); how many claimable
    jobs it left for lack of room (`held_back`, at most the claim's shortfall) and which limit
    bound it (`bound`: global_concurrency or rate); and `opens_in`, the seconds until the
    rate's next window when the rate bound it (look again then)."""

    jobs: list[Job]
    limits: FleetLimits
    held_back: int = 0
    bound: str | None = None
    opens_in: float | None = None


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """A queue's jobs now: how many in each unfinished state, how many failed within
    FAILED_WITHIN, and since when the oldest due pending job has waited (None: none due)."""

    name: str
    by_state: dict[str, int] = field(default_factory=dict)
    failed_recently: int = 0
    oldest_due_at: datetime | None = None

    def count(self, state: str) -> int:
        return self.by_state.get(state, 0)


# --- bulk actions -----------------------------------------------------------------------------


class BulkAction(enum.StrEnum):
    CANCEL = "cancel"  # pending jobs are canceled, running ones asked to stop
    RETRY = "retry"  # failed and canceled jobs run again, with fresh attempts
    PURGE = "purge"  # finished jobs are deleted

    @property
    def states(self) -> tuple[State, ...]:
        """The states this action acts on (a job in another state is left alone)."""
        if self is BulkAction.CANCEL:
            return tuple(s for s in State if not s.terminal)
        if self is BulkAction.RETRY:
            return (State.FAILED, State.CANCELED)
        return tuple(s for s in State if s.terminal)

    def apply(self, job: Job, now: datetime) -> Job:
        """The job after this action, by the domain's rules (PURGE leaves it as it is)."""
        if self is BulkAction.CANCEL:
            return job.request_cancel(now)
        if self is BulkAction.RETRY:
            return job.operator_retry(now)
        return job


def bulk_filter(action: BulkAction, filters: JobFilter) -> JobFilter:
    """`filters` restricted to the states `action` acts on.  A state given that the action
    cannot act on is refused, naming it: `cancel --state completed` is a mistake, not a no-op."""
    allowed = action.states
    wrong = [s.value for s in filters.states if s not in allowed]
    if wrong:
        names = ", ".join(s.value for s in allowed)
        raise InvalidParams.of_field(
            "state", f"{action.value} acts on jobs that are {names}; not on {', '.join(wrong)}"
        )
    states = filters.states or allowed
    return JobFilter(
        states=tuple(states),
        type=filters.type,
        queue=filters.queue,
        created_after=filters.created_after,
        created_before=filters.created_before,
        schedule=filters.schedule,
    )


@dataclass(frozen=True, slots=True)
class BulkChange:
    """A job a bulk action changed, as much of it as the caller uses: it counts the change by
    type and queue, logs and publishes it by id, and stops a running job its own node holds
    (`lease_owner`).  Not a Job: a batch of 1,000 retried jobs need not read 1,000 payloads
    (PostgreSQL returns these columns only).  `state` is the job's afterwards (for PURGE: the
    one it was deleted in), `previous` the one it was in before, read in the same transaction."""

    id: int
    type: str
    queue: str
    state: State
    previous: State
    attempts: int
    correlation_id: str | None = None
    lease_owner: str | None = None

    @classmethod
    def of(cls, changed: Changed) -> BulkChange:
        job = changed.job
        return cls(
            job.id,
            job.type,
            job.queue,
            job.state,
            changed.previous,
            job.attempts,
            job.correlation_id,
            job.lease_owner,
        )


@dataclass(frozen=True, slots=True)
class BulkBatch:
    """One batch of a bulk action, one transaction of at most its batch size: the jobs it
    changed (for PURGE: deleted), how many it looked at, and the last id it looked at, where
    the next batch starts (ids ascending).  `busy`: jobs it found locked by another
    transaction at that moment (a claim, a finish: PostgreSQL only), left for a later run."""

    changed: list[BulkChange]
    examined: int
    last_id: int | None
    busy: int = 0


def bulk_candidates(jobs: list[Job], filters: JobFilter, after: int, batch: int) -> list[Job]:
    """The next batch for the in-process stores: matching jobs with an id above `after`,
    ids ascending, at most `batch`."""
    found = sorted((j for j in jobs if j.id > after and filters.matches(j)), key=_id)
    return found[:batch]


def _id(job: Job) -> int:
    return job.id


# --- run now, priority -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Adjustment:
    """An operator's change of a pending job: due now (`run_now`), and/or a new priority."""

    run_now: bool = False
    priority: int | None = None

    def apply(self, job: Job, now: datetime) -> Job:
        """The job afterwards; only a pending job may be changed (jobd.domain)."""
        return job.adjust(now, run_now=self.run_now, priority=self.priority)


# --- the audit trail -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator's action: who (`actor`: `uid:1000` over the socket, `token:1a2b3c4d`
    over HTTP), what (`action`, e.g. `queue_pause`), on what (`target`: a queue, a job id, a
    schedule; None for a bulk action), and its arguments and outcome (`details`)."""

    actor: str
    action: str
    target: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An AuditEntry as stored: numbered, and timed by the store's clock."""

    id: int
    at: datetime
    entry: AuditEntry

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "details": e.details,
        }


#: Audit records in one page of `audit`.
MAX_AUDIT_LIMIT = 1000


# --- fleet-wide limits (jobd.queue_limits) ---------------------------------------------------


def limited_result(
    jobs: list[Job], limits: FleetLimits, decided: Room, wanted: int, more: int
) -> LimitedClaim:
    """What a limited claim answers: `more` claimable jobs were left beyond those taken
    (counted up to the shortfall `wanted - room`)."""
    if decided.room >= wanted or more <= 0:
        return LimitedClaim(jobs, limits)
    bound = "rate" if decided.opens_in is not None else "global_concurrency"
    return LimitedClaim(jobs, limits, more, bound, decided.opens_in)
