"""The SQLite store's schedule operations (the schedules and schedule_runs tables of
migration 0004): each function runs on the database thread, inside the caller's write
transaction, which SQLite holds alone (BEGIN IMMEDIATE): that is the lock on the schedule."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime

from jobd.domain import Job
from jobd.schedules import Schedule
from jobd.store.schedules import (
    HISTORY_KEPT,
    RunKind,
    ScheduleRecord,
    TickResult,
    decide,
    other_definition,
    tick_job,
)
from jobd.store.sqlite.rows import STATES, insert_row, opt_dt, opt_ts, ts
from jobd.store.sqlite.sql import INSERT_JOB, LAST_ID

_CREATE = """
INSERT INTO schedules (name, definition_hash, updated_at) VALUES (?, ?, ?)
ON CONFLICT (name) DO NOTHING
"""
_SELECT = "SELECT name, last_tick, paused, definition_hash FROM schedules WHERE name = ?"
_BUSY = """
SELECT EXISTS (SELECT 1 FROM jobs WHERE schedule = ? AND state IN ('pending', 'running'))
"""
_RUN = "INSERT INTO schedule_runs (name, tick, job_id, kind, created_at) VALUES (?, ?, ?, ?, ?)"
_SETTLE = """
UPDATE schedules SET last_tick = coalesce(?, last_tick), definition_hash = ?, updated_at = ?
 WHERE name = ?
"""
_PRUNE_RUNS = "DELETE FROM schedule_runs WHERE name = ? AND tick < ?"
_PAUSE = """
INSERT INTO schedules (name, paused, updated_at) VALUES (?, ?, ?)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at
"""
# Each schedule with the job of its latest run (ids grow, so the highest is the latest).
_RECORDS = """
SELECT s.name, s.last_tick, s.paused, s.definition_hash, r.job_id, j.state
  FROM schedules s
  LEFT JOIN schedule_runs r
    ON r.name = s.name
   AND r.job_id = (SELECT max(job_id) FROM schedule_runs WHERE name = s.name)
  LEFT JOIN jobs j ON j.id = r.job_id
 WHERE ? IS NULL OR s.name = ?
 ORDER BY s.name
"""


def enqueue_ticks(
    conn: sqlite3.Connection, now: datetime, schedule: Schedule, default_max_attempts: int
) -> TickResult:
    record = lock(conn, schedule, now)
    (busy,) = conn.execute(_BUSY, (schedule.name,)).fetchone()
    decision = decide(schedule, record, now, bool(busy))
    jobs = tuple(
        insert_run(conn, schedule, tick, RunKind.TICK, now, default_max_attempts)
        for tick in decision.ticks
    )
    settled = opt_ts(decision.settled)
    conn.execute(_SETTLE, (settled, schedule.definition_hash, ts(now), schedule.name))
    if jobs:
        conn.execute(_PRUNE_RUNS, (schedule.name, ts(now - HISTORY_KEPT)))
    other = other_definition(record, schedule)
    return TickResult(jobs, decision.missed, decision.overlap_skipped, record.paused, other)


def lock(conn: sqlite3.Connection, schedule: Schedule, now: datetime) -> ScheduleRecord:
    """The schedule's row, created if need be."""
    conn.execute(_CREATE, (schedule.name, schedule.definition_hash, ts(now)))
    name, last_tick, paused, definition_hash = conn.execute(_SELECT, (schedule.name,)).fetchone()
    return ScheduleRecord(name, opt_dt(last_tick), bool(paused), definition_hash)


def insert_run(
    conn: sqlite3.Connection,
    schedule: Schedule,
    tick: datetime,
    kind: RunKind,
    now: datetime,
    default_max_attempts: int,
) -> Job:
    (last_id,) = conn.execute(LAST_ID).fetchone()
    job = Job.new(last_id + 1, tick_job(schedule, tick, default_max_attempts), now)
    job = dataclasses.replace(job, run_at=job.run_at.astimezone(UTC))
    conn.execute(INSERT_JOB, insert_row(job))
    conn.execute(_RUN, (schedule.name, ts(tick), job.id, kind.value, ts(now)))
    return job


def records(conn: sqlite3.Connection, name: str | None = None) -> list[ScheduleRecord]:
    return [
        ScheduleRecord(
            row_name,
            opt_dt(last_tick),
            bool(paused),
            definition_hash,
            job_id,
            None if state is None else STATES[state],
        )
        for row_name, last_tick, paused, definition_hash, job_id, state in conn.execute(
            _RECORDS, (name, name)
        )
    ]


def set_paused(conn: sqlite3.Connection, now: datetime, name: str, paused: bool) -> ScheduleRecord:
    conn.execute(_PAUSE, (name, int(paused), ts(now)))
    (record,) = records(conn, name)
    return record
