"""Workflows in the SQLite store: the edges (job_deps), and the walks of jobd.store.workflows
run over the rows inside the store's write transaction (one node per file, so the write lock
is all the locking a parent's end and a dependent's submit need)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime

from jobd.domain import Job, NewJob
from jobd.store import workflows
from jobd.store.base import Links, Submitted
from jobd.store.sqlite.rows import job_from_row, update_row
from jobd.store.sqlite.sql import (
    CHILDREN,
    INSERT_EDGE,
    PARENTS,
    PARENTS_OF_CHILDREN,
    SELECT_BY_ID,
    TERMINAL,
    UPDATE_JOB,
)

#: An operator's change of one job: the job afterwards, and the dependents it moved on.
Change = Callable[[sqlite3.Connection, Job, datetime], tuple[Job, list[Job]]]


class SQLiteGraph:
    """The jobs and edges as jobd.store.workflows walks them, read and written in place."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def job(self, job_id: int) -> Job | None:
        row = self._conn.execute(SELECT_BY_ID, (job_id,)).fetchone()
        return None if row is None else job_from_row(row)

    def children_of(self, job_id: int) -> list[int]:
        return [child for (child,) in self._conn.execute(CHILDREN, (job_id,))]

    def parents_of(self, job_id: int) -> list[int]:
        return [parent for (parent,) in self._conn.execute(PARENTS, (job_id,))]

    def save(self, job: Job) -> None:
        self._conn.execute(UPDATE_JOB, update_row(job))


def link(
    conn: sqlite3.Connection, specs: Sequence[NewJob], out: list[Submitted], now: datetime
) -> list[Submitted]:
    """After a batch's insert: each new job with parents gets its edges and waits for them,
    parents first.  An unknown parent raises InvalidParams, and the transaction rolls back."""
    if not any(spec.after for spec in specs):
        return out
    graph = SQLiteGraph(conn)
    ids: list[int | None] = [s.job.id for s in out]
    for index in workflows.batch_order(specs):
        submitted, spec = out[index], specs[index]
        if not submitted.created or not spec.after:
            continue
        parents = workflows.resolve_after(spec, ids)
        for parent in parents:
            if graph.job(parent) is None:
                raise workflows.unknown_parent(spec, parent, index, len(specs))
        conn.executemany(INSERT_EDGE, [(parent, submitted.job.id) for parent in parents])
        job = dataclasses.replace(submitted.job, parents=parents)
        out[index] = Submitted(workflows.wait_for_parents(graph, job, now), created=True)
    return out


def parents_ended(conn: sqlite3.Connection, ended: Sequence[Job], now: datetime) -> list[Job]:
    return workflows.parents_ended(SQLiteGraph(conn), ended, now)


def cancel(conn: sqlite3.Connection, job: Job, now: datetime) -> tuple[Job, list[Job]]:
    job = job.request_cancel(now)
    conn.execute(UPDATE_JOB, update_row(job))
    return job, workflows.parents_ended(SQLiteGraph(conn), [job], now)


def retry(conn: sqlite3.Connection, job: Job, now: datetime) -> tuple[Job, list[Job]]:
    (job,), dependents = workflows.retry_all(SQLiteGraph(conn), [job], now)
    return job, dependents


def links(conn: sqlite3.Connection, job: Job) -> Links:
    children = SQLiteGraph(conn).children_of(job.id)
    rows = conn.execute(
        f"SELECT id FROM jobs WHERE id IN (SELECT parent FROM job_deps WHERE child = ?)"
        f" AND state NOT IN {TERMINAL} ORDER BY id",
        (job.id,),
    )
    return Links(children, [parent for (parent,) in rows])


def with_parents(conn: sqlite3.Connection, job: Job) -> Job:
    parents = tuple(SQLiteGraph(conn).parents_of(job.id))
    return dataclasses.replace(job, parents=parents) if parents else job


def with_parents_of_all(conn: sqlite3.Connection, jobs: list[Job]) -> list[Job]:
    """`jobs` with their parents, read in one query."""
    found: dict[int, list[int]] = {}
    for child, parent in conn.execute(PARENTS_OF_CHILDREN, (json.dumps([j.id for j in jobs]),)):
        found.setdefault(child, []).append(parent)
    if not found:
        return jobs
    return [
        dataclasses.replace(job, parents=tuple(sorted(found[job.id]))) if job.id in found else job
        for job in jobs
    ]


def connected_ids(conn: sqlite3.Connection, start: int) -> set[int]:
    """The jobs linked to `start` through `after` either way: one recursive query."""
    rows = conn.execute(
        """
        WITH RECURSIVE linked(id) AS (
            SELECT ?1
            UNION
            SELECT d.child FROM job_deps d JOIN linked ON d.parent = linked.id
            UNION
            SELECT d.parent FROM job_deps d JOIN linked ON d.child = linked.id
        )
        SELECT id FROM linked
        """,
        (start,),
    )
    return {job_id for (job_id,) in rows}
