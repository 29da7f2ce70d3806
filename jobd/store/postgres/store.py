"""PostgresStore: the PostgreSQL store's operations, each as the statements it issues.

The connections (connections.py), the LISTEN connection (listener.py), the schema's
migrations (schema.py) and the mapping of rows and parameters (rows.py) are its
collaborators; what is left here is what each operation sends and in which transaction."""

from __future__ import annotations

import builtins
import contextlib
import re
import zlib
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from jobd.domain import IllegalTransition, Job, NewJob, State
from jobd.errors import Conflict
from jobd.store.base import (
    Changed,
    ClaimRequest,
    CountRow,
    Counts,
    JobFilter,
    Notification,
    NotificationKind,
    Outcome,
    Page,
    ProgressReport,
    Start,
    Store,
    Submitted,
    SubmittedAndClaimed,
    check_limit,
    decode_cursor,
    encode_cursor,
    ordering_key,
    storable_outcome,
    validate_specs,
)
from jobd.store.nodes import Fleet, NodeReport
from jobd.store.postgres import activity as activity_rows
from jobd.store.postgres import fleet as fleet_rows
from jobd.store.postgres import progress as progress_rows
from jobd.store.postgres import pruning
from jobd.store.postgres import schedules as schedule_rows
from jobd.store.postgres import schema as schema_migrations
from jobd.store.postgres import workflows as workflow_rows
from jobd.store.postgres.bulk import filter_params
from jobd.store.postgres.connections import (
    NO_SESSION_TIMEOUTS,
    Connection,
    ConnectionPool,
    SessionTimeouts,
)
from jobd.store.postgres.listener import NotificationListener
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.queues import QueueMethods
from jobd.store.postgres.rows import (
    HISTORY_PARAMS,
    Row,
    batch_refused,
    claim_params,
    fetch_one,
    finish_params,
    inserts_alone,
    job_from_row,
    jobs_from_tuples,
    lookup_id,
    not_found,
    outcome_params,
    start_params,
    submit_params,
    submitted_from_row,
    wants_pending,
    write_params,
)
from jobd.store.postgres.submit_claiming import submit_claiming

# A plain identifier (as database.schema in the configuration): easy to type in psql, and
# safe to build channel names from.
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Channel names are `<schema>_submit` and `<schema>_cancel`, within PostgreSQL's 63-byte
# limit for names; jobd_enqueue() in the schema builds the same name.
_CHANNEL_PREFIX_LENGTH = 56
#: Dead row versions in the jobs table that make `maintain` vacuum it (a few seconds of a busy
#: queue's churn: small enough that claims never wade through many, large enough that the
#: vacuum's fixed cost is paid rarely).
VACUUM_DEAD_ROWS = 50_000


