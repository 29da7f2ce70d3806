"""What every store records of a schedule, and the decision each `enqueue_ticks` makes inside
its transaction (docs/adr/0026-periodic-jobs.md).

A store keeps one row per schedule (its last tick, pause state, the definition hash of the
node that last wrote it) and a history of the jobs its ticks and triggers created.  Enqueuing
locks the row, reads the database's clock, decides here what to submit, inserts those jobs,
moves the last tick and writes the history -- one transaction, so a tick gets its job exactly
once however many nodes ask at the same moment.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobd.domain import DEFAULT_MAX_ATTEMPTS, Job, NewJob, State
from jobd.schedules import Overlap, Schedule, plan_ticks

#: How long the history of a schedule's ticks is kept (older rows go as new ones are written).
HISTORY_KEPT = timedelta(days=7)


class RunKind(enum.StrEnum):
    """Why a job of a schedule was created."""

    TICK = "tick"  # a tick, on time or caught up
    TRIGGER = "trigger"  # an operator's `schedule_trigger`: one run now, outside the ticks


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A schedule's row: what the fleet has done with it so far."""

    name: str
    last_tick: datetime | None
    paused: bool
    definition_hash: str | None
    last_job_id: int | None = None
    last_job_state: State | None = None


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one `enqueue_ticks` did."""

    jobs: tuple[Job, ...]  # created, oldest tick first
    missed: int  # ticks passed over by the catch-up policy or window
    overlap_skipped: int  # ticks not run because the previous run was pending or running
    paused: bool
    #: The definition hash another node wrote last, when it differs from this node's.
    other_definition: str | None = None


@dataclass(frozen=True, slots=True)
class TickDecision:
    """The store's part of a TickResult: which ticks get a job, and the new last tick."""

    ticks: tuple[datetime, ...]
    missed: int
    overlap_skipped: int
    settled: datetime | None


def decide(
    schedule: Schedule, record: ScheduleRecord | None, now: datetime, previous_busy: bool
) -> TickDecision:
    """The ticks to submit at `now` (the database's clock); `previous_busy`: a job of the
    schedule is pending or running (only read for `overlap: skip`)."""
    plan = plan_ticks(schedule, record.last_tick if record else None, now)
    if record is not None and record.paused:
        # Paused ticks are neither run nor caught up on resume: the schedule resumes at its
        # next tick.
        return TickDecision((), 0, 0, plan.settled)
    if plan.enqueue and schedule.overlap is Overlap.SKIP and previous_busy:
        return TickDecision((), plan.missed, len(plan.enqueue), plan.settled)
    if plan.enqueue and schedule.overlap is Overlap.SKIP:
        # One run at a time: only the newest of several due ticks.
        skipped = len(plan.enqueue) - 1
        return TickDecision(plan.enqueue[-1:], plan.missed, skipped, plan.settled)
    return TickDecision(plan.enqueue, plan.missed, 0, plan.settled)


def tick_job(
    schedule: Schedule, run_at: datetime, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> NewJob:
    """The job of `schedule` for the tick (or trigger) at `run_at`; `default_max_attempts`
    stands in when the definition gives none (the node's configured default)."""
    spec = schedule.job.to_new_job(default_max_attempts, os.urandom(16).hex(), run_at)
    return dataclasses.replace(spec, run_at=run_at, schedule=schedule.name)


def queues_of(jobs: Sequence[Job]) -> list[str]:
    return sorted({job.queue for job in jobs})


def other_definition(record: ScheduleRecord | None, schedule: Schedule) -> str | None:
    if record is None or record.definition_hash in (None, schedule.definition_hash):
        return None
    return record.definition_hash
