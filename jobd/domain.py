"""The job, its states, the rules that move it between them, and the retry policy.

Pure: no I/O, no clock and no randomness of its own (both are passed in), and no import of
anything else in jobd but its limits (constants).  Every store applies these rules, so the
memory and SQLite stores call them directly and the PostgreSQL store mirrors them in SQL; one
contract test-suite keeps the three honest.

    pending ──claim──► running ──complete──────────────────► completed
       │                 │  ├──error, attempts left────────► pending (run_at = now + backoff)
       │                 │  ├──error, none left / permanent► failed
       │                 │  ├──released (drain)────────────► pending (attempt given back)
       │                 │  └──lease expired / worker died─► pending, or failed if none left
       └──cancel──► canceled ◄──cancel (worker stopped)──┘
    failed / canceled ──retry (by an operator)──► pending
    waiting ──last parent ended──► pending          (a job submitted `after` others)
       ├──a parent failed or was canceled (on_parent_failure: cancel)──► canceled
       └──cancel──► canceled
    failed / canceled ──retry, a parent unfinished──► waiting
    canceled (ParentFailed) ──its parent retried──► waiting
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

# Constants only (a module importing nothing): one definition of each limit.
from jobd.limits import ATTEMPT_HISTORY_KEEP, MAX_RESULT_TTL

#: ISO-8601 texts already made for one reply, by (time, its tzinfo): equal instants in other
#: zones print differently, so the zone is part of the key.
TimeTexts = dict[tuple[datetime, Any], str]

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3
MAX_NAME_LENGTH = 200
#: Parents of one job (`after`): a fan-in of this many jobs into one is still one submit.
MAX_PARENTS = 10_000
#: The error type of a job canceled because a parent of it failed or was canceled.
PARENT_FAILED = "ParentFailed"


class State(enum.StrEnum):
    WAITING = "waiting"  # for its parents (`after`) to end
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({State.COMPLETED, State.FAILED, State.CANCELED})


class ParentFailure(enum.StrEnum):
    """What a job does when a parent of it ends failed or canceled."""

    CANCEL = "cancel"  # end canceled (ParentFailed), and so do its own dependents that cancel
    RUN = "run"  # run anyway once every parent has ended, like a finally step


# Every operation, the states it may start from, and the state it leads to.  An operation that
# can lead to several states (ending a failed attempt) is listed once per outcome.
OPERATIONS: dict[str, tuple[frozenset[State], State]] = {
    "claim": (frozenset({State.PENDING}), State.RUNNING),
    "complete": (frozenset({State.RUNNING}), State.COMPLETED),
    "fail": (frozenset({State.RUNNING}), State.FAILED),
    "retry attempt": (frozenset({State.RUNNING}), State.PENDING),
    "release": (frozenset({State.RUNNING}), State.PENDING),
    "cancel": (frozenset({State.WAITING, State.PENDING, State.RUNNING}), State.CANCELED),
    "retry": (frozenset({State.FAILED, State.CANCELED}), State.PENDING),
    "retry to wait": (frozenset({State.FAILED, State.CANCELED}), State.WAITING),
    "parents ended": (frozenset({State.WAITING}), State.PENDING),
    "parent failed": (frozenset({State.WAITING}), State.CANCELED),
    "parent retried": (frozenset({State.CANCELED}), State.WAITING),
}


class IllegalTransition(ValueError):
    """A job was asked to move between two states that no rule connects."""

    def __init__(
        self,
        job_id: int | None,
        current: State,
        target: State,
        operation: str,
        why: str | None = None,
    ):
        self.job_id = job_id
        self.current = current
        self.target = target
        self.operation = operation
        why = why or f"no transition {current.value} -> {target.value}"
        super().__init__(f"cannot {operation} job {job_id}: it is {current.value} ({why})")


class InvalidJob(ValueError):
    """A job specification breaks a rule of the domain; the message names the field."""

    def __init__(self, field_name: str, problem: str):
        self.field = field_name
        self.problem = problem
        super().__init__(f"{field_name}: {problem}")


# --- errors a handler raises -------------------------------------------------------------


class PermanentError(Exception):
    """Raised by a handler: the job failed and retrying cannot help."""


class RetryLater(Exception):
    """Raised by a handler: try again after `delay` seconds (counts as a failed attempt)."""

    def __init__(self, delay: float, message: str = ""):
        if delay < 0:
            raise ValueError("RetryLater delay must be >= 0")
        self.delay = float(delay)
        super().__init__(message or f"retry requested in {delay:g}s")


# --- the job ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What went wrong in one attempt."""

    type: str
    message: str
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ErrorInfo | None:
        if not data:
            return None
        return cls(str(data.get("type", "")), str(data.get("message", "")), data.get("traceback"))


