"""The PostgreSQL store's schedule operations (the schedules and schedule_runs tables of
schema 4): the store's four methods (PostgresStore takes them as they are), and the steps each
runs inside its transaction."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from psycopg.types.json import Jsonb

from jobd.domain import DEFAULT_MAX_ATTEMPTS, Job, State
from jobd.schedules import Schedule
from jobd.store.postgres.connections import Connection
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import Row, fetch_one, job_from_row, utc
from jobd.store.schedules import (
    HISTORY_KEPT,
    RunKind,
    ScheduleRecord,
    TickResult,
    decide,
    other_definition,
    queues_of,
    tick_job,
)

if TYPE_CHECKING:
    from jobd.store.postgres.store import PostgresStore


async def enqueue_ticks(
    store: PostgresStore, schedule: Schedule, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> TickResult:
    async with store.pool.connection() as conn, conn.transaction():
        result = await _enqueue(conn, schedule, default_max_attempts)
        await store._pg_notify(conn, store.submit_channel, queues_of(result.jobs))
    store._notify_submitted(result.jobs)
    return result


async def trigger_schedule(
    store: PostgresStore, schedule: Schedule, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> Job:
    """One job of `schedule` now (the database's clock), outside its ticks."""
    async with store.pool.connection() as conn, conn.transaction():
        await lock(conn, schedule)
        clock = await fetch_one(await conn.execute(QUERIES["schedule_clock"], {"name": ""}))
        job = await insert_run(
            conn, schedule, clock["db_now"], RunKind.TRIGGER, default_max_attempts
        )
        await store._pg_notify(conn, store.submit_channel, [job.queue])
    store._notify_submitted((job,))
    return job


async def schedule_records(store: PostgresStore) -> list[ScheduleRecord]:
    async with store.pool.connection() as conn:
        return await records(conn)


async def set_schedule_paused(store: PostgresStore, name: str, paused: bool) -> ScheduleRecord:
    async with store.pool.connection() as conn, conn.transaction():
        await conn.execute(QUERIES["schedule_pause"], {"name": name, "paused": paused})
        (record,) = await records(conn, name)
    return record


async def _enqueue(conn: Connection, schedule: Schedule, default_max_attempts: int) -> TickResult:
    record = await lock(conn, schedule)
    clock = await fetch_one(await conn.execute(QUERIES["schedule_clock"], {"name": schedule.name}))
    decision = decide(schedule, record, clock["db_now"], clock["busy"])
    jobs = tuple(
        [
            await insert_run(conn, schedule, tick, RunKind.TICK, default_max_attempts)
            for tick in decision.ticks
        ]
    )
    params = {
        "name": schedule.name,
        "last_tick": decision.settled,
        "hash": schedule.definition_hash,
    }
    await conn.execute(QUERIES["schedule_settle"], params)
    if jobs:
        kept = {"name": schedule.name, "kept": HISTORY_KEPT.total_seconds()}
        await conn.execute(QUERIES["schedule_prune_runs"], kept)
    other = other_definition(record, schedule)
    return TickResult(jobs, decision.missed, decision.overlap_skipped, record.paused, other)


async def lock(conn: Connection, schedule: Schedule) -> ScheduleRecord:
    """The schedule's row, created if need be, locked until the transaction ends."""
    params = {"name": schedule.name, "hash": schedule.definition_hash}
    await conn.execute(QUERIES["schedule_create"], params)
    row = await fetch_one(await conn.execute(QUERIES["schedule_lock"], params))
    return record_from_row(row)


async def insert_run(
    conn: Connection,
    schedule: Schedule,
    tick: datetime,
    kind: RunKind,
    default_max_attempts: int,
) -> Job:
    spec = tick_job(schedule, tick, default_max_attempts)
    params = {
        "type": spec.type,
        "queue": spec.queue,
        "priority": spec.priority,
        "payload": Jsonb(spec.payload),
        "max_attempts": spec.max_attempts,
        "run_at": utc(spec.run_at),
        "timeout": spec.timeout,
        "correlation_id": spec.correlation_id,
        "schedule": spec.schedule,
    }
    job = job_from_row(await fetch_one(await conn.execute(QUERIES["schedule_insert"], params)))
    run = {"name": schedule.name, "tick": utc(tick), "job_id": job.id, "kind": kind.value}
    await conn.execute(QUERIES["schedule_run"], run)
    return job


async def records(conn: Connection, name: str | None = None) -> list[ScheduleRecord]:
    cur = await conn.execute(QUERIES["schedule_records"], {"name": name})
    return [record_from_row(row) for row in await cur.fetchall()]


def record_from_row(row: Row) -> ScheduleRecord:
    state = row.get("last_job_state")
    return ScheduleRecord(
        row["name"],
        row["last_tick"],
        row["paused"],
        row["definition_hash"],
        row.get("last_job_id"),
        None if state is None else State(state),
    )
