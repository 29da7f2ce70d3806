"""What happens to a job when its attempt ends: pure functions from the job, what its worker
reported (or how it died, or why it was stopped) and the job's policy to the Outcome the store
is asked to apply.  No I/O; the clock and the retry policy are passed in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from jobd.domain import (
    TIMEOUT_ERROR,
    Backoff,
    ErrorInfo,
    Job,
    is_poison,
    retry_time,
    timeout_in_force,
)
from jobd.handlers import HandlerSpec
from jobd.pipe import Failure, FailureKind
from jobd.store import Outcome, OutcomeKind
from jobd.supervisor.settings import SupervisorSettings


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """The limits one job runs under: its own, else its handler's, else the node's."""

    timeout: float
    backoff: Backoff
    max_crashes: int

    @classmethod
    def of(cls, job: Job, spec: HandlerSpec | None, settings: SupervisorSettings) -> JobPolicy:
        backoff = spec.backoff if spec and spec.backoff else settings.backoff
        return cls(timeout_of(job, spec, settings), backoff, settings.max_crashes)


def timeout_of(job: Job, spec: HandlerSpec | None, settings: SupervisorSettings) -> float:
    """How long the job may run (domain.timeout_in_force)."""
    handler_timeout = None if spec is None else spec.timeout
    return timeout_in_force(job, handler_timeout, settings.default_timeout)[0]


def completed(job: Job, result: object) -> Outcome:
    return Outcome(job.id, job.attempts, OutcomeKind.COMPLETED, result=result)


def released(job: Job) -> Outcome:
    """Given back unstarted (or drained): the attempt is not spent."""
    return Outcome(job.id, job.attempts, OutcomeKind.RELEASED)


def canceled_before_start(job: Job) -> Outcome:
    return Outcome(job.id, job.attempts, OutcomeKind.CANCELED)


def unknown_type(job: Job, known: list[str]) -> Outcome:
    names = ", ".join(known)
    error = ErrorInfo("UnknownType", f"unknown job type {job.type!r} (this node runs: {names})")
    return Outcome(job.id, job.attempts, OutcomeKind.FAILED, error=error)


def stopped(job: Job, reason: str, policy: JobPolicy, now: datetime) -> Outcome:
    """The supervisor stopped the job: `reason` is "cancel", "drain" or "timeout"."""
    if reason == "cancel":
        error = ErrorInfo("Canceled", "canceled while running")
        return Outcome(job.id, job.attempts, OutcomeKind.CANCELED, error=error)
    if reason == "drain":
        return released(job)
    error = ErrorInfo(TIMEOUT_ERROR, f"timed out after {policy.timeout:g}s")
    retry_at = retry_time(job, policy.backoff, now)
    return Outcome(job.id, job.attempts, OutcomeKind.FAILED, error=error, retry_at=retry_at)


def failed(
    job: Job, failure: Failure, cancelled_before_start: bool, policy: JobPolicy, now: datetime
) -> Outcome:
    """The worker reported `failure` of a job the supervisor was not stopping (that one ends
    as `stopped`).  A job cancelled before it started that stopped on that cancel ends
    canceled; a handler that stopped by itself failed like any other error."""
    if failure.kind is FailureKind.CANCELLED and cancelled_before_start:
        return stopped(job, "cancel", policy, now)
    retry_at = retry_time(
        job,
        policy.backoff,
        now,
        permanent=failure.kind is FailureKind.PERMANENT,
        delay=failure.retry_delay if failure.kind is FailureKind.RETRY else None,
    )
    return Outcome(job.id, job.attempts, OutcomeKind.FAILED, error=failure.error, retry_at=retry_at)


def crashed(job: Job, worker: int, how: str, policy: JobPolicy, now: datetime) -> Outcome:
    """The worker running the job died (`how`: its exit in words): a crash counts against the
    job, and a job that keeps killing its worker fails as poison whatever attempts it has."""
    crashes = job.crashes + 1
    if is_poison(dataclasses.replace(job, crashes=crashes), policy.max_crashes):
        error = ErrorInfo(
            "PoisonJob",
            f"worker {worker} {how}; the job has killed its worker {crashes} times"
            f" (workers.max_crashes = {policy.max_crashes})",
        )
        retry_at = None
    else:
        error = ErrorInfo("WorkerCrashed", f"worker {worker} {how} while running this job")
        retry_at = retry_time(job, policy.backoff, now)
    return Outcome(
        job.id,
        job.attempts,
        OutcomeKind.FAILED,
        error=error,
        retry_at=retry_at,
        crashed=True,
    )
