"""The control methods that read what happened before now (jobd.protocol): `attempts`, a job's
attempts with their times and outcomes, and `activity`, the jobs that ended in each of the last
hour's minutes.  Both are read-only, over the same store as jobd.control's Operations
(docs/adr/0034-attempt-history.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobd.domain import AttemptRecord, Job, State
from jobd.protocol import IdParams, NoParams
from jobd.store.activity import ACTIVITY_MINUTES, Activity, window_start
from jobd.store.nodes import iso

if TYPE_CHECKING:
    from jobd.control import Operations


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _recorded(entry: AttemptRecord) -> dict[str, Any]:
    return {
        "attempt": entry.attempt,
        "started_at": _iso(entry.started_at),
        "ended_at": _iso(entry.ended_at),
        "outcome": entry.outcome.value,
        "error": {"type": entry.error_type, "message": entry.error_message},
    }


def _own(job: Job) -> dict[str, Any] | None:
    """The job's current or last attempt, from its own fields, unless its history holds it
    (a pending job's last attempt was retried) or it has none."""
    if job.attempts == 0 or job.state not in (State.RUNNING, *(s for s in State if s.terminal)):
        return None
    if job.history and job.history[-1].attempt >= job.attempts:
        return None
    running = job.state is State.RUNNING
    error = job.last_error if job.state in (State.FAILED, State.CANCELED) else None
    return {
        "attempt": job.attempts,
        "started_at": _iso(job.started_at),
        "ended_at": None if running else _iso(job.finished_at),
        "outcome": job.state.value,
        "error": None if error is None else {"type": error.type, "message": error.message},
    }


def attempts_view(job: Job) -> dict[str, Any]:
    """`attempts`' answer: every attempt recorded, then the job's own; `omitted` counts the
    attempts between the first and the last ones kept (jobd.limits.ATTEMPT_HISTORY_KEEP)."""
    rows = [_recorded(entry) for entry in job.history]
    own = _own(job)
    if own is not None:
        rows.append(own)
    omitted = job.history[-1].attempt - len(job.history) if job.history else 0
    return {"id": job.id, "state": job.state.value, "attempts": rows, "omitted": max(omitted, 0)}


def activity_view(activity: Activity) -> dict[str, Any]:
    """`activity`'s answer: every one of the last ACTIVITY_MINUTES minutes, oldest first."""
    first = window_start(activity.now)
    counted = {m.minute: m for m in activity.minutes}
    minutes = []
    for n in range(ACTIVITY_MINUTES):
        minute = first + timedelta(minutes=n)
        count = counted.get(minute)
        minutes.append(
            {
                "minute": _iso(minute),
                "completed": count.completed if count else 0,
                "failed": count.failed if count else 0,
            }
        )
    return {"now": _iso(activity.now), "minutes": minutes}


class HistoryOperations:
    def __init__(self, ops: Operations):
        self.ops = ops

    def handlers(self) -> dict[str, Callable[[Any], Awaitable[Any]]]:
        return {"attempts": self.attempts, "activity": self.activity}

    async def attempts(self, params: IdParams) -> dict[str, Any]:
        job: Job = await self.ops._store(self.ops.store.get(params.id))
        return attempts_view(job)

    async def activity(self, _: NoParams) -> dict[str, Any]:
        return activity_view(await self.ops._store(self.ops.store.activity()))