class PostgresStore(QueueMethods, Store):
    """Jobs in PostgreSQL, in the given schema; several nodes may share one database.  The
    operations on queues are QueueMethods' (jobd/store/postgres/queues.py)."""

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
        session: SessionTimeouts = NO_SESSION_TIMEOUTS,
        listen_check_interval: float = 30.0,
        listen: bool = True,
        application_name: str = "jobd",
        **_ignored: Any,
    ):
        super().__init__()
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"database.schema: {schema!r} is not a plain identifier"
                " (letters, digits and _, at most 63 characters)"
            )
        self.schema = schema
        self.submit_channel = f"{schema[:_CHANNEL_PREFIX_LENGTH]}_submit"
        self.cancel_channel = f"{schema[:_CHANNEL_PREFIX_LENGTH]}_cancel"
        self.pool = ConnectionPool(
            url,
            schema,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            acquire_timeout=acquire_timeout,
            session=session,
            application_name=application_name,
        )
        # listen=False: a second store of the daemon's (the control server's), whose
        # supervisor hears other sessions' NOTIFYs through the first (docs/adr/0036).
        self._listener = (
            NotificationListener(
                self.pool,
                submit_channel=self.submit_channel,
                cancel_channel=self.cancel_channel,
                check_interval=listen_check_interval,
                deliver=self._notify,
            )
            if listen
            else None
        )

    # --- life cycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the LISTEN connection first (a fast, precise error if the server cannot be
        reached), then fill the pool, then start delivering notifications."""
        if self.pool.is_open:
            return
        if self._listener is None:
            await self.pool.open()
            return
        listen_conn = await self._listener.connect()
        try:
            await self.pool.open()
        except BaseException:
            await listen_conn.close()
            raise
        self._listener.start(listen_conn)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        await self.pool.close()

    # --- migrations --------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        async with self.pool.connection() as conn:
            return await schema_migrations.migrate(conn, self.schema)

    async def pending_migrations(self) -> list[str]:
        async with self.pool.connection() as conn:
            return await schema_migrations.pending_migrations(conn, self.schema)

    async def ping(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(QUERIES["ping"])

    # --- clients' operations -----------------------------------------------------------------

    async def submit_many(self, specs: Sequence[NewJob]) -> list[Submitted]:
        validate_specs(specs)
        if not specs:
            return []
        params = submit_params(specs, self.submit_channel)
        alone = all(map(inserts_alone, specs))
        try:
            async with self.pool.connection() as conn, _unless(alone, conn.transaction()):
                cur = conn.cursor(row_factory=tuple_row)
                await cur.execute(QUERIES["submit"], params)
                rows = await cur.fetchall()
                out = [submitted_from_row(spec, row) for spec, row in zip(specs, rows, strict=True)]
                await self._fill_existing(conn, specs, out)
                await workflow_rows.link(conn, specs, out)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise batch_refused(exc) from exc
        queues = sorted({s.job.queue for s in out if s and s.created})
        for queue in queues:
            self._notify(Notification(NotificationKind.SUBMITTED, queue=queue))
        return [s for s in out if s is not None]

    async def submit_claiming(self, spec: NewJob, claim: ClaimRequest) -> SubmittedAndClaimed:
        return await submit_claiming(self, spec, claim)

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
                holders[row["idempotency_key"]] = job_from_row(row)
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
        async with self.pool.connection() as conn:
            cur = await conn.execute(QUERIES["get"], {"id": lookup_id(job_id)})
            row = await cur.fetchone()
        if row is None:
            raise not_found(job_id)
        job = job_from_row(row)
        return job.with_parents(tuple(row["parents"])) if row["parents"] else job

    async def list(
        self, filters: JobFilter = JobFilter(), limit: int = 100, cursor: str | None = None
    ) -> Page:
        limit = check_limit(limit)
        params: dict[str, Any] = {
            "before": decode_cursor(cursor) if cursor else None,
            **filter_params(filters),
            "limit": limit + 1,
        }
        async with self.pool.connection() as conn:
            params["workflow"] = await workflow_rows.connected(conn, filters.workflow)
            cur = await conn.execute(QUERIES["list"], params)
            jobs = [job_from_row(row) for row in await cur.fetchall()]
            jobs = await workflow_rows.with_parents(conn, jobs)
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return Page(jobs, encode_cursor(jobs[-1].id) if more else None)

    async def request_cancel(self, job_id: int) -> Job:
        changed = await self._change(job_id, lambda j, now: j.request_cancel(now))
        self._notify_cancel_requested(changed.job)
        return changed.job

    async def operator_retry(self, job_id: int) -> Changed:
        changed = await self._change(job_id, lambda j, now: j.operator_retry(now))
        self._notify_retried(changed.job)
        return changed

    async def _change(self, job_id: int, change: Callable[[Job, datetime], Job]) -> Changed:
        """Apply an operator's change: lock the row, let the domain decide, write it back
        (moving it between jobs and finished_jobs if it ended or starts again) and announce
        it to other nodes, all in one transaction."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await self._lock(conn, lookup_id(job_id))
            if row is None:
                raise not_found(job_id)
            before = job_from_row(row)
            try:
                changed = change(before, row["db_now"])
            except IllegalTransition as exc:
                raise Conflict(str(exc), id=job_id, state=exc.current.value) from None
            if row["home"] == "finished_jobs":
                await conn.execute(QUERIES["move_back"], {"id": changed.id})
            cur = await conn.execute(QUERIES["write_job"], write_params(changed))
            job = job_from_row(await fetch_one(cur))
            if job.state.terminal:
                await conn.execute(QUERIES["move_finished"], {"ids": [job.id]})
            elif job.state is State.PENDING:
                await self._pg_notify(conn, self.submit_channel, [job.queue])
            elif job.state is State.RUNNING and job.cancel_requested:
                await self._pg_notify(conn, self.cancel_channel, [str(job.id)])
            job = await workflow_rows.after_change(conn, before, job)
        return Changed(job, before.state)

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
        async with self.pool.connection() as conn:
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
    ) -> builtins.list[Job]:
        if limit <= 0:
            return []
        params = claim_params(node, limit, lease, queues, types, exclude_queues)
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            async with conn.pipeline():  # one round trip, one implicit transaction
                await conn.execute(QUERIES["claim_commit_unflushed"], prepare=True)
                await cur.execute(QUERIES["claim"], params, prepare=True)
            jobs = jobs_from_tuples(cur.description, await cur.fetchall())
        return sorted(jobs, key=ordering_key)

    async def heartbeat(
        self, node: str, lease: float, job_ids: Collection[int] | None = None
    ) -> builtins.list[int]:
        ids = None if job_ids is None else sorted(int(i) for i in job_ids)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                QUERIES["heartbeat"],
                {"node": node, "lease": float(lease), "ids": ids},
                prepare=True,
            )
            rows = await cur.fetchall()
        return sorted(row["id"] for row in rows if row["cancel_requested"])

    async def finish(
        self, node: str, outcomes: Sequence[Outcome], starts: Sequence[Start] = ()
    ) -> dict[int, State]:
        if not outcomes and not starts:
            return {}
        again: builtins.list[Outcome] = []
        ending: builtins.list[Outcome] = []
        for outcome in map(storable_outcome, outcomes):
            (again if wants_pending(outcome) else ending).append(outcome)
        async with self.pool.connection() as conn:
            if not again and not starts:  # the common case: one round trip, no transaction
                cur = conn.cursor()
                # One implicit transaction, its Sync sent with the statements: the rows are read
                # after the block, as the claim's are.  Read inside it, they cost a round trip
                # of their own before the Sync, and the rows stayed locked over it.
                async with conn.pipeline():
                    await conn.execute(QUERIES["write_back_hash_joins"], prepare=True)
                    await cur.execute(QUERIES["finish"], finish_params(node, ending), prepare=True)
                rows = await cur.fetchall()
            else:
                async with conn.transaction():
                    async with conn.pipeline():  # the setting costs no round trip of its own
                        await conn.execute(QUERIES["write_back_hash_joins"], prepare=True)
                        if starts:
                            params = start_params(node, starts)
                            await conn.execute(QUERIES["mark_started"], params, prepare=True)
                    rows = await self._finish_again(conn, node, again)
                    rows += await self._finish_ending(conn, node, ending)
                    await self._announce_ready(conn, rows)
        applied = {row["id"]: State(row["state"]) for row in rows}
        self._notify_finished(applied)
        workflow_rows.announce_released(self, rows)
        return applied

    @staticmethod
    async def _finish_ending(
        conn: Connection, node: str, outcomes: Sequence[Outcome]
    ) -> builtins.list[Row]:
        if not outcomes:
            return []
        cur = await conn.execute(QUERIES["finish"], finish_params(node, outcomes), prepare=True)
        return await cur.fetchall()

    @staticmethod
    async def _finish_again(
        conn: Connection, node: str, outcomes: Sequence[Outcome]
    ) -> builtins.list[Row]:
        if not outcomes:
            return []
        params = {"node": node, **outcome_params(outcomes), **HISTORY_PARAMS}
        del params["results"]  # finish_retry never completes a job
        cur = await conn.execute(QUERIES["finish_retry"], params, prepare=True)
        rows = await cur.fetchall()
        ended = [row["id"] for row in rows if State(row["state"]).terminal]
        if ended:
            await conn.execute(QUERIES["move_finished"], {"ids": ended})
            await workflow_rows.parents_ended(conn, rows)
        return rows

    async def record_progress(
        self, node: str, reports: Sequence[ProgressReport]
    ) -> builtins.list[int]:
        async with self.pool.connection() as conn:
            return await progress_rows.record_progress(conn, node, reports)

    async def recover_expired(self) -> builtins.list[Job]:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(QUERIES["recover_expired"], HISTORY_PARAMS, prepare=True)
            jobs = [job_from_row(row) for row in await cur.fetchall()]
            ended = [j.id for j in jobs if j.state.terminal]
            if ended:
                await conn.execute(QUERIES["move_finished"], {"ids": ended})
                await workflow_rows.parents_ended(conn, jobs)
            await self._announce_ready(
                conn, [{"state": j.state, "queue": j.queue, "ready": True} for j in jobs]
            )
        self._notify_finished({j.id: j.state for j in jobs})
        return jobs

    prune = pruning.prune  # jobd/store/postgres/pruning.py
    activity = activity_rows.activity  # the last hour's ends per minute (activity.py)

    async def report_node(self, report: NodeReport) -> None:
        async with self.pool.connection() as conn:
            await fleet_rows.report_node(conn, report)

    async def fleet(self, lease: float) -> Fleet:
        async with self.pool.connection() as conn:
            return await fleet_rows.fleet(conn, lease)

    async def prune_nodes(self, older_than: timedelta) -> int:
        async with self.pool.connection() as conn:
            return await fleet_rows.prune_nodes(conn, older_than)

    # --- workflows and schedules: jobd/store/postgres/workflows.py, schedules.py -------------

    links = workflow_rows.links
    parent_results = workflow_rows.parent_results

    enqueue_ticks = schedule_rows.enqueue_ticks
    trigger_schedule = schedule_rows.trigger_schedule
    schedule_records = schedule_rows.schedule_records
    set_schedule_paused = schedule_rows.set_schedule_paused

    async def maintain(self) -> bool:
        """VACUUM each of jobd's tables once its dead rows pass VACUUM_DEAD_ROWS.

        Every job leaves two dead rows in jobs (its claim updates the row, its finish moves
        it out), so a busy queue makes them by the thousand each second; left alone they
        slow the claim within minutes (measured: half the throughput at 1.8 million).
        finished_jobs gets them from pruning.  Autovacuum keeps up where it runs with the
        tables' settings (see the migrations), but a server may have it off, or it may lag.
        One node at a time (an advisory lock); a plain VACUUM takes no lock that blocks
        claims.  True if it vacuumed."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(QUERIES["dead_rows"])
            due = [row["name"] for row in await cur.fetchall() if row["dead"] >= VACUUM_DEAD_ROWS]
            if not due:
                return False
            key = zlib.crc32(f"jobd vacuum {self.schema}".encode()) - 2**31
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (key,))
            if not (await fetch_one(cur))["got"]:
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


def _unless(
    alone: bool, transaction: contextlib.AbstractAsyncContextManager[Any]
) -> contextlib.AbstractAsyncContextManager[Any]:
    """The transaction, unless the insert goes alone (rows.inserts_alone): then it is one
    round trip, its own transaction (docs/adr/0041)."""
    return contextlib.nullcontext() if alone else transaction
