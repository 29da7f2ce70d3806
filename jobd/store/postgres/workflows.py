"""Workflows in the PostgreSQL store: what a submit `after` other jobs, an operator's change
and a read add to the store's operations.  The walks themselves are SQL functions
(migrations/postgres/0005_workflows.sql), called in the transaction (or the statement) that
changes the job, so that a dependent moves on with its parent's end, never later."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jobd.domain import Job, NewJob, ParentFailure, State
from jobd.store import workflows
from jobd.store.base import Links, Notification, NotificationKind, Submitted
from jobd.store.postgres.connections import Connection

if TYPE_CHECKING:
    from jobd.store.postgres.store import PostgresStore
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import job_from_row, lookup_id, not_found


async def link(conn: Connection, specs: Sequence[NewJob], out: list[Submitted | None]) -> None:
    """After a batch's insert, in its transaction: each new job with parents gets its edges
    and waits for them (jobd_link), parents first; `out` then holds each job as it is.  An
    unknown parent raises InvalidParams naming the field, which rolls the transaction back."""
    if not any(spec.after for spec in specs):
        return
    ids = [s.job.id if s is not None else None for s in out]
    order = [
        i
        for i in workflows.batch_order(specs)
        if specs[i].after and (s := out[i]) is not None and s.created
    ]
    parents = {i: workflows.resolve_after(specs[i], ids) for i in order}
    runs = [ids[i] for i in order if specs[i].on_parent_failure == ParentFailure.RUN]
    if runs:
        await conn.execute(QUERIES["workflow_policy"], {"ids": runs})
    cur = await conn.execute(
        QUERIES["workflow_link"],
        {
            "children": [ids[i] for i in order],
            "parents": [json.dumps(list(parents[i])) for i in order],
        },
    )
    for index, row in zip(order, await cur.fetchall(), strict=True):
        if row["missing"] is not None:
            raise workflows.unknown_parent(specs[index], row["missing"], index, len(specs))
    linked = await jobs_by_id(conn, [ids[i] for i in order])
    for i in order:
        out[i] = Submitted(linked[ids[i]], created=True)  # type: ignore[index]


async def after_change(conn: Connection, before: Job, job: Job) -> Job:
    """After an operator's change of `job` (written, and moved to the table its state belongs
    in): a job that ended releases its dependents; a job retried waits for its unfinished
    parents, and its dependents wait for it again.  Returns the job as it is now."""
    if job.state.terminal:
        await parents_ended(conn, [job])
        return job
    if before.state.terminal:
        return (await retried(conn, [job.id]))[job.id]
    return job


async def retried(conn: Connection, ids: Sequence[int]) -> dict[int, Job]:
    """Jobs an operator retried (moved back and pending, every one of them already): each waits
    for its unfinished parents, and their dependents wait for them again.  They as they are now."""
    await conn.execute(QUERIES["workflow_retried"], {"ids": list(ids)})
    return await jobs_by_id(conn, ids)


async def purgeable(conn: Connection, jobs: Sequence[Job]) -> list[Job]:
    """The finished jobs among these that no unfinished dependent needs, for a purge."""
    cur = await conn.execute(QUERIES["workflow_needed"], {"ids": [job.id for job in jobs]})
    needed = {row["parent"] for row in await cur.fetchall()}
    return [job for job in jobs if job.id not in needed]


async def forget(conn: Connection, ids: Sequence[int]) -> None:
    """The edges of purged jobs."""
    await conn.execute(QUERIES["workflow_forget"], {"ids": list(ids)})


def announce_released(store: PostgresStore, rows: Sequence[dict[str, Any]]) -> None:
    """Dependents the finish statement released (its rows count them) are new work for this
    node too: its own NOTIFY does not come back to it (the listener drops its echo)."""
    if any(row.get("dependents") for row in rows):
        store._notify(Notification(NotificationKind.SUBMITTED))


async def parents_ended(conn: Connection, ended: Sequence[Job] | Sequence[dict[str, Any]]) -> None:
    """The dependents of jobs that ended outside the finish statement (which does this itself):
    a retried attempt with none left, a lease recovered with none left, a cancel."""
    ids, states = [], []
    for item in ended:
        job_id, state = (
            (item.id, item.state) if isinstance(item, Job) else (item["id"], item["state"])
        )
        if State(state).terminal:
            ids.append(job_id)
            states.append(State(state).value)
    if ids:
        await conn.execute(QUERIES["workflow_parents_ended"], {"ids": ids, "states": states})


async def jobs_by_id(conn: Connection, ids: Sequence[int | None]) -> dict[int, Job]:
    cur = await conn.execute(QUERIES["workflow_jobs"], {"ids": list(ids)})
    jobs = [job_from_row(row) for row in await cur.fetchall()]
    return {job.id: job for job in await with_parents(conn, jobs)}


async def with_parents(conn: Connection, jobs: list[Job]) -> list[Job]:
    """`jobs` with their parents (one query for all of them)."""
    if not jobs:
        return jobs
    cur = await conn.execute(QUERIES["workflow_parents"], {"ids": [job.id for job in jobs]})
    found = {row["child"]: tuple(row["parents"]) for row in await cur.fetchall()}
    if not found:
        return jobs
    return [job.with_parents(found[job.id]) if job.id in found else job for job in jobs]


# --- the store's methods (PostgresStore.children, .parent_results) ----------------------------


async def links(store: PostgresStore, job_id: int) -> Links:
    async with store.pool.connection() as conn:
        await _exists(conn, job_id)
        cur = await conn.execute(QUERIES["workflow_children"], {"id": job_id})
        children = [row["child"] for row in await cur.fetchall()]
        cur = await conn.execute(QUERIES["workflow_unfinished_parents"], {"id": job_id})
        return Links(children, [row["parent"] for row in await cur.fetchall()])


async def parent_results(store: PostgresStore, job_id: int) -> dict[int, Any]:
    async with store.pool.connection() as conn:
        await _exists(conn, job_id)
        cur = await conn.execute(QUERIES["workflow_parent_results"], {"id": job_id})
        return {row["id"]: row["result"] for row in await cur.fetchall()}


async def _exists(conn: Connection, job_id: int) -> None:
    cur = await conn.execute(QUERIES["get"], {"id": lookup_id(job_id)})
    if await cur.fetchone() is None:
        raise not_found(job_id)


async def connected(conn: Connection, job_id: int | None) -> list[int] | None:
    """The jobs linked to `job_id` through `after` either way (None: no workflow filter)."""
    if job_id is None:
        return None
    cur = await conn.execute(QUERIES["workflow_connected"], {"id": lookup_id(job_id)})
    return [row["id"] for row in await cur.fetchall()]
