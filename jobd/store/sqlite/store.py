"""SQLiteStore: the SQLite store's operations, each one trip to the database thread.

The database thread (thread.py), the statements (sql.py), the conversions of values
(rows.py) and the migrations (schema.py) are its collaborators; what is left here is what
each operation reads, lets the domain decide, and writes back, in one write transaction."""

from __future__ import annotations

import builtins
import dataclasses
import json
import secrets
import sqlite3
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from jobd.clock import utcnow
from jobd.domain import DEFAULT_MAX_ATTEMPTS, IllegalTransition, Job, NewJob, State
from jobd.errors import Conflict, InvalidParams, NotFound, Unavailable
from jobd.schedules import Schedule
from jobd.store.base import (
    Changed,
    Clock,
    CountRow,
    Counts,
    JobFilter,
    Links,
    Notification,
    NotificationKind,
    Outcome,
    Page,
    ProgressReport,
    Start,
    Store,
    Submitted,
    check_limit,
    decode_cursor,
    encode_cursor,
    lease_until,
    outcome_applied,
    owns,
    storable_outcome,
    validate_specs,
)
from jobd.store.nodes import Fleet, NodeReport, NodeStatus, workers_from, workers_json
from jobd.store.schedules import RunKind, ScheduleRecord, TickResult
from jobd.store.sqlite import activity as activity_rows
from jobd.store.sqlite import schedules as schedule_rows
from jobd.store.sqlite import schema
from jobd.store.sqlite import workflows as workflow_rows
from jobd.store.sqlite.lock import NodeLock
from jobd.store.sqlite.queues import QueueMethods
from jobd.store.sqlite.rows import (
    STATES,
    dt,
    insert_row,
    job_from_row,
    progress_row,
    ts,
    update_row,
)
from jobd.store.sqlite.sql import (
    CANCELS_OF_NODE,
    CLAIM_UPDATE,
    COUNTS,
    EXPIRED,
    HEARTBEAT,
    INSERT_JOB,
    JOBS_BY_ID,
    JOBS_BY_KEY,
    LAST_ID,
    MIN_NODE_VERSION,
    NODES,
    PENDING_BY_TYPE,
    PRUNE,
    PRUNE_EDGES,
    PRUNE_EXPIRED,
    PRUNE_NODES,
    RECORD_PROGRESS,
    REPORT_NODE,
    SELECT_BY_ID,
    UPDATE_JOB,
    claim_select,
    list_select,
)
from jobd.store.sqlite.thread import DatabaseThread, write_transaction

DEFAULT_BUSY_TIMEOUT = 5.0

P = ParamSpec("P")
T = TypeVar("T")