#: The error types of an attempt that ran out of time (jobd.supervisor.outcomes) and of one
#: whose node's lease expired (Job.recover): the outcomes an attempt's record names.
TIMEOUT_ERROR = "Timeout"
LEASE_EXPIRED_ERROR = "LeaseExpired"


class AttemptOutcome(enum.StrEnum):
    """How an attempt that did not end its job ended (an entry of Job.history)."""

    FAILED = "failed"  # its handler raised; retried
    TIMEOUT = "timeout"  # it ran out of time; retried
    CRASHED = "crashed"  # its worker died; retried
    LEASE_EXPIRED = "lease_expired"  # its node stopped renewing the lease; recovered


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt that ended without ending its job: its number, times, outcome and error
    (type and message; the traceback stays in the job's last_error).  JSON in the stores:
    times as epoch seconds, the PostgreSQL store's SQL builds the same members."""

    attempt: int
    started_at: datetime | None
    ended_at: datetime
    outcome: AttemptOutcome
    error_type: str
    error_message: str

    @classmethod
    def ended(cls, job: Job, error: ErrorInfo, now: datetime, *, crashed: bool) -> AttemptRecord:
        if error.type == LEASE_EXPIRED_ERROR:
            outcome = AttemptOutcome.LEASE_EXPIRED
        elif crashed:
            outcome = AttemptOutcome.CRASHED
        elif error.type == TIMEOUT_ERROR:
            outcome = AttemptOutcome.TIMEOUT
        else:
            outcome = AttemptOutcome.FAILED
        return cls(job.attempts, job.started_at, now, outcome, error.type, error.message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "started_at": None if self.started_at is None else self.started_at.timestamp(),
            "ended_at": self.ended_at.timestamp(),
            "outcome": self.outcome.value,
            "error": {"type": self.error_type, "message": self.error_message},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttemptRecord:
        error = data.get("error") or {}
        started = data.get("started_at")
        return cls(
            attempt=int(data["attempt"]),
            started_at=None if started is None else datetime.fromtimestamp(started, UTC),
            ended_at=datetime.fromtimestamp(data["ended_at"], UTC),
            outcome=AttemptOutcome(data["outcome"]),
            error_type=str(error.get("type", "")),
            error_message=str(error.get("message", "")),
        )


def attempts_kept(history: tuple[AttemptRecord, ...]) -> tuple[AttemptRecord, ...]:
    """`history` with room for one more entry: the first and last ATTEMPT_HISTORY_KEEP
    entries are kept, the one after the first ones goes (the stores' SQL does the same)."""
    if len(history) < 2 * ATTEMPT_HISTORY_KEEP:
        return history
    return history[:ATTEMPT_HISTORY_KEEP] + history[ATTEMPT_HISTORY_KEEP + 1 :]


def history_from_json(data: list[dict[str, Any]] | None) -> tuple[AttemptRecord, ...]:
    if not data:  # nearly every claimed job: no generator to make and drain
        return ()
    return tuple(AttemptRecord.from_dict(entry) for entry in data)


def history_to_json(history: tuple[AttemptRecord, ...]) -> list[dict[str, Any]] | None:
    return [entry.to_dict() for entry in history] if history else None


class BatchRef(NamedTuple):
    """A parent named by its position in the same batch (`after` in submit_many)."""

    position: int


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a client asks for at submit time; the store fills in the rest."""

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    run_at: datetime | None = None
    timeout: float | None = None
    idempotency_key: str | None = None
    correlation_id: str | None = None
    #: The schedule whose tick (or trigger) this job is (jobd.schedules); None for others.
    schedule: str | None = None
    #: The jobs this one waits for: ids, or positions in the same batch (BatchRef).
    after: tuple[int | BatchRef, ...] = ()
    on_parent_failure: ParentFailure = ParentFailure.CANCEL
    #: Seconds the job is kept once it has ended (its own retention, overriding jobs.retention
    #: either way; 0: dropped at the next prune); None: jobs.retention applies (ADR 0033).
    result_ttl: float | None = None

    def __post_init__(self) -> None:
        validate_new_job(self)


def validate_new_job(spec: NewJob) -> None:
    _check_name("type", spec.type)
    _check_name("queue", spec.queue)
    if not isinstance(spec.payload, dict):
        raise InvalidJob("payload", "must be a JSON object")
    if isinstance(spec.priority, bool) or not isinstance(spec.priority, int):
        raise InvalidJob("priority", "must be an integer")
    if not -(2**31) <= spec.priority < 2**31:
        raise InvalidJob("priority", "must fit in 32 bits")
    if isinstance(spec.max_attempts, bool) or not isinstance(spec.max_attempts, int):
        raise InvalidJob("max_attempts", "must be an integer")
    if not 1 <= spec.max_attempts <= 1000:
        raise InvalidJob("max_attempts", "must be between 1 and 1000")
    if spec.timeout is not None and (
        isinstance(spec.timeout, bool)
        or not isinstance(spec.timeout, int | float)
        or not 0 < spec.timeout <= 7 * 86400
    ):
        raise InvalidJob("timeout", "must be a number of seconds, > 0 and at most 7 days")
    check_result_ttl(spec.result_ttl)
    if spec.run_at is not None and spec.run_at.tzinfo is None:
        raise InvalidJob("run_at", "must carry a time zone")
    for name in ("idempotency_key", "correlation_id"):
        value = getattr(spec, name)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 255):
            raise InvalidJob(name, "must be a string of 1 to 255 characters")
    if spec.schedule is not None:
        _check_name("schedule", spec.schedule)
    _check_after(spec.after)
    if spec.on_parent_failure not in ParentFailure.__members__.values():
        raise InvalidJob("on_parent_failure", "must be cancel or run")


def check_result_ttl(value: object) -> None:
    """A job's (or a handler's default) result_ttl: None, or seconds from 0 to MAX_RESULT_TTL."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidJob("result_ttl", "must be a number of seconds")
    if not 0 <= value <= MAX_RESULT_TTL:
        raise InvalidJob("result_ttl", "must be between 0 and 10 years of seconds")


def _check_after(after: object) -> None:
    if not isinstance(after, tuple):
        raise InvalidJob("after", "must be a list of job ids")
    if len(after) > MAX_PARENTS:
        raise InvalidJob("after", f"must name at most {MAX_PARENTS} jobs")
    for index, parent in enumerate(after):
        if isinstance(parent, BatchRef):
            continue
        if isinstance(parent, bool) or not isinstance(parent, int) or not 0 < parent < 2**63:
            raise InvalidJob(f"after[{index}]", "must be a job id (a positive integer)")
    if len(set(after)) != len(after):
        raise InvalidJob("after", "names a job more than once")


def _check_name(field_name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidJob(field_name, "must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidJob(field_name, f"must be at most {MAX_NAME_LENGTH} characters")
    if not value.isprintable() or value != value.strip():
        raise InvalidJob(field_name, "must not contain control characters or surrounding blanks")


class JobFacts(Protocol):
    """What a job's metric, log line and feed event say of it: a Job has it all, and so has a
    bulk action's change of one (jobd.store.queues.BulkChange), which reads no more."""

    @property
    def id(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def state(self) -> State: ...
    @property
    def attempts(self) -> int: ...
    @property
    def correlation_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    type: str
    queue: str
    priority: int
    payload: dict[str, Any]
    state: State
    attempts: int
    max_attempts: int
    crashes: int
    run_at: datetime
    timeout: float | None
    last_error: ErrorInfo | None
    result: Any
    idempotency_key: str | None
    correlation_id: str | None
    cancel_requested: bool
    lease_owner: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: Drawn afresh by each claim and cleared when the attempt ends: the fence of the claim's
    #: write-backs (a replayed outcome of an earlier claim never matches).  Internal to the
    #: stores and the supervisor, so not part of the protocol's job.
    lease_token: int | None = None
    #: The schedule that created the job (its name), None for a job submitted otherwise.
    schedule: str | None = None
    #: What the job does when a parent ends failed or canceled (ParentFailure's values).
    on_parent_failure: str = ParentFailure.CANCEL.value
    #: While `waiting`: how many of its parents have not ended.  Internal to the stores.
    pending_parents: int = 0
    #: The jobs it was submitted `after` (ids, ascending).  Not a column: the stores keep the
    #: edges apart (a claim does not load them).
    parents: tuple[int, ...] = ()
    #: The latest progress its handler reported (`ctx.progress`, a small JSON value) and when
    #: the supervisor received it; kept across attempts until the next attempt reports.
    progress: Any = None
    progress_at: datetime | None = None
    #: Seconds the job is kept once it has ended, overriding jobs.retention (NewJob's).
    result_ttl: float | None = None
    #: The attempts that ended without ending the job (retried, timed out, crashed, lease
    #: expired), oldest first, bounded (attempts_kept); the current or last attempt is the
    #: job's own fields.  Not part of the protocol's job: `attempts` shows it.
    history: tuple[AttemptRecord, ...] = ()

    @classmethod
    def new(cls, job_id: int, spec: NewJob, now: datetime) -> Job:
        return cls(
            id=job_id,
            type=spec.type,
            queue=spec.queue,
            priority=spec.priority,
            payload=spec.payload,
            state=State.WAITING if spec.after else State.PENDING,
            attempts=0,
            max_attempts=spec.max_attempts,
            crashes=0,
            run_at=spec.run_at.astimezone(UTC) if spec.run_at else now,
            timeout=spec.timeout,
            last_error=None,
            result=None,
            idempotency_key=spec.idempotency_key,
            correlation_id=spec.correlation_id,
            cancel_requested=False,
            lease_owner=None,
            lease_expires_at=None,
            created_at=now,
            updated_at=now,
            started_at=None,
            finished_at=None,
            schedule=spec.schedule,
            on_parent_failure=ParentFailure(spec.on_parent_failure).value,
            pending_parents=len(spec.after),
            result_ttl=None if spec.result_ttl is None else float(spec.result_ttl),
        )

    def with_parents(self, parents: tuple[int, ...]) -> Job:
        """The job as read with its parents (a store keeps them apart from its row)."""
        return dataclasses.replace(self, parents=parents)

    @property
    def attempts_left(self) -> int:
        return self.max_attempts - self.attempts

    def to_dict(self, times: TimeTexts | None = None) -> dict[str, Any]:
        """The job as the protocol shows it: JSON types, ISO-8601 UTC timestamps.

        A reply to submit_many or list holds up to 1,000 jobs and is built on the
        supervisor's event loop, so this avoids dataclasses.fields(); pass one `times` to
        every job of a reply: a batch's jobs share their created_at, updated_at and run_at,
        which are then printed once."""
        data = dict(zip(WIRE_FIELDS, _job_values(self), strict=True))
        data["state"] = self.state.value
        data["last_error"] = self.last_error.to_dict() if self.last_error else None
        data["parents"] = list(self.parents)
        for name in TIME_FIELDS:
            value = data[name]
            if value is not None:
                data[name] = _iso(value) if times is None else _iso_shared(value, times)
        return data

    # --- transitions: each returns the job as it is afterwards ---------------------------

    def _move(self, operation: str, now: datetime, **changes: Any) -> Job:
        sources, target = OPERATIONS[operation]
        if self.state not in sources:
            raise IllegalTransition(self.id, self.state, target, operation)
        return dataclasses.replace(self, state=target, updated_at=now, **changes)

    def claim(
        self, node: str, lease_expires_at: datetime, now: datetime, token: int | None = None
    ) -> Job:
        if self.state is State.PENDING and self.attempts >= self.max_attempts:
            raise IllegalTransition(self.id, self.state, State.RUNNING, "claim (no attempts left)")
        return self._move(
            "claim",
            now,
            attempts=self.attempts + 1,
            lease_owner=node,
            lease_expires_at=lease_expires_at,
            started_at=None,  # claimed is not started: set when its worker starts it
            lease_token=token,
        )

    def start(self, at: datetime) -> Job:
        """Its worker started the claimed job at `at` (the job stays `running`)."""
        if self.state is not State.RUNNING:
            raise IllegalTransition(self.id, self.state, State.RUNNING, "start")
        return dataclasses.replace(self, started_at=at)

    def report_progress(self, progress: Any, at: datetime) -> Job:
        """Its running attempt reported `progress` at `at` (the job stays `running`)."""
        if self.state is not State.RUNNING:
            raise IllegalTransition(self.id, self.state, State.RUNNING, "progress")
        return dataclasses.replace(self, progress=progress, progress_at=at)

    def complete(self, result: Any, now: datetime) -> Job:
        return self._move("complete", now, result=result, finished_at=now, **_ATTEMPT_ENDED)

    def fail_attempt(
        self, error: ErrorInfo, retry_at: datetime | None, now: datetime, *, crashed: bool = False
    ) -> Job:
        """End a failed attempt: back to pending at `retry_at`, or failed when `retry_at` is
        None or no attempt is left.  A cancel request wins over a retry."""
        if self.state is not State.RUNNING:
            raise IllegalTransition(self.id, self.state, State.FAILED, "fail")
        crashes = self.crashes + (1 if crashed else 0)
        if self.cancel_requested:
            return self.cancel(now, last_error=error, crashes=crashes)
        if retry_at is None or self.attempts >= self.max_attempts:
            return self._move(
                "fail",
                now,
                last_error=error,
                crashes=crashes,
                finished_at=now,
                **_ATTEMPT_ENDED,
            )
        ended = AttemptRecord.ended(self, error, now, crashed=crashed)
        return self._move(
            "retry attempt",
            now,
            last_error=error,
            crashes=crashes,
            run_at=retry_at,
            history=(*attempts_kept(self.history), ended),
            **_ATTEMPT_ENDED,
        )

    def release(self, now: datetime) -> Job:
        """Give a claimed job back without spending its attempt (drain, claimed not started)."""
        if self.state is State.RUNNING and self.cancel_requested:
            return self.cancel(now, attempts=max(self.attempts - 1, 0))
        return self._move("release", now, attempts=max(self.attempts - 1, 0), **_ATTEMPT_ENDED)

    def recover(self, now: datetime) -> Job:
        """Its node's lease expired: the attempt is spent, the job runs again if it may."""
        error = ErrorInfo(LEASE_EXPIRED_ERROR, f"lease of node {self.lease_owner} expired")
        return self.fail_attempt(error, now, now)

    def cancel(self, now: datetime, **changes: Any) -> Job:
        return self._move(
            "cancel",
            now,
            finished_at=now,
            **{**_ATTEMPT_ENDED, **changes},
        )

    def request_cancel(self, now: datetime) -> Job:
        """Cancel a waiting or pending job at once; mark a running one for its worker to be
        stopped."""
        if self.state in (State.WAITING, State.PENDING):
            return self.cancel(now, pending_parents=0)
        if self.state is State.RUNNING:
            return dataclasses.replace(self, cancel_requested=True, updated_at=now)
        raise IllegalTransition(self.id, self.state, State.CANCELED, "cancel")

    def adjust(self, now: datetime, *, run_now: bool = False, priority: int | None = None) -> Job:
        """An operator's change of a pending job: due now (a delayed job, or one waiting out
        a retry's backoff), and/or a new priority.  Any other state is refused: a running
        job's order no longer matters, a finished one's is retried first (and a waiting one's
        is set when its parents have ended)."""
        if self.state is not State.PENDING:
            only = "only a pending job's run time or priority can be changed"
            raise IllegalTransition(self.id, self.state, State.PENDING, "change", only)
        changes: dict[str, Any] = {"updated_at": now}
        if run_now and self.run_at > now:
            changes["run_at"] = now
        if priority is not None:
            changes["priority"] = priority
        return dataclasses.replace(self, **changes)

    def operator_retry(self, now: datetime, unfinished_parents: int = 0) -> Job:
        """Run a failed or canceled job again with a fresh set of attempts; a job with
        `unfinished_parents` waits for them first.  A parent that failed does not stop it:
        the operator asked for it to run."""
        return self._move(
            "retry to wait" if unfinished_parents else "retry",
            now,
            attempts=0,
            crashes=0,
            history=(),  # a fresh set of attempts, numbered from 1 again
            run_at=now,
            finished_at=None,
            cancel_requested=False,
            pending_parents=unfinished_parents,
        )

    # --- workflows: a job submitted `after` others ---------------------------------------

    def parent_ended(self, parent_id: int, parent_state: State, now: datetime) -> Job:
        """A parent of this waiting job ended in `parent_state`: canceled (ParentFailed) if it
        did not complete and this job cancels on a parent's failure; else one parent fewer to
        wait for, and pending once none is left."""
        if parent_state is not State.COMPLETED and self.on_parent_failure == ParentFailure.CANCEL:
            return self._move(
                "parent failed",
                now,
                finished_at=now,
                pending_parents=0,
                last_error=parent_failed_error(parent_id, parent_state),
            )
        left = self.pending_parents - 1
        if left > 0:
            if self.state is not State.WAITING:
                raise IllegalTransition(self.id, self.state, State.WAITING, "parent ended")
            return dataclasses.replace(self, pending_parents=left, updated_at=now)
        return self._move("parents ended", now, pending_parents=0, run_at=max(self.run_at, now))

    def parent_reopened(self, now: datetime) -> Job:
        """A parent that had ended was retried: one more parent to wait for."""
        if self.state is not State.WAITING:
            raise IllegalTransition(self.id, self.state, State.WAITING, "parent retried")
        return dataclasses.replace(self, pending_parents=self.pending_parents + 1, updated_at=now)

    def parent_retried(self, unfinished_parents: int, now: datetime) -> Job:
        """The parent whose failure canceled this job was retried: wait again (the parent is
        one of `unfinished_parents`, so there is at least one)."""
        if self.canceled_by_parent() is None:
            raise IllegalTransition(self.id, self.state, State.WAITING, "parent retried")
        return self._move(
            "parent retried",
            now,
            finished_at=None,
            pending_parents=max(unfinished_parents, 1),
        )

    def rename_failure(self, error: ErrorInfo, now: datetime) -> Job:
        """The parent named by this job's ParentFailed was retried, but another parent has
        failed too: the job stays canceled, now naming that one (whose retry restores it)."""
        if self.canceled_by_parent() is None:
            raise IllegalTransition(self.id, self.state, State.CANCELED, "rename failure")
        return dataclasses.replace(self, last_error=error, updated_at=now)

    def canceled_by_parent(self) -> int | None:
        """The parent whose failure canceled this job (ParentFailed), if that is how it ended."""
        if self.state is not State.CANCELED or self.last_error is None:
            return None
        return failed_parent(self.last_error)

    def initial_wait(self, unfinished: int, failed: tuple[int, State] | None, now: datetime) -> Job:
        """A new job submitted `after` parents: `unfinished` of them have not ended, and
        `failed` is one that ended failed or canceled (if any)."""
        if failed is not None and self.on_parent_failure == ParentFailure.CANCEL:
            return self._move(
                "parent failed",
                now,
                finished_at=now,
                last_error=parent_failed_error(*failed),
            )
        if unfinished:
            return dataclasses.replace(self, pending_parents=unfinished)
        return self._move("parents ended", now, pending_parents=0)


def parent_failed_error(parent_id: int, parent_state: State) -> ErrorInfo:
    """The last_error of a job canceled because its parent ended `parent_state`; the message
    names the parent in a fixed form (failed_parent reads it back; the SQL of the PostgreSQL
    store writes and reads the same)."""
    return ErrorInfo(PARENT_FAILED, f"parent job {parent_id} ended {parent_state.value}")


def failed_parent(error: ErrorInfo) -> int | None:
    """The parent a ParentFailed error names, None for any other error."""
    words = error.message.split(" ")
    if error.type != PARENT_FAILED or len(words) < 3 or words[:2] != ["parent", "job"]:
        return None
    return int(words[2]) if words[2].isdigit() else None


def prunable(job: Job, now: datetime, cutoff: datetime | None) -> bool:
    """Whether the prune may drop `job` (dependents aside): it has ended, and its own
    result_ttl has passed by `now` (0: at once), or it set none and it ended before the
    retention's `cutoff` (None: no retention).  The stores' prune statements say the same."""
    if not job.state.terminal or job.finished_at is None:
        return False
    if job.result_ttl is not None:
        return job.finished_at + timedelta(seconds=job.result_ttl) <= now
    return cutoff is not None and job.finished_at < cutoff


# Whatever way an attempt ends, the node lets go of the job and a pending cancel is settled.
_ATTEMPT_ENDED: dict[str, Any] = {
    "lease_owner": None,
    "lease_expires_at": None,
    "cancel_requested": False,
    "lease_token": None,
}


#: A job's timestamp fields, in the order of its fields.
TIME_FIELDS = (
    "run_at",
    "lease_expires_at",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "progress_at",
)
#: The fields the protocol shows (the lease token and the parent count stay inside the node).
WIRE_FIELDS = tuple(
    name
    for name in Job.__dataclass_fields__
    if name not in ("lease_token", "pending_parents", "history")
)
#: The fields a store keeps as columns of the job's row (the parents are edges of their own).
STORED_FIELDS = tuple(name for name in Job.__dataclass_fields__ if name != "parents")
_job_values = operator.attrgetter(*WIRE_FIELDS)


def _slot_builder(cls: type[Any]) -> Callable[[Sequence[Any]], Any]:
    """A function building a `cls` from all its fields' values, in the constructor's order,
    by setting each slot directly.

    A frozen dataclass's `__init__` sets every field through `object.__setattr__`: for a Job's
    31 fields 5.0 µs, against 2.1 µs for one straight line of slot stores (and 3.3 µs for a loop
    over them).  A Job is built for every claimed row and every submitted job, so the hot paths
    build it this way.  Nothing of the constructor's is skipped, and a class whose constructor
    does more (a `__post_init__`, a field it does not take) is refused.  The line is made with
    `exec`, as `dataclasses` makes `__init__`, from the class's own field names."""
    fields = dataclasses.fields(cls)
    if hasattr(cls, "__post_init__") or not all(f.init for f in fields):
        raise TypeError(f"{cls.__name__}'s constructor does more than set its fields")
    names = [f.name for f in fields]
    setters = {f"set_{i}": getattr(cls, name).__set__ for i, name in enumerate(names)}
    lines = [
        "def build(values):",
        f"    if len(values) != {len(names)}:",
        f"        raise TypeError(f'{cls.__name__} has {len(names)} fields, not {{len(values)}}')",
        "    obj = new(cls)",
        *(f"    set_{i}(obj, values[{i}])" for i in range(len(names))),
        "    return obj",
    ]
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls, **setters}
    exec("\n".join(lines), scope)  # our own field names only
    build: Callable[[Sequence[Any]], Any] = scope["build"]
    return build


#: Job(*values), faster (see _slot_builder): every field's value, in the constructor's order.
build_job: Callable[[Sequence[Any]], Job] = _slot_builder(Job)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _iso_shared(value: datetime, times: TimeTexts) -> str:
    key = (value, value.tzinfo)
    text = times.get(key)
    if text is None:
        text = times[key] = _iso(value)
    return text


# --- retry policy ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: a delay drawn uniformly from
    [0, min(max_delay, base * factor ** (attempt - 1))].

    Full jitter (rather than a fixed schedule) spreads the retries of many jobs that failed
    together, e.g. when a downstream service was down, so they do not return as one wave."""

    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.base < 0 or self.max_delay < 0:
            raise ValueError("backoff base and max_delay must be >= 0")
        if self.factor < 1:
            raise ValueError("backoff factor must be >= 1")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number `attempt` (1-based)."""
        exponent = max(attempt, 1) - 1
        try:
            raw = self.base * self.factor**exponent
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, raw)

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        ceiling = self.ceiling(attempt)
        return ceiling * rng() if self.jitter else ceiling


def next_run_at(
    job: Job,
    error: BaseException | None,
    backoff: Backoff,
    now: datetime,
    rng: Callable[[], float] = random.random,
) -> datetime | None:
    """When the job should run again after `error` ended its current attempt, or None when it
    must not run again (permanent error, or no attempts left)."""
    return retry_time(
        job,
        backoff,
        now,
        permanent=isinstance(error, PermanentError),
        delay=error.delay if isinstance(error, RetryLater) else None,
        rng=rng,
    )


def retry_time(
    job: Job,
    backoff: Backoff,
    now: datetime,
    *,
    permanent: bool = False,
    delay: float | None = None,
    rng: Callable[[], float] = random.random,
) -> datetime | None:
    """next_run_at with the failure as data: None when the job must not run again (a
    permanent failure, or no attempts left), else `delay` seconds from now when the handler
    asked for one, else the backoff's."""
    if permanent or job.attempts >= job.max_attempts:
        return None
    if delay is not None:
        return now + timedelta(seconds=delay)
    return now + timedelta(seconds=backoff.delay(job.attempts, rng))


def timeout_in_force(
    job: Job, handler_timeout: float | None, default_timeout: float
) -> tuple[float, str]:
    """How long an attempt of `job` may run, and where that comes from: the job's own timeout
    ("job"), else its handler's ("handler"), else the node's jobs.default_timeout ("default").
    The supervisor enforces it; `get` reports it."""
    if job.timeout is not None:
        return job.timeout, "job"
    if handler_timeout is not None:
        return handler_timeout, "handler"
    return default_timeout, "default"


def is_poison(job: Job, max_crashes: int) -> bool:
    """A job that keeps killing its worker process is failed whatever attempts it has left."""
    return job.crashes >= max_crashes
