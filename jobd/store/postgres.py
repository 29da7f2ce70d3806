"""The PostgreSQL store: the production store, shared by every node of a cluster.

psycopg 3 (async) over a psycopg_pool connection pool.  The SQL lives in sql/postgres.sql as
named queries; this module binds their parameters and turns rows into domain Jobs.

How the pieces fit:
- Everything jobd owns lives in one schema (`jobd` unless configured); each pooled
  connection's search_path is set to it, so the SQL uses unqualified names.  Pooled
  connections run in autocommit: a single-statement operation costs one round trip, and the
  operations that need more than one statement open an explicit transaction.
- The hot operations (claim, heartbeat, finish, recover) are single statements that mirror
  the domain's rules in SQL; the rare operator changes (cancel, retry) lock the row, let
  jobd.domain decide, and write the result back.
- Wake-ups: every write that creates claimable work sends NOTIFY `<schema>_submit` (payload:
  the queue) and a cancel of a running job sends NOTIFY `<schema>_cancel` (payload: the id),
  inside the transaction, so they are delivered only if it commits.  One dedicated LISTEN
  connection per store turns other sessions' notifications into Notifications; this
  process's own changes are announced to its listeners directly, at once, as the memory store
  does (the echo of its own NOTIFY is recognised by backend pid and dropped).  Notifications
  are hints: the supervisor polls as well, because a pooler or a network cut can lose them.
- Any failure to reach the database is raised as jobd.errors.Unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import random
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from jobd import migrations
from jobd.domain import ErrorInfo, IllegalTransition, Job, NewJob, State
from jobd.errors import Conflict, InvalidParams, NotFound, Unavailable
from jobd.store.base import (
    CountRow,
    Counts,
    JobFilter,
    Notification,
    NotificationKind,
    Outcome,
    OutcomeKind,
    Page,
    Store,
    Submitted,
    check_limit,
    decode_cursor,
    encode_cursor,
    json_default,
    ordering_key,
    validate_specs,
)

log = logging.getLogger(__name__)

Row = Mapping[str, Any]
Connection = psycopg.AsyncConnection[dict[str, Any]]

# A plain identifier (as database.schema in the configuration): easy to type in psql, and
# safe to build channel names from.
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Channel names are `<schema>_submit` and `<schema>_cancel`, within PostgreSQL's 63-byte
# limit for names; jobd_enqueue() in the schema builds the same name.
_CHANNEL_PREFIX_LENGTH = 56
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
# Pooled connections are recycled after this long, so an older backend pid is not ours.
_MAX_LIFETIME = 3600.0
#: How long the pool keeps retrying one failed connection attempt.  psycopg_pool doubles the
#: delay between retries (1, 2, 4, 8, 16 s...), so with its default of 5 minutes the first try
#: after a 15-second outage could come 16 s after the database was back (measured: work resumed
#: 20+ s late).  Giving up after a few seconds lets the next request start a fresh attempt at
#: once, so work resumes within a couple of seconds of the database's return.
RECONNECT_TIMEOUT = 5.0
#: While the database is known to be unreachable (the last call failed to reach it), a call
#: waits at most this long for a pooled connection before it is Unavailable -- instead of the
#: full acquire timeout, which would hold every jobctl call for its whole timeout and the
#: supervisor's loop (which awaits its claims) for seconds at a time.
DOWN_ACQUIRE_TIMEOUT = 1.0
#: Dead row versions in the jobs table that make `maintain` vacuum it (a few seconds of a busy
#: queue's churn: small enough that claims never wade through many, large enough that the
#: vacuum's fixed cost is paid rarely).
VACUUM_DEAD_ROWS = 50_000


def load_queries(text: str) -> dict[str, str]:
    """Split a named-query file: each `-- name: x` line starts query x.  Comment lines are
    dropped (psycopg would read a % in a comment as a placeholder)."""
    queries: dict[str, str] = {}
    name: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-- name:"):
            name = stripped.removeprefix("-- name:").strip()
            queries[name] = ""
        elif name is not None and stripped and not stripped.startswith("--"):
            queries[name] += line + "\n"
    return {n: q.strip() for n, q in queries.items()}


QUERIES = load_queries(
    resources.files("jobd.store").joinpath("sql/postgres.sql").read_text(encoding="utf-8")
)


class PostgresStore(Store):
    """Jobs in PostgreSQL, in the given schema; several nodes may share one database."""

    kind = "postgres"

    def __init__(
        self,
        url: str,
        *,
        schema: str = "jobd",
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        acquire_timeout: float = 30.0,
        listen_check_interval: float = 30.0,
        **_ignored: Any,
    ):
        super().__init__()
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"database.schema: {schema!r} is not a plain identifier"
                " (letters, digits and _, at most 63 characters)"
            )
        self._url = url
        self.schema = schema
        self.submit_channel = f"{schema[:_CHANNEL_PREFIX_LENGTH]}_submit"
        self.cancel_channel = f"{schema[:_CHANNEL_PREFIX_LENGTH]}_cancel"
        self._min_size = min_size
        self._max_size = max(max_size, min_size)
        self._connect_timeout = connect_timeout
        self._acquire_timeout = acquire_timeout
        self._listen_check_interval = listen_check_interval
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._own_backends: dict[int, float] = {}  # pid of each pooled connection -> born
        self._down: str | None = None  # why the database could not be reached, until it can

    # --- life cycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the LISTEN connection first (a fast, precise error if the server cannot be
        reached), then fill the pool, then start delivering notifications."""
        if self._pool is not None:
            return
        listen_conn = await self._listen_connect()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._url,
            min_size=self._min_size,
            max_size=self._max_size,
            kwargs=self._connect_kwargs(),
            configure=self._configure,
            open=False,
            timeout=self._acquire_timeout,
            max_lifetime=_MAX_LIFETIME,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name=f"jobd-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=max(self._connect_timeout, 1.0))
        except (psycopg.Error, OSError) as exc:
            await pool.close()
            await listen_conn.close()
            raise _unavailable(exc) from exc
        self._pool = pool
        self._listen_task = asyncio.create_task(
            self._listen(listen_conn), name=f"jobd-listen-{self.schema}"
        )

    async def close(self) -> None:
        task, self._listen_task = self._listen_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": max(2, math.ceil(self._connect_timeout)),
            "application_name": "jobd",
        }

    async def _configure(self, conn: Connection) -> None:
        """Every new pooled connection: jobd's schema first, timestamps in UTC, no sorts.

        Why no sorts: every jobd query that orders rows has an index giving that order
        (claim: jobs_claim_idx; list: the primary key; prune: jobs_finished_idx), and the
        only time the planner prefers a sort is when its statistics lie.  They lie exactly
        when it hurts: after a burst of submits to a quiet queue, until autovacuum's next
        ANALYZE, the planner believes few jobs are pending and plans each claim as "fetch
        every pending row, sort, keep n" -- measured 30 ms instead of 1 ms per claim with
        100k pending, and growing with the backlog.  enable_sort = off only prices sorts
        out where another plan exists; a query that needs one still gets it.

        Why no JIT: jobd's statements are short OLTP ones that JIT never pays off for, and a
        priced-out sort pushes a plan's cost past jit_above_cost: measured, a one-job
        submit spent 220 ms compiling."""
        await conn.execute(
            sql.SQL(
                "SET search_path TO {}; SET TIME ZONE 'UTC'; SET enable_sort = off; SET jit = off"
            ).format(sql.Identifier(self.schema))
        )
        now = time.monotonic()
        self._own_backends[conn.info.backend_pid] = now
        for pid, born in list(self._own_backends.items()):
            if now - born > 2 * _MAX_LIFETIME:
                del self._own_backends[pid]

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; a database that cannot be reached becomes Unavailable."""
        if self._pool is None:
            raise Unavailable("store unavailable: the store is not open")
        down = self._down
        wait = self._acquire_timeout if down is None else DOWN_ACQUIRE_TIMEOUT
        try:
            async with self._pool.connection(timeout=wait) as conn:
                yield conn
        except PoolTimeout as exc:
            if down is not None:  # still down: say why, not only that no connection came
                raise Unavailable(
                    f"store unavailable: the database cannot be reached (last error: {down})"
                ) from exc
            self._down = _describe(exc)
            raise _unavailable(exc) from exc
        except psycopg.OperationalError as exc:
            self._down = _describe(exc)
            raise _unavailable(exc) from exc
        except psycopg.DataError as exc:  # a value the database cannot hold, e.g. a NUL byte
            raise InvalidParams(f"rejected by the database: {_describe(exc)}") from exc
        self._down = None

    # --- migrations --------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Create the schema if needed, then apply each pending migration in its own
        transaction.  Every step holds a transaction-scoped advisory lock keyed on the schema,
        so concurrent `jobd migrate` runs (say, two nodes deploying at once) take turns, and
        each re-reads what is applied once it holds the lock."""
        applied: list[str] = []
        async with self._connection() as conn:
            async with conn.transaction():
                await self._lock_migrations(conn)
                await self._create_schema(conn)
            for migration in migrations.load("postgres"):
                async with conn.transaction():
                    await self._lock_migrations(conn)
                    if migration.version in await self._applied_versions(conn):
                        continue
                    # No parameters: sent as it is (a % is no placeholder), many statements.
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration.name)
                log.info("applied migration %s to schema %s", migration.name, self.schema)
        return applied

    async def pending_migrations(self) -> list[str]:
        async with self._connection() as conn:
            done = await self._applied_versions(conn)
        return [m.name for m in migrations.load("postgres") if m.version not in done]

    async def _lock_migrations(self, conn: Connection) -> None:
        key = zlib.crc32(f"jobd migrate {self.schema}".encode()) - 2**31  # fits a bigint
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))

    async def _create_schema(self, conn: Connection) -> None:
        # Look before creating: CREATE SCHEMA IF NOT EXISTS still needs the CREATE privilege
        # on the database, which a deployment that pre-created the schema may not grant.
        cur = await conn.execute(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (self.schema,)
        )
        if await cur.fetchone() is None:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )

    async def _applied_versions(self, conn: Connection) -> set[int]:
        cur = await conn.execute(
            "SELECT 1 FROM pg_catalog.pg_tables"
            " WHERE schemaname = %s AND tablename = 'schema_migrations'",
            (self.schema,),
        )
        if await cur.fetchone() is None:
            return set()
        cur = await conn.execute("SELECT version FROM schema_migrations")
        return {row["version"] for row in await cur.fetchall()}

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.execute(QUERIES["ping"])

    # --- clients' operations -----------------------------------------------------------------

    async def submit_many(self, specs: Sequence[NewJob]) -> list[Submitted]:
        validate_specs(specs)
        if not specs:
            return []
        params = _submit_params(specs)
        try:
            async with self._connection() as conn, conn.transaction():
                cur = await conn.execute(QUERIES["submit"], params)
                out = [_submitted(row) for row in await cur.fetchall()]
                await self._fill_existing(conn, specs, out)
                queues = sorted({s.job.queue for s in out if s and s.created})
                await self._pg_notify(conn, self.submit_channel, queues)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise InvalidParams(f"jobs: rejected by the database: {_describe(exc)}") from exc
        for queue in queues:
            self._notify(Notification(NotificationKind.SUBMITTED, queue=queue))
        return [s for s in out if s is not None]

    async def _fill_existing(
        self, conn: Connection, specs: Sequence[NewJob], out: list[Submitted | None]
    ) -> None:
        """Settle the idempotency keys of a batch: a job whose key was taken (by another
        transaction, by an earlier job of this batch, or by a finished job) is answered with
        the job that holds the key.

        The unique index covers only jobs; a key held in finished_jobs was free there when
        the insert ran (its holder had moved, or was moving: the insert waits for the
        moving transaction's deleted row, then goes ahead once it commits).  So every keyed
        insert is checked against all_jobs in a fresh statement, which sees that commit, and
        taken back if a finished job holds its key."""
        keyed = [i for i, spec in enumerate(specs) if spec.idempotency_key is not None]
        if not keyed:
            return
        keys = [specs[i].idempotency_key for i in keyed]
        cur = await conn.execute(QUERIES["submit_existing"], {"keys": keys})
        holders: dict[str | None, Job] = {}
        for row in await cur.fetchall():
            if row["idempotency_key"] not in holders or State(row["state"]).terminal:
                holders[row["idempotency_key"]] = _job(row)
        undo = []
        for i in keyed:
            holder, mine = holders.get(specs[i].idempotency_key), out[i]
            if mine is not None and (holder is None or holder.id == mine.job.id):
                continue
            if mine is not None:
                undo.append(mine.job.id)
            if holder is None:  # the holder was pruned between the two statements
                raise Conflict(
                    f"idempotency_key {specs[i].idempotency_key!r}: the job holding it was"
                    " deleted while submitting; submit again"
                )
            out[i] = Submitted(holder, created=False)
        if undo:
            await conn.execute(QUERIES["submit_undo"], {"ids": undo})

    async def get(self, job_id: int) -> Job:
        async with self._connection() as conn:
            cur = await conn.execute(QUERIES["get"], {"id": _job_id(job_id)})
            row = await cur.fetchone()
        if row is None:
            raise _not_found(job_id)
        return _job(row)

    async def list(
        self, filters: JobFilter = JobFilter(), limit: int = 100, cursor: str | None = None
    ) -> Page:
        limit = check_limit(limit)
        params = {
            "before": decode_cursor(cursor) if cursor else None,
            "states": [State(s).value for s in filters.states] or None,
            "type": filters.type,
            "queue": filters.queue,
            "created_after": filters.created_after,
            "created_before": filters.created_before,
            "limit": limit + 1,
        }
        async with self._connection() as conn:
            cur = await conn.execute(QUERIES["list"], params)
            jobs = [_job(row) for row in await cur.fetchall()]
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return Page(jobs, encode_cursor(jobs[-1].id) if more else None)

    async def request_cancel(self, job_id: int) -> Job:
        job = await self._change(job_id, lambda j, now: j.request_cancel(now))
        if job.state is State.RUNNING:
            self._notify(Notification(NotificationKind.CANCEL, job_id=job.id))
        else:
            self._notify(Notification(NotificationKind.FINISHED, job_id=job.id))
        return job

    async def retry(self, job_id: int) -> Job:
        job = await self._change(job_id, lambda j, now: j.operator_retry(now))
        self._notify(Notification(NotificationKind.SUBMITTED, queue=job.queue))
        return job

    async def _change(self, job_id: int, change: Callable[[Job, datetime], Job]) -> Job:
        """Apply an operator's change: lock the row, let the domain decide, write it back
        (moving it between jobs and finished_jobs if it ended or starts again) and announce
        it to other nodes, all in one transaction."""
        async with self._connection() as conn, conn.transaction():
            row = await self._lock(conn, _job_id(job_id))
            if row is None:
                raise _not_found(job_id)
            try:
                changed = change(_job(row), row["db_now"])
            except IllegalTransition as exc:
                raise Conflict(str(exc), id=job_id, state=exc.current.value) from None
            if row["home"] == "finished_jobs":
                await conn.execute(QUERIES["move_back"], {"id": changed.id})
            cur = await conn.execute(QUERIES["write_job"], _write_params(changed))
            job = _job(await _one(cur))
            if job.state.terminal:
                await conn.execute(QUERIES["move_finished"], {"ids": [job.id]})
            elif job.state is State.PENDING:
                await self._pg_notify(conn, self.submit_channel, [job.queue])
            elif job.state is State.RUNNING and job.cancel_requested:
                await self._pg_notify(conn, self.cancel_channel, [str(job.id)])
        return job

    @staticmethod
    async def _lock(conn: Connection, job_id: int | None) -> Row | None:
        """The job's row, locked, from whichever table holds it.  A job moves from jobs to
        finished_jobs under its row lock, so looking in jobs first finds it in one table or
        the other; only an operator's concurrent retry moves it back, so one more look in
        jobs covers that."""
        for query in ("lock_job", "lock_finished_job", "lock_job"):
            row = await (await conn.execute(QUERIES[query], {"id": job_id})).fetchone()
            if row is not None:
                return row
        return None

    async def counts(self) -> Counts:
        async with self._connection() as conn:
            cur = await conn.execute(QUERIES["counts"])
            rows = await cur.fetchall()
        # Sorted here, not by ORDER BY: the database's collation may order text differently.
        return Counts(
            sorted(
                (CountRow(r["queue"], r["type"], State(r["state"]), r["count"]) for r in rows),
                key=lambda c: (c.queue, c.type, c.state),
            )
        )

    # --- the supervisor's operations -----------------------------------------------------------

    async def claim(
        self,
        node: str,
        limit: int,
        *,
        lease: float,
        queues: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        exclude_queues: Sequence[str] | None = None,
    ) -> list[Job]:
        if limit <= 0:
            return []
        params = {
            "node": node,
            "limit": limit,
            "lease": float(lease),
            "queues": list(queues) if queues is not None else None,
            "types": list(types) if types is not None else None,
            "exclude_queues": list(exclude_queues) if exclude_queues else None,
        }
        async with self._connection() as conn:
            cur = await conn.execute(QUERIES["claim"], params, prepare=True)
            jobs = [_job(row) for row in await cur.fetchall()]
        return sorted(jobs, key=ordering_key)

    async def heartbeat(
        self, node: str, lease: float, job_ids: Collection[int] | None = None
    ) -> list[int]:
        ids = None if job_ids is None else sorted(int(i) for i in job_ids)
        async with self._connection() as conn:
            cur = await conn.execute(
                QUERIES["heartbeat"],
                {"node": node, "lease": float(lease), "ids": ids},
                prepare=True,
            )
            rows = await cur.fetchall()
        return sorted(row["id"] for row in rows if row["cancel_requested"])

    async def finish(self, node: str, outcomes: Sequence[Outcome]) -> dict[int, State]:
        if not outcomes:
            return {}
        again: list[Outcome] = []
        ending: list[Outcome] = []
        for outcome in outcomes:
            (again if _wants_pending(outcome) else ending).append(outcome)
        async with self._connection() as conn:
            if not again:  # the common case: one statement, no transaction block
                rows = await self._finish_ending(conn, node, ending)
            else:
                async with conn.transaction():
                    rows = await self._finish_again(conn, node, again)
                    rows += await self._finish_ending(conn, node, ending)
                    await self._announce_ready(conn, rows)
        applied = {row["id"]: State(row["state"]) for row in rows}
        self._notify_finished(applied)
        return applied

    @staticmethod
    async def _finish_ending(conn: Connection, node: str, outcomes: Sequence[Outcome]) -> list[Row]:
        if not outcomes:
            return []
        params = {"node": node, **_outcome_params(outcomes)}
        del params["retry_ats"]  # finish never sends a job back to pending
        cur = await conn.execute(QUERIES["finish"], params, prepare=True)
        return await cur.fetchall()

    @staticmethod
    async def _finish_again(conn: Connection, node: str, outcomes: Sequence[Outcome]) -> list[Row]:
        params = {"node": node, **_outcome_params(outcomes)}
        del params["results"]  # finish_retry never completes a job
        cur = await conn.execute(QUERIES["finish_retry"], params, prepare=True)
        rows = await cur.fetchall()
        ended = [row["id"] for row in rows if State(row["state"]).terminal]
        if ended:
            await conn.execute(QUERIES["move_finished"], {"ids": ended})
        return rows

    async def recover_expired(self) -> list[Job]:
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(QUERIES["recover_expired"], prepare=True)
            jobs = [_job(row) for row in await cur.fetchall()]
            ended = [j.id for j in jobs if j.state.terminal]
            if ended:
                await conn.execute(QUERIES["move_finished"], {"ids": ended})
            await self._announce_ready(
                conn, [{"state": j.state, "queue": j.queue, "ready": True} for j in jobs]
            )
        self._notify_finished({j.id: j.state for j in jobs})
        return jobs

    async def prune(self, older_than: timedelta, batch: int = 1000) -> int:
        """Delete in batches, each its own transaction (autocommit), until a batch comes back
        short: nothing older than the cutoff is left."""
        batch = max(int(batch), 1)
        deleted = 0
        async with self._connection() as conn:
            cur = await conn.execute(
                QUERIES["prune_cutoff"], {"seconds": older_than.total_seconds()}
            )
            cutoff = (await _one(cur))["cutoff"]
            while True:
                cur = await conn.execute(QUERIES["prune"], {"cutoff": cutoff, "batch": batch})
                deleted += cur.rowcount
                if cur.rowcount < batch:
                    return deleted

    async def maintain(self) -> bool:
        """VACUUM each of jobd's tables once its dead rows pass VACUUM_DEAD_ROWS.

        Every job leaves two dead rows in jobs (its claim updates the row, its finish moves
        it out), so a busy queue makes them by the thousand each second; left alone they
        slow the claim within minutes (measured: half the throughput at 1.8 million).
        finished_jobs gets them from pruning.  Autovacuum keeps up where it runs with the
        tables' settings (see the migrations), but a server may have it off, or it may lag.
        One node at a time (an advisory lock); a plain VACUUM takes no lock that blocks
        claims.  True if it vacuumed."""
        async with self._connection() as conn:
            cur = await conn.execute(QUERIES["dead_rows"])
            due = [row["name"] for row in await cur.fetchall() if row["dead"] >= VACUUM_DEAD_ROWS]
            if not due:
                return False
            key = zlib.crc32(f"jobd vacuum {self.schema}".encode()) - 2**31
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (key,))
            if not (await _one(cur))["got"]:
                return False  # another node is at it
            try:
                for table in sorted(due):
                    await conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            return True

    # --- notifications -------------------------------------------------------------------------

    async def _pg_notify(self, conn: Connection, channel: str, payloads: Sequence[str]) -> None:
        if payloads:
            await conn.execute(QUERIES["notify"], {"channel": channel, "payloads": list(payloads)})

    async def _announce_ready(self, conn: Connection, rows: Iterable[Row]) -> None:
        """Wake other nodes for jobs that went back to pending and may run now (a drained
        node's released jobs, a dead node's recovered ones)."""
        queues = sorted({r["queue"] for r in rows if r["state"] == State.PENDING and r["ready"]})
        await self._pg_notify(conn, self.submit_channel, queues)

    def _notify_finished(self, states: dict[int, State]) -> None:
        # As the memory store does: FINISHED for a terminal state, SUBMITTED for pending again.
        for job_id, state in states.items():
            kind = NotificationKind.FINISHED if state.terminal else NotificationKind.SUBMITTED
            self._notify(Notification(kind, job_id=job_id))

    async def _listen_connect(self) -> Connection:
        kwargs = {**self._connect_kwargs(), "keepalives_idle": 30, "keepalives_interval": 10}
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, **kwargs)
            for channel in (self.submit_channel, self.cancel_channel):
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            raise _unavailable(exc) from exc
        return conn

    async def _listen(self, conn: Connection | None) -> None:
        """The LISTEN connection's life: deliver notifications until it fails, then reconnect
        with capped exponential backoff.  After a reconnect, listeners get a SUBMITTED with
        no queue: notifications sent while we were away are lost, so look for work."""
        failures = 0
        while True:
            try:
                if conn is None:
                    conn = await self._listen_connect()
                    log.info("notification listener reconnected")
                    self._deliver(Notification(NotificationKind.SUBMITTED))
                failures = 0
                await self._receive(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep listening whatever went wrong; say what it was
                failures += 1
                log.warning("notification listener lost its connection: %s", _describe(exc))
            finally:
                if conn is not None:
                    # A broken connection may fail to close cleanly; it is gone either way.
                    with contextlib.suppress(Exception):
                        await conn.close()
                    conn = None
            await asyncio.sleep(min(30.0, 0.1 * 2**failures) * (0.5 + random.random() / 2))

    async def _receive(self, conn: Connection) -> None:
        while True:
            async for notify in conn.notifies(timeout=self._listen_check_interval):
                if notify.pid not in self._own_backends:
                    self._deliver(self._notification(notify))
            # Quiet for a while: make sure the connection is still there (keepalives
            # notwithstanding, a silent network partition is only found by talking).
            await conn.execute("SELECT 1")

    def _notification(self, notify: psycopg.Notify) -> Notification:
        if notify.channel == self.cancel_channel:
            job_id = int(notify.payload) if notify.payload.isdigit() else None
            return Notification(NotificationKind.CANCEL, job_id=job_id)
        return Notification(NotificationKind.SUBMITTED, queue=notify.payload or None)

    def _deliver(self, notification: Notification) -> None:
        try:
            self._notify(notification)
        except Exception:  # a listener's bug must not stop notifications for the others
            log.exception("notification listener raised on %s", notification)


# --- rows and parameters -------------------------------------------------------------------


def _job(row: Row) -> Job:
    values = {name: row[name] for name in _JOB_FIELDS}
    values["state"] = State(values["state"])
    values["last_error"] = ErrorInfo.from_dict(values["last_error"])
    return Job(**values)


def _submitted(row: Row) -> Submitted | None:
    return Submitted(_job(row), created=True) if row["id"] is not None else None


async def _one(cur: psycopg.AsyncCursor[dict[str, Any]]) -> Row:
    row = await cur.fetchone()
    if row is None:  # pragma: no cover - the statements calling this always return a row
        raise RuntimeError("query returned no row")
    return row


def _json(value: Any, field_name: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, default=json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidParams(f"{field_name}: not representable as JSON: {exc}") from None


def _submit_params(specs: Sequence[NewJob]) -> dict[str, list[Any]]:
    return {
        "types": [s.type for s in specs],
        "queues": [s.queue for s in specs],
        "priorities": [s.priority for s in specs],
        "payloads": [_json(s.payload, "payload") for s in specs],
        "max_attempts": [s.max_attempts for s in specs],
        "run_ats": [s.run_at for s in specs],
        "timeouts": [float(s.timeout) if s.timeout is not None else None for s in specs],
        "keys": [s.idempotency_key for s in specs],
        "correlation_ids": [s.correlation_id for s in specs],
    }


def _wants_pending(outcome: Outcome) -> bool:
    """Whether an outcome asks for its job to run again (finish_retry), or ends it (finish)."""
    kind = OutcomeKind(outcome.kind)
    return kind is OutcomeKind.RELEASED or (
        kind is OutcomeKind.FAILED and outcome.retry_at is not None
    )


def _outcome_params(outcomes: Sequence[Outcome]) -> dict[str, list[Any]]:
    params: dict[str, list[Any]] = {
        k: [] for k in ("ids", "attempts", "kinds", "results", "errors", "retry_ats", "crashed")
    }
    for o in outcomes:
        kind = OutcomeKind(o.kind)
        error = o.error
        if kind is OutcomeKind.FAILED and error is None:
            error = ErrorInfo("Error", "attempt failed")  # as outcome_applied does
        completed = kind is OutcomeKind.COMPLETED and o.result is not None
        params["ids"].append(o.job_id)
        params["attempts"].append(o.attempt)
        params["kinds"].append(kind.value)
        params["results"].append(_json(o.result, "result") if completed else None)
        params["errors"].append(_json(error.to_dict(), "error") if error else None)
        params["retry_ats"].append(o.retry_at)
        params["crashed"].append(bool(o.crashed))
    return params


def _write_params(job: Job) -> dict[str, Any]:
    params = {name: getattr(job, name) for name in _JOB_FIELDS}
    params["state"] = job.state.value
    params["last_error"] = Jsonb(job.last_error.to_dict()) if job.last_error else None
    params["result"] = Jsonb(job.result) if job.result is not None else None
    return params


def _job_id(job_id: object) -> int | None:
    """An id to look up; anything that is not an integer matches no job (as in memory)."""
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        return None
    return job_id if -(2**63) <= job_id < 2**63 else None


def _not_found(job_id: object) -> NotFound:
    return NotFound(f"job {job_id} not found", id=job_id)


def _describe(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"store unavailable: {_describe(exc)}")