class SQLiteStore(QueueMethods, Store):
    kind = "sqlite"

    def __init__(
        self,
        path: Path | str,
        clock: Clock = utcnow,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        create_directory: bool = True,
    ):
        """`synchronous`: "FULL" (the default) fsyncs the WAL at every commit, so a job whose
        submit returned survives a power failure or a kernel crash, at the price of one fsync
        per write transaction (claims and finishes are batched, so that is per batch, not per
        job).  "NORMAL" syncs only at checkpoints: still safe against corruption and against a
        crash of the process, but the last transactions before a power failure may be lost --
        an acknowledged submit could vanish.  A job daemon's promise is that it does not lose
        acknowledged jobs, so FULL is the default and NORMAL an explicit choice for throughput.

        `busy_timeout`: seconds to wait for another process's write lock before Unavailable.

        `create_directory`: create the file's directory (0700) when it is missing; when False
        a missing directory is a ConfigError naming it.  create_store passes True only for
        jobd's default state directory: a directory the user named must exist."""
        super().__init__()
        synchronous = synchronous.upper()
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous: expected FULL or NORMAL, got {synchronous!r}")
        self.path = Path(path)
        self._clock = clock
        self._node_lock: NodeLock | None = None
        self.db = DatabaseThread(
            self.path,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            create_directory=create_directory,
        )

    # --- life cycle ---------------------------------------------------------------------

    async def open(self) -> None:
        await self.db.run(lambda conn: None)

    def lock_for_node(self, socket: Path) -> None:
        """Take the file for this daemon alone, until close(): NodeLockHeld names the daemon
        (pid, control socket) that already has it.  Only `jobd run` locks: tools such as
        `jobd migrate` and the tests open the file beside a running daemon."""
        self.db.prepare_directory()
        try:
            self._node_lock = NodeLock.take(self.path, socket)
        except OSError as exc:
            raise Unavailable(f"cannot lock the SQLite database {self.path}: {exc}") from exc

    async def close(self) -> None:
        try:
            await self.db.close()
        finally:
            if self._node_lock is not None:
                self._node_lock.release()

    async def ping(self) -> None:
        await self.db.run(
            lambda conn: conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        )

    # --- migrations -----------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        return await self.db.run(schema.migrate, self._clock)

    async def pending_migrations(self) -> list[str]:
        return await self.db.run(schema.pending_migrations)

    # --- clients' operations ----------------------------------------------------------------

    async def submit_many(self, specs: Sequence[NewJob]) -> list[Submitted]:
        validate_specs(specs)
        if not specs:
            return []
        out = await self.db.run(self._submit_many, list(specs))
        for queue in {s.job.queue for s in out if s.created and s.job.state is State.PENDING}:
            self._notify(Notification(NotificationKind.SUBMITTED, queue=queue))
        return out

    def _submit_many(self, conn: sqlite3.Connection, specs: list[NewJob]) -> list[Submitted]:
        out: list[Submitted] = []
        rows: list[tuple[Any, ...]] = []
        with write_transaction(conn):
            now = self._clock()
            keys = [s.idempotency_key for s in specs if s.idempotency_key]
            by_key = self._jobs_by_key(conn, keys) if keys else {}
            (last_id,) = conn.execute(LAST_ID).fetchone()
            for spec in specs:
                key = spec.idempotency_key
                if key and key in by_key:  # existing, or earlier in this same batch
                    out.append(Submitted(by_key[key], created=False))
                    continue
                last_id += 1
                job = Job.new(last_id, spec, now)
                if job.run_at.utcoffset():  # answer with the job as get() will return it
                    job = dataclasses.replace(job, run_at=job.run_at.astimezone(UTC))
                if key:
                    by_key[key] = job
                rows.append(insert_row(job))
                out.append(Submitted(job, created=True))
            conn.executemany(INSERT_JOB, rows)
            out = workflow_rows.link(conn, specs, out, now)
        return out

    def _jobs_by_key(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        # Without \u escapes: a shorter parameter (json_each decodes either form).
        for row in conn.execute(JOBS_BY_KEY, (json.dumps(list(keys), ensure_ascii=False),)):
            job = job_from_row(row)
            found[job.idempotency_key] = job  # type: ignore[index]
        return found

    def _jobs_by_id(self, conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, Job]:
        return {row[0]: job_from_row(row) for row in conn.execute(JOBS_BY_ID, (json.dumps(ids),))}

    async def get(self, job_id: int) -> Job:
        return await self.db.run(self._get, job_id)

    def _get(self, conn: sqlite3.Connection, job_id: int) -> Job:
        row = conn.execute(SELECT_BY_ID, (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found", id=job_id)
        return workflow_rows.with_parents(conn, job_from_row(row))

    async def list(
        self, filters: JobFilter = JobFilter(), limit: int = 100, cursor: str | None = None
    ) -> Page:
        limit = check_limit(limit)
        before = decode_cursor(cursor) if cursor else None
        workflow = None
        if filters.workflow is not None:
            workflow = await self.db.run(workflow_rows.connected_ids, filters.workflow)
        sql, params = list_select(filters, before, workflow)
        # One row more than asked tells whether there is a next page.
        matched = await self.db.run(self._select_jobs, sql, (*params, limit + 1))
        more = len(matched) > limit
        jobs = matched[:limit]
        return Page(jobs, encode_cursor(jobs[-1].id) if more else None)

    def _select_jobs(
        self, conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]
    ) -> builtins.list[Job]:
        jobs = [job_from_row(row) for row in conn.execute(sql, params)]
        return workflow_rows.with_parents_of_all(conn, jobs)

    async def request_cancel(self, job_id: int) -> Job:
        changed, dependents = await self.db.run(self._change, job_id, workflow_rows.cancel)
        self._notify_cancel_requested(changed.job)
        self._notify_dependents(dependents)
        return changed.job

    async def operator_retry(self, job_id: int) -> Changed:
        changed, dependents = await self.db.run(self._change, job_id, workflow_rows.retry)
        self._notify_retried(changed.job)
        self._notify_dependents(dependents)
        return changed

    def _change(
        self, conn: sqlite3.Connection, job_id: int, change: workflow_rows.Change
    ) -> tuple[Changed, builtins.list[Job]]:
        with write_transaction(conn):
            before = self._get(conn, job_id)
            try:
                job, dependents = change(conn, before, self._clock())
            except IllegalTransition as exc:
                raise Conflict(str(exc), id=job_id, state=exc.current.value) from None
        return Changed(job, before.state), dependents

    # --- workflows (jobd/store/sqlite/workflows.py) -----------------------------------------

    async def links(self, job_id: int) -> Links:
        return await self.db.run(self._links, job_id)

    def _links(self, conn: sqlite3.Connection, job_id: int) -> Links:
        return workflow_rows.links(conn, self._get(conn, job_id))

    async def parent_results(self, job_id: int) -> dict[int, Any]:
        return await self.db.run(self._parent_results, job_id)

    def _parent_results(self, conn: sqlite3.Connection, job_id: int) -> dict[int, Any]:
        job = self._get(conn, job_id)
        parents = self._jobs_by_id(conn, list(job.parents))
        return {parent.id: parent.result for parent in parents.values()}

    async def counts(self) -> Counts:
        rows = await self.db.run(lambda conn: conn.execute(COUNTS).fetchall())
        return Counts([CountRow(q, t, STATES[s], n) for q, t, s, n in rows])

    # --- the supervisor's operations --------------------------------------------------------

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
        if limit < 1 or (queues is not None and not queues) or (types is not None and not types):
            return []  # nothing can match: no need to take the write lock
        sql, params = claim_select(queues, types, exclude_queues)
        return await self.db.run(self._claim, node, limit, lease, sql, params)

    def _claim(
        self,
        conn: sqlite3.Connection,
        node: str,
        limit: int,
        lease: float,
        sql: str,
        filter_params: builtins.list[str],
    ) -> builtins.list[Job]:
        with write_transaction(conn):
            return self.claim_rows(conn, node, limit, lease, sql, filter_params)

    def claim_rows(
        self,
        conn: sqlite3.Connection,
        node: str,
        limit: int,
        lease: float,
        sql: str,
        filter_params: builtins.list[str],
    ) -> builtins.list[Job]:
        """The claim's reads and writes, in the caller's write transaction."""
        now = self._clock()
        rows = conn.execute(sql, (ts(now), *filter_params, limit)).fetchall()
        until = lease_until(now, lease)
        claimed = [job_from_row(row).claim(node, until, now, new_token()) for row in rows]
        conn.executemany(
            CLAIM_UPDATE,
            [
                (
                    j.state.value,
                    j.attempts,
                    j.lease_owner,
                    ts(until),
                    None,
                    ts(now),
                    j.lease_token,
                    j.id,
                )
                for j in claimed
            ],
        )
        return claimed

    async def heartbeat(
        self, node: str, lease: float, job_ids: Collection[int] | None = None
    ) -> builtins.list[int]:
        ids = None if job_ids is None else json.dumps(sorted(int(i) for i in job_ids))
        return await self.db.run(self._heartbeat, node, lease, ids)

    def _heartbeat(
        self, conn: sqlite3.Connection, node: str, lease: float, ids: str | None
    ) -> builtins.list[int]:
        with write_transaction(conn):
            now = self._clock()
            conn.execute(HEARTBEAT, (ts(lease_until(now, lease)), node, ids))
            return [job_id for (job_id,) in conn.execute(CANCELS_OF_NODE, (node, ids))]

    async def finish(
        self, node: str, outcomes: Sequence[Outcome], starts: Sequence[Start] = ()
    ) -> dict[int, State]:
        if not outcomes and not starts:
            return {}
        cleaned = [storable_outcome(o) for o in outcomes]
        applied, dependents = await self.db.run(self._finish, node, cleaned, list(starts))
        self._notify_finished(applied)
        self._notify_dependents(dependents)
        return applied

    def _finish(
        self,
        conn: sqlite3.Connection,
        node: str,
        outcomes: builtins.list[Outcome],
        starts: builtins.list[Start],
    ) -> tuple[dict[int, State], builtins.list[Job]]:
        """Fenced like the memory store: an outcome applies only while (id, attempt, node)
        still owns the job, checked on the rows as they are under the write lock."""
        changed: dict[int, Job] = {}
        with write_transaction(conn):
            now = self._clock()
            ids = [s.job_id for s in starts] + [o.job_id for o in outcomes]
            jobs = self._jobs_by_id(conn, list(dict.fromkeys(ids)))
            for start in starts:
                job = jobs.get(start.job_id)
                if job is not None and owns(job, node, start):
                    jobs[job.id] = changed[job.id] = job.start(start.at)
            states: dict[int, State] = {}
            for outcome in outcomes:
                job = jobs.get(outcome.job_id)
                if job is None or not owns(job, node, outcome):
                    continue
                job = outcome_applied(job, outcome, now)
                jobs[job.id] = changed[job.id] = job
                states[job.id] = job.state
            conn.executemany(UPDATE_JOB, [update_row(j) for j in changed.values()])
            ended = [jobs[job_id] for job_id in states]
            dependents = workflow_rows.parents_ended(conn, ended, now)
        return states, dependents

    async def record_progress(
        self, node: str, reports: Sequence[ProgressReport]
    ) -> builtins.list[int]:
        if not reports:
            return []
        return await self.db.run(self._record_progress, node, list(reports))

    def _record_progress(
        self, conn: sqlite3.Connection, node: str, reports: builtins.list[ProgressReport]
    ) -> builtins.list[int]:
        with write_transaction(conn):
            return [
                report.job_id
                for report in reports
                if conn.execute(RECORD_PROGRESS, progress_row(node, report)).rowcount
            ]

    async def recover_expired(self) -> builtins.list[Job]:
        recovered, dependents = await self.db.run(self._recover_expired)
        self._notify_finished({j.id: j.state for j in recovered})
        self._notify_dependents(dependents)
        return recovered

    def _recover_expired(
        self, conn: sqlite3.Connection
    ) -> tuple[builtins.list[Job], builtins.list[Job]]:
        with write_transaction(conn):
            now = self._clock()
            expired = sorted(
                (job_from_row(row) for row in conn.execute(EXPIRED, (ts(now),))), key=lambda j: j.id
            )
            recovered = [job.recover(now) for job in expired]
            conn.executemany(UPDATE_JOB, [update_row(j) for j in recovered])
            dependents = workflow_rows.parents_ended(conn, recovered, now)
        return recovered, dependents

    activity = activity_rows.activity  # the last hour's ends per minute (activity.py)

    async def prune(self, older_than: timedelta | None, batch: int = 1000) -> int:
        """One transaction, and one trip to the database thread, per batch: the supervisor's
        own claims and finishes get the thread (and other processes the write lock) between
        batches instead of waiting behind a long delete.  The jobs past their own result_ttl
        first, then (unless `older_than` is None) the others past the retention."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidParams("batch: must be a positive integer")
        now = self._clock()
        total = await self._prune_pass(PRUNE_EXPIRED, ts(now), batch)
        if older_than is not None:
            total += await self._prune_pass(PRUNE, ts(now - older_than), batch)
        return total

    async def _prune_pass(self, statement: str, before: float, batch: int) -> int:
        total = 0
        while True:
            deleted = await self.db.run(self._prune_batch, statement, before, batch)
            total += deleted
            if deleted < batch:
                return total

    def _prune_batch(
        self, conn: sqlite3.Connection, statement: str, before: float, batch: int
    ) -> int:
        with write_transaction(conn):
            pruned = [job_id for (job_id,) in conn.execute(statement, (before, batch))]
            if pruned:
                conn.execute(PRUNE_EDGES, (json.dumps(pruned),))
            return len(pruned)

    # --- the fleet -----------------------------------------------------------------------

    async def report_node(self, report: NodeReport) -> None:
        await self.db.run(self._report_node, report)

    def _report_node(self, conn: sqlite3.Connection, r: NodeReport) -> None:
        row = (r.id, r.host, r.pid, r.version, ts(r.started_at), ts(self._clock()))
        with write_transaction(conn):
            conn.execute(
                REPORT_NODE, (*row, json.dumps(r.types), json.dumps(workers_json(r.workers)))
            )

    async def fleet(self, lease: float) -> Fleet:
        return await self.db.run(self._fleet, lease)

    def _fleet(self, conn: sqlite3.Connection, lease: float) -> Fleet:
        live_after = ts(self._clock()) - lease
        (minimum,) = conn.execute(MIN_NODE_VERSION).fetchone()
        nodes = [
            NodeStatus(
                NodeReport(
                    node_id, host, pid, version, dt(started), tuple(json.loads(types)),
                    workers_from(json.loads(workers)),
                ),
                dt(beat),
                beat > live_after,
            )
            for node_id, host, pid, version, started, beat, types, workers in conn.execute(NODES)
        ]  # fmt: skip
        pending = dict(conn.execute(PENDING_BY_TYPE).fetchall())
        return Fleet(minimum, nodes, pending)

    async def prune_nodes(self, older_than: timedelta) -> int:
        cutoff = ts(self._clock() - older_than)
        return await self.db.run(self._prune_nodes, cutoff)

    @staticmethod
    def _prune_nodes(conn: sqlite3.Connection, cutoff: float) -> int:
        with write_transaction(conn):
            return conn.execute(PRUNE_NODES, (cutoff,)).rowcount

    # --- schedules (jobd/store/sqlite/schedules.py) ----------------------------------------

    async def enqueue_ticks(
        self, schedule: Schedule, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> TickResult:
        enqueue = self._transaction(schedule_rows.enqueue_ticks, schedule, default_max_attempts)
        result = await self.db.run(enqueue)
        self._notify_submitted(result.jobs)
        return result

    async def trigger_schedule(
        self, schedule: Schedule, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> Job:
        job = await self.db.run(self._transaction(_trigger, schedule, default_max_attempts))
        self._notify_submitted((job,))
        return job

    async def schedule_records(self) -> builtins.list[ScheduleRecord]:
        return await self.db.run(schedule_rows.records)

    async def set_schedule_paused(self, name: str, paused: bool) -> ScheduleRecord:
        return await self.db.run(self._transaction(schedule_rows.set_paused, name, paused))

    def _transaction(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, datetime, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Callable[[sqlite3.Connection], T]:
        """`fn(conn, now, *args)` as one write transaction, `now` read once it is held."""

        def run(conn: sqlite3.Connection) -> T:
            with write_transaction(conn):
                return fn(conn, self._clock(), *args, **kwargs)

        return run


def _trigger(
    conn: sqlite3.Connection, now: datetime, schedule: Schedule, default_max_attempts: int
) -> Job:
    schedule_rows.lock(conn, schedule, now)
    return schedule_rows.insert_run(conn, schedule, now, RunKind.TRIGGER, now, default_max_attempts)


def new_token() -> int:
    """A claim's lease token: random, so no counter row is written by every claim (a repeat
    would need the same job claimed twice at the same attempt by the same node: 2^-63)."""
    return secrets.randbits(63)
