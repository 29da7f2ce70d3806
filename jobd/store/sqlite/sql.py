"""The SQLite store's statements, as text built once from the Job dataclass's fields.

Apart from the operations so that each operation reads as Python over named statements, and
so that the statements read together: they are what the indexes in the migrations serve."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from jobd.domain import STORED_FIELDS
from jobd.store.base import JobFilter
from jobd.store.sqlite.rows import ts

# Column lists come from the Job dataclass itself, so a field added to the domain without a
# migration fails loudly at the first query instead of being silently dropped.

FIELDS = STORED_FIELDS
COLUMNS = ", ".join(FIELDS)
# What a transition can change; the rest is fixed at submit.
MUTABLE = (
    "state",
    "attempts",
    "crashes",
    "run_at",
    "last_error",
    "result",
    "cancel_requested",
    "lease_owner",
    "lease_expires_at",
    "updated_at",
    "started_at",
    "finished_at",
    "lease_token",
    "pending_parents",
    "history",
)
TERMINAL = "('completed', 'failed', 'canceled')"

SELECT_BY_ID = f"SELECT {COLUMNS} FROM jobs WHERE id = ?"
INSERT_JOB = f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join('?' * len(FIELDS))})"
UPDATE_JOB = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in MUTABLE)} WHERE id = ?"
# A running attempt's latest progress, fenced as a finish is (base.owns).
RECORD_PROGRESS = """
UPDATE jobs SET progress = ?1, progress_at = ?2
 WHERE id = ?3 AND state = 'running' AND lease_owner = ?4 AND attempts = ?5
   AND (?6 IS NULL OR lease_token = ?6)
"""

# The largest id ever handed out (AUTOINCREMENT keeps it in sqlite_sequence, pruned or not).
# Read under the write lock, it lets submit_many number its rows itself and insert them with
# one executemany instead of one statement per row to learn each lastrowid.
LAST_ID = "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0)"

# The claim, served by the partial index jobs_claim (priority DESC, run_at, id) WHERE state =
# 'pending': SQLite walks the index in claim order, skips rows whose run_at has not come (or
# outside the queue/type filter) and stops at the LIMIT.  {filters} adds `AND queue IN (…)` /
# `AND type IN (…)` when the caller restricts them.
CLAIM_CANDIDATES = f"""
SELECT {COLUMNS} FROM jobs
 WHERE state = 'pending' AND run_at <= ? AND attempts < max_attempts{{filters}}
 ORDER BY priority DESC, run_at, id
 LIMIT ?
"""
CLAIM_UPDATE = """
UPDATE jobs
   SET state = ?, attempts = ?, lease_owner = ?, lease_expires_at = ?, started_at = ?,
       updated_at = ?, lease_token = ?
 WHERE id = ?
"""

# The ids of the jobs the node holds come as a JSON array (NULL: every job of the node).
HEARTBEAT = """
UPDATE jobs SET lease_expires_at = ?
 WHERE state = 'running' AND lease_owner = ?
   AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3)))
"""
CANCELS_OF_NODE = """
SELECT id FROM jobs
 WHERE state = 'running' AND lease_owner = ? AND cancel_requested = 1
   AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))
 ORDER BY id
"""
# No ORDER BY: with one, SQLite prefers walking the whole table in id order to sorting the few
# rows the running-leases index yields; the caller sorts.
EXPIRED = f"""
SELECT {COLUMNS} FROM jobs
 WHERE state = 'running' AND lease_expires_at <= ?
"""
COUNTS = """
SELECT queue, type, state, count(*) FROM jobs
 GROUP BY queue, type, state
 ORDER BY queue, type, state
