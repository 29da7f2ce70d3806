"""The PostgreSQL store's bulk actions (cancel_many, retry_many, purge; docs/adr/0030): each
batch is one set-based statement that picks its candidates, locks them, applies the action's
change in SQL and returns the few columns its caller uses (jobd.store.queues.BulkChange);
a retry of jobs in a workflow adds the workflow's walk, a cancel its dependents' release.

The changes are the domain's (`Job.operator_retry`, `Job.request_cancel`) written as column
values: `_RETRIED` and `_CANCELED` below mirror them, and the store contract tests keep the
three stores equal.  Building them in SQL rather than as Jobs matters because the batches run
on the I/O thread that also carries the claims and finishes: a batch of 1,000 jobs built,
changed and written back one row at a time held that thread for tens of milliseconds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobd.domain import State
from jobd.store.base import JobFilter, Notification, NotificationKind
from jobd.store.postgres import workflows as workflow_rows
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import JOB_FIELDS, Row
from jobd.store.queues import BulkAction, BulkBatch, BulkChange, bulk_filter

if TYPE_CHECKING:
    from jobd.store.postgres.connections import Connection
    from jobd.store.postgres.store import PostgresStore

#: The list's filters (JobFilter) as SQL, on either table; `filter_params` gives their values.
FILTERS = """
       (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
   AND (%(type)s::text IS NULL OR type = %(type)s::text)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
   AND (%(created_after)s::timestamptz IS NULL OR created_at > %(created_after)s::timestamptz)
   AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s::timestamptz)
   AND (%(schedule)s::text IS NULL OR schedule = %(schedule)s::text)
"""

# Job.operator_retry (ADR 0004, 0034): pending again, a fresh set of attempts numbered from 1
# (no history), due now; last_error and result are kept.
_RETRIED = {
    "state": "'pending'",
    "attempts": "0",
    "crashes": "0",
    "history": "NULL",
    "run_at": "now()",
    "finished_at": "NULL",
    "cancel_requested": "false",
    "pending_parents": "0",
    "updated_at": "now()",
}
# Job.request_cancel of a waiting or pending job (Job.cancel): canceled now, no lease.
_CANCELED = {
    "state": "'canceled'",
    "finished_at": "now()",
    "pending_parents": "0",
    "lease_owner": "NULL",
    "lease_expires_at": "NULL",
    "lease_token": "NULL",
    "cancel_requested": "false",
    "updated_at": "now()",
}


def _copy(into: str, source: str, changes: dict[str, str]) -> str:
    """An INSERT of `source`'s rows into `into` (jobs and finished_jobs have the same columns)
    with `changes` applied; the column list is the domain's, as in every statement."""
    unknown = set(changes) - set(JOB_FIELDS)
    if unknown:  # pragma: no cover - a field renamed in the domain but not here
        raise RuntimeError(f"not columns of a job: {sorted(unknown)}")
    values = ", ".join(changes.get(name, f"s.{name}") for name in JOB_FIELDS)
    return f"INSERT INTO {into} ({', '.join(JOB_FIELDS)}) SELECT {values} FROM {source} AS s"


_RETURNED = "id, type, queue, state, attempts, correlation_id, lease_owner"

# A batch: its candidates read without a lock (the filter, ids ascending from the cursor);
# then locked by id, skipping those another transaction holds (a claim, a finish, a
# heartbeat): a bulk action never waits for a lock, so it can neither deadlock with a node's
# statements nor hold them up.  Each action's `changed` acts on the locked rows that still
# match; the answer is one row per changed job (none: one row with the counts alone).
_BATCH = """
WITH candidates AS MATERIALIZED (
    SELECT id FROM {table}
     WHERE id > %(after)s AND {filters}
     ORDER BY id
     LIMIT %(batch)s
), locked AS MATERIALIZED (
    SELECT id, state AS previous FROM {table}
     WHERE id IN (SELECT id FROM candidates)
     ORDER BY id
       FOR UPDATE SKIP LOCKED
), {changed}
SELECT n.examined, n.last_id, n.locked, c.*
  FROM (SELECT count(*) AS examined, max(id) AS last_id,
               (SELECT count(*) FROM locked) AS locked
          FROM candidates) AS n
  LEFT JOIN (SELECT changed.*, locked.previous FROM changed JOIN locked USING (id)) AS c
    ON true
 ORDER BY c.id
"""
# Retry: each job moves back from finished_jobs to jobs, changed on the way, in one INSERT;
# `linked`: it has a parent or a dependent, and the workflow's walk must see it.
_RETRY = _BATCH.format(
    table="finished_jobs",
    filters=FILTERS,
    changed=f"""moved AS (
    DELETE FROM finished_jobs AS f USING locked
     WHERE f.id = locked.id AND {FILTERS}
    RETURNING f.*
), changed AS (
    {_copy("jobs", "moved", _RETRIED)}
    RETURNING {_RETURNED},
              EXISTS (SELECT 1 FROM job_deps AS d WHERE d.child = jobs.id)
              OR EXISTS (SELECT 1 FROM job_deps AS d WHERE d.parent = jobs.id) AS linked
)""",
)
# Cancel: a waiting or pending job ends canceled and moves to finished_jobs in one INSERT; a
# running one is marked for its node to stop it.
_CANCEL = _BATCH.format(
    table="jobs",
    filters=FILTERS,
    changed=f"""ended AS (
    DELETE FROM jobs AS j USING locked
     WHERE j.id = locked.id AND j.state IN ('waiting', 'pending')
       AND {FILTERS}
    RETURNING j.*
), canceled AS (
    {_copy("finished_jobs", "ended", _CANCELED)}
    RETURNING {_RETURNED}
), marked AS (
    UPDATE jobs AS j SET cancel_requested = true, updated_at = now()
      FROM locked
     WHERE j.id = locked.id AND j.state = 'running'
       AND {FILTERS}
    RETURNING {", ".join("j." + c for c in _RETURNED.split(", "))}
), changed AS (
    SELECT *, false AS linked FROM canceled UNION ALL SELECT *, false FROM marked
)""",
)
# Purge: the finished jobs no unfinished dependent needs are deleted, and their edges.
_PURGE = _BATCH.format(
    table="finished_jobs",
    filters=FILTERS,
    changed=f"""changed AS (
    DELETE FROM finished_jobs AS f USING locked
     WHERE f.id = locked.id AND {FILTERS}
       AND NOT EXISTS (SELECT 1 FROM job_deps AS d JOIN jobs AS c ON c.id = d.child
                        WHERE d.parent = f.id)
    RETURNING {", ".join("f." + c for c in _RETURNED.split(", "))}, false AS linked
), as_parent AS (
    DELETE FROM job_deps WHERE parent IN (SELECT id FROM changed)
), as_child AS (
    DELETE FROM job_deps WHERE child IN (SELECT id FROM changed)
)""",
)
_STATEMENTS = {BulkAction.RETRY: _RETRY, BulkAction.CANCEL: _CANCEL, BulkAction.PURGE: _PURGE}
_SORTS_ON = "SET LOCAL enable_sort = on"
_STATES = "SELECT id, state FROM jobs WHERE id = ANY(%(ids)s::bigint[])"


