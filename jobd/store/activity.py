"""The last hour's finished jobs per minute (the control protocol's `activity`): what the
dashboard's chart shows, counted by the store from the jobs that ended, so that it is the same
from every node and survives a restart of the HTTP shim (docs/adr/0034-attempt-history.md).

A job counts in the minute of its finished_at, in its current state: an operator's retry of a
failed job takes it out of the count (its row is no longer failed), and its next end counts
anew.  Canceled jobs are not counted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobd.domain import State

if TYPE_CHECKING:
    from jobd.store.memory import MemoryStore

#: The minutes `activity` covers, the current one included.
ACTIVITY_MINUTES = 60


@dataclass(frozen=True, slots=True)
class MinuteCount:
    """Jobs that ended in one minute (`minute`: its start, UTC)."""

    minute: datetime
    completed: int
    failed: int


@dataclass(frozen=True, slots=True)
class Activity:
    """The store's clock when it counted, and each of the last ACTIVITY_MINUTES minutes that
    had a finished job, oldest first (a minute with none is absent)."""

    now: datetime
    minutes: list[MinuteCount]


def window_start(now: datetime) -> datetime:
    """The start of the oldest minute counted at `now`."""
    return now.replace(second=0, microsecond=0) - timedelta(minutes=ACTIVITY_MINUTES - 1)


def per_minute(now: datetime, ends: list[tuple[datetime, State]]) -> Activity:
    """Count `ends` (finished_at, state) by minute."""
    counts: dict[datetime, list[int]] = {}
    for at, state in ends:
        if state in (State.COMPLETED, State.FAILED):
            minute = at.replace(second=0, microsecond=0)
            counts.setdefault(minute, [0, 0])[state is State.FAILED] += 1
    return Activity(now, [MinuteCount(m, c, f) for m, (c, f) in sorted(counts.items())])


async def memory_activity(store: MemoryStore) -> Activity:
    with store._lock:
        now = store._clock()
        start = window_start(now)
        ends = [
            (job.finished_at, job.state)
            for job in store._jobs.values()
            if job.finished_at is not None and job.finished_at >= start
        ]
    return per_minute(now, ends)