"""


def placeholders(n: int) -> str:
    return ", ".join("?" * n)


def list_select(
    filters: JobFilter, before: int | None, workflow_ids: set[int] | None = None
) -> tuple[str, list[Any]]:
    """The SELECT of `list`, newest first, and its parameters but for the LIMIT's
    (`workflow_ids`: the jobs of filters.workflow, found beforehand)."""
    where, params = _list_conditions(filters, before, workflow_ids)
    return f"SELECT {COLUMNS} FROM jobs{where} ORDER BY id DESC LIMIT ?", params


def claim_select(
    queues: Sequence[str] | None,
    types: Sequence[str] | None,
    exclude_queues: Sequence[str] | None,
) -> tuple[str, list[str]]:
    """CLAIM_CANDIDATES restricted to `queues` and `types` and outside `exclude_queues`,
    and the parameters of those restrictions."""
    filters, params = "", []
    for column, values, op in (
        ("queue", queues, "IN"),
        ("type", types, "IN"),
        ("queue", exclude_queues or None, "NOT IN"),
    ):
        if values is not None:
            values = list(dict.fromkeys(values))
            filters += f" AND {column} {op} ({placeholders(len(values))})"
            params.extend(values)
    return CLAIM_CANDIDATES.format(filters=filters), params


def _list_conditions(
    filters: JobFilter, before: int | None, workflow_ids: set[int] | None = None
) -> tuple[str, list[Any]]:
    """The WHERE clause (or "") and its parameters for `list`."""
    conditions: list[str] = []
    params: list[Any] = []

    def add(condition: str, *values: Any) -> None:
        conditions.append(condition)
        params.extend(values)

    if before is not None:
        add("id < ?", before)
    if filters.states:
        states = [str(s) for s in dict.fromkeys(filters.states)]
        add(f"state IN ({placeholders(len(states))})", *states)
    if filters.type is not None:
        add("type = ?", filters.type)
    if filters.queue is not None:
        add("queue = ?", filters.queue)
    if filters.created_after is not None:
        add("created_at > ?", ts(filters.created_after))
    if filters.created_before is not None:
        add("created_at < ?", ts(filters.created_before))
    if filters.schedule is not None:
        add("schedule = ?", filters.schedule)
    if filters.workflow is not None:
        add(
            "id IN (SELECT value FROM json_each(?))",
            json.dumps(sorted(workflow_ids)) if workflow_ids is not None else "[]",
        )
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params


# --- workflows (migrations/sqlite/0005_workflows.sql) ---------------------------------------

INSERT_EDGE = "INSERT OR IGNORE INTO job_deps (parent, child) VALUES (?, ?)"
CHILDREN = "SELECT child FROM job_deps WHERE parent = ? ORDER BY child"
PARENTS = "SELECT parent FROM job_deps WHERE child = ? ORDER BY parent"
# A finished job stays while a dependent of it has not finished (it may wait for it, or read
# its result); the edges of pruned jobs go with them.  Two passes, as in PostgreSQL: the jobs
# past their own result_ttl (the partial index jobs_expiry, schema 10), then those that set
# none past the retention's cutoff (jobs_finished).
_KEPT_FOR_A_DEPENDENT = f"""
       AND NOT EXISTS (SELECT 1 FROM job_deps d JOIN jobs c ON c.id = d.child
                        WHERE d.parent = jobs.id AND c.state NOT IN {TERMINAL})"""
PRUNE_EXPIRED = f"""
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
     WHERE result_ttl IS NOT NULL AND finished_at + result_ttl <= ?
       AND state IN {TERMINAL}{_KEPT_FOR_A_DEPENDENT}
     LIMIT ?
)
RETURNING id
"""
PRUNE = f"""
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
     WHERE finished_at < ? AND result_ttl IS NULL
       AND state IN {TERMINAL}{_KEPT_FOR_A_DEPENDENT}
     LIMIT ?
)
RETURNING id
"""
# A list of ids or keys the store looks up comes as one JSON array, not as `IN (?, ?, ...)`:
# one statement text whatever the list's length.  The connection keeps its prepared statements
# by text (256 of them), and an IN list of each length a write-back happened to have was one
# more, tens of kB each: megabytes of the supervisor's memory (docs/adr/0047).
JOBS_BY_ID = f"SELECT {COLUMNS} FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
# The partial unique index on idempotency_key serves it: `IN` implies IS NOT NULL.
JOBS_BY_KEY = (
    f"SELECT {COLUMNS} FROM jobs WHERE idempotency_key IN (SELECT value FROM json_each(?))"
)
DELETE_JOBS = "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
PARENTS_OF_CHILDREN = (
    "SELECT child, parent FROM job_deps WHERE child IN (SELECT value FROM json_each(?))"
)
PRUNE_EDGES = """
DELETE FROM job_deps
 WHERE parent IN (SELECT value FROM json_each(?1)) OR child IN (SELECT value FROM json_each(?1))
"""


# --- the fleet (the nodes table and the fleet row; see migrations/sqlite/0003_fleet.sql) ---

REPORT_NODE = """
INSERT INTO nodes (id, host, pid, version, started_at, heartbeat_at, types, workers)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE
   SET heartbeat_at = excluded.heartbeat_at, types = excluded.types, workers = excluded.workers
"""
NODES = """
SELECT id, host, pid, version, started_at, heartbeat_at, types, workers FROM nodes ORDER BY id
"""
MIN_NODE_VERSION = "SELECT min_node_version FROM fleet"
PENDING_BY_TYPE = "SELECT type, count(*) FROM jobs WHERE state = 'pending' GROUP BY type"
PRUNE_NODES = "DELETE FROM nodes WHERE heartbeat_at < ?"