async def bulk(
    store: PostgresStore, action: BulkAction, filters: JobFilter, after: int, batch: int
) -> BulkBatch:
    filters = bulk_filter(action, filters)
    params = {**filter_params(filters), "after": after, "batch": max(int(batch), 1)}
    async with store.pool.connection() as conn, conn.transaction():
        # The sessions turn sorts off for the claim's sake; this statement's plans sort a batch
        # (without, the lock scanned the whole table in id order: seconds a batch).  And it is
        # planned afresh each time, never prepared: a generic plan cannot fold the filters not
        # given, and PostgreSQL's, chosen after five runs, slowed every batch after.
        await conn.execute(_SORTS_ON)
        statement = _STATEMENTS[action]
        rows = await (await conn.execute(statement, params, prepare=False)).fetchall()
        head = rows[0]
        if not head["examined"]:
            return BulkBatch([], 0, None)
        changed = [_change(row) for row in rows if row["id"] is not None]
        if changed:
            changed = await _follow(store, conn, action, changed, rows)
    _announce(store, action, changed)
    busy = head["examined"] - head["locked"]
    return BulkBatch(changed, head["examined"], head["last_id"], busy=busy)


def _change(row: Row) -> BulkChange:
    return BulkChange(
        row["id"],
        row["type"],
        row["queue"],
        State(row["state"]),
        State(row["previous"]),
        row["attempts"],
        row["correlation_id"],
        row["lease_owner"],
    )


async def _follow(
    store: PostgresStore,
    conn: Connection,
    action: BulkAction,
    changed: list[BulkChange],
    rows: list[Row],
) -> list[BulkChange]:
    """What the batch's statement leaves to the rest of its transaction: the workflows' walks
    (jobs of no workflow skip them) and the NOTIFYs of the nodes.  The changes as they are."""
    if action is BulkAction.RETRY:
        linked = [row["id"] for row in rows if row["linked"]]
        if linked:  # jobd_retried leaves a job without edges as it is: only these need it
            await conn.execute(QUERIES["workflow_retried"], {"ids": linked})
            cur = await conn.execute(_STATES, {"ids": linked})
            now_in = {row["id"]: State(row["state"]) for row in await cur.fetchall()}
            changed = [_in_state(c, now_in.get(c.id, c.state)) for c in changed]
    elif action is BulkAction.CANCEL:
        ended = [{"id": c.id, "state": c.state} for c in changed if c.state.terminal]
        await workflow_rows.parents_ended(conn, ended)
    stopping = [str(c.id) for c in changed if c.state is State.RUNNING]
    await store._pg_notify(conn, store.cancel_channel, stopping)
    ready = sorted({c.queue for c in changed if c.state is State.PENDING})
    await store._pg_notify(conn, store.submit_channel, ready)
    return changed


def _in_state(change: BulkChange, state: State) -> BulkChange:
    if state is change.state:
        return change
    return BulkChange(
        change.id,
        change.type,
        change.queue,
        state,
        change.previous,
        change.attempts,
        change.correlation_id,
        change.lease_owner,
    )


def _announce(store: PostgresStore, action: BulkAction, changed: list[BulkChange]) -> None:
    """This process's listeners hear what other nodes hear through NOTIFY."""
    if action is BulkAction.CANCEL:  # as Store._notify_cancel_requested
        for c in changed:
            kind = (
                NotificationKind.CANCEL if c.state is State.RUNNING else NotificationKind.FINISHED
            )
            store._notify(Notification(kind, job_id=c.id))
    elif action is BulkAction.RETRY:  # as Store._notify_submitted
        for queue in sorted({c.queue for c in changed}):
            store._notify(Notification(NotificationKind.SUBMITTED, queue=queue))


def filter_params(filters: JobFilter) -> dict[str, Any]:
    return {
        "states": [State(s).value for s in filters.states] or None,
        "type": filters.type,
        "queue": filters.queue,
        "created_after": filters.created_after,
        "created_before": filters.created_before,
        "schedule": filters.schedule,
    }
