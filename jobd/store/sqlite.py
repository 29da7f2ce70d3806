"""The embedded store: one SQLite file in WAL mode, the default when no database is configured.

One node only (the lease machinery still works, but several daemons on one file would all queue
for SQLite's single write lock).  How it is built:

- **One thread, one connection.**  The Store methods are coroutines on the supervisor's loop; all
  database work runs on a single dedicated thread (a one-worker executor) that owns the only
  connection.  Calls are therefore serialised in the order they were made, sqlite3's
  same-thread check holds, and the event loop never waits on the disk.  Each store operation is
  exactly one hop to that thread: the whole transaction, including the domain's transition code
  and the conversion of rows to Jobs, runs there.
- **Transactions.**  The connection is in autocommit mode (`isolation_level=None`) and every
  write is an explicit `BEGIN IMMEDIATE … COMMIT`: the write lock is taken at BEGIN, so a
  read-then-write (claim, finish) cannot be overtaken by another process between its read and
  its write, and a busy database makes us wait at BEGIN (busy_timeout) rather than fail midway.
- **The domain decides.**  Like the memory store, rows are loaded into `Job`s, the domain's
  transition methods (`Job.claim`, `outcome_applied`, `Job.recover`, …) compute the new values,
  and those are written back; no state rule is restated in SQL except the claim's selection.
- **Cancellation.**  If the awaiting coroutine is cancelled, the work already handed to the thread
  still runs to its end (commit or rollback); only its answer is lost.  For a claim that means
  jobs leased to this node that nobody runs, which lease recovery hands back when they expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from jobd import migrations
from jobd.domain import ErrorInfo, IllegalTransition, Job, NewJob, State
from jobd.errors import Conflict, InvalidParams, JobdError, NotFound, Unavailable
from jobd.store.base import (
    CountRow,
    Counts,
    JobFilter,
    Notification,
    NotificationKind,
    Outcome,
    Page,
    Store,
    Submitted,
    check_limit,
    decode_cursor,
    encode_cursor,
    json_default,
    lease_until,
    outcome_applied,
    owns,
    validate_specs,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")

DIALECT = "sqlite"
DEFAULT_BUSY_TIMEOUT = 5.0
# Bound parameters per IN (...) list: far below SQLite's limit (999 before 3.32).
_CHUNK = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- SQL -------------------------------------------------------------------------------
# Column lists come from the Job dataclass itself, so a field added to the domain without a
# migration fails loudly at the first query instead of being silently dropped.

_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
_COLUMNS = ", ".join(_FIELDS)
# What a transition can change; the rest is fixed at submit.
_MUTABLE = (
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
)
_TERMINAL = "('completed', 'failed', 'canceled')"

SELECT_BY_ID = f"SELECT {_COLUMNS} FROM jobs WHERE id = ?"
INSERT_JOB = f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join('?' * len(_FIELDS))})"
UPDATE_JOB = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in _MUTABLE)} WHERE id = ?"

# The largest id ever handed out (AUTOINCREMENT keeps it in sqlite_sequence, pruned or not).
# Read under the write lock, it lets submit_many number its rows itself and insert them with
# one executemany instead of one statement per row to learn each lastrowid.
LAST_ID = "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0)"

# The claim, served by the partial index jobs_claim (priority DESC, run_at, id) WHERE state =
# 'pending': SQLite walks the index in claim order, skips rows whose run_at has not come (or
# outside the queue/type filter) and stops at the LIMIT.  {filters} adds `AND queue IN (…)` /
# `AND type IN (…)` when the caller restricts them.
CLAIM_CANDIDATES = f"""
SELECT {_COLUMNS} FROM jobs
 WHERE state = 'pending' AND run_at <= ? AND attempts < max_attempts{{filters}}
 ORDER BY priority DESC, run_at, id
 LIMIT ?
"""
CLAIM_UPDATE = """
UPDATE jobs
   SET state = ?, attempts = ?, lease_owner = ?, lease_expires_at = ?, started_at = ?,
       updated_at = ?
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
SELECT {_COLUMNS} FROM jobs
 WHERE state = 'running' AND lease_expires_at <= ?
"""
PRUNE = f"""
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs WHERE finished_at < ? AND state IN {_TERMINAL} LIMIT ?
)
"""
COUNTS = """
SELECT queue, type, state, count(*) FROM jobs
 GROUP BY queue, type, state
 ORDER BY queue, type, state
"""

SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""
HAS_SCHEMA_MIGRATIONS = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary result code
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _select_in(column: str, n: int) -> str:
    """SELECT the jobs whose `column` is one of `n` parameters (the partial unique index on
    idempotency_key serves it: `IN` implies IS NOT NULL)."""
    return f"SELECT {_COLUMNS} FROM jobs WHERE {column} IN ({_placeholders(n)})"


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- values in and out -------------------------------------------------------------------

_STATES = {s.value: s for s in State}


def _ts(value: datetime) -> float:
    if value.tzinfo is None:
        raise InvalidParams(f"timestamp {value.isoformat()} must carry a time zone")
    return value.timestamp()


def _opt_ts(value: datetime | None) -> float | None:
    return None if value is None else _ts(value)


def _dt(value: float) -> datetime:
    # A double holds epoch seconds to well under half a microsecond until 2106, and
    # fromtimestamp rounds to the nearest microsecond: the round trip is exact.
    return datetime.fromtimestamp(value, UTC)


def _opt_dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _dumps(value: Any, what: str) -> str:
    try:
        # allow_nan=False: NaN/Infinity are not JSON, and PostgreSQL's jsonb refuses them too.
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidParams(f"{what}: not JSON serialisable: {exc}") from None


def _opt_dumps(value: Any, what: str) -> str | None:
    return None if value is None else _dumps(value, what)


def _job(row: Sequence[Any]) -> Job:
    (
        job_id,
        job_type,
        queue,
        priority,
        payload,
        state,
        attempts,
        max_attempts,
        crashes,
        run_at,
        timeout,
        last_error,
        result,
        idempotency_key,
        correlation_id,
        cancel_requested,
        lease_owner,
        lease_expires_at,
        created_at,
        updated_at,
        started_at,
        finished_at,
    ) = row
    return Job(
        id=job_id,
        type=job_type,
        queue=queue,
        priority=priority,
        payload=json.loads(payload),
        state=_STATES[state],
        attempts=attempts,
        max_attempts=max_attempts,
        crashes=crashes,
        run_at=_dt(run_at),
        timeout=timeout,
        last_error=ErrorInfo.from_dict(json.loads(last_error)) if last_error else None,
        result=None if result is None else json.loads(result),
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        cancel_requested=bool(cancel_requested),
        lease_owner=lease_owner,
        lease_expires_at=_opt_dt(lease_expires_at),
        created_at=_dt(created_at),
        updated_at=_dt(updated_at),
        started_at=_opt_dt(started_at),
        finished_at=_opt_dt(finished_at),
    )


def _insert_row(job: Job) -> tuple[Any, ...]:
    return (
        job.id,
        job.type,
        job.queue,
        job.priority,
        _dumps(job.payload, "payload"),
        job.state.value,
        job.attempts,
        job.max_attempts,
        job.crashes,
        _ts(job.run_at),
        job.timeout,
        _opt_dumps(job.last_error.to_dict() if job.last_error else None, "last_error"),
        _opt_dumps(job.result, "result"),
        job.idempotency_key,
        job.correlation_id,
        int(job.cancel_requested),
        job.lease_owner,
        _opt_ts(job.lease_expires_at),
        _ts(job.created_at),
        _ts(job.updated_at),
        _opt_ts(job.started_at),
        _opt_ts(job.finished_at),
    )


def _update_row(job: Job) -> tuple[Any, ...]:
    """Parameters of UPDATE_JOB: the _MUTABLE columns, then the id."""
    return (
        job.state.value,
        job.attempts,
        job.crashes,
        _ts(job.run_at),
        _opt_dumps(job.last_error.to_dict() if job.last_error else None, "last_error"),
        _opt_dumps(job.result, f"result of job {job.id}"),
        int(job.cancel_requested),
        job.lease_owner,
        _opt_ts(job.lease_expires_at),
        _ts(job.updated_at),
        _opt_ts(job.started_at),
        _opt_ts(job.finished_at),
        job.id,
    )


# --- transactions and migrations ---------------------------------------------------------


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error.

    IMMEDIATE takes the write lock now (waiting up to busy_timeout for it), so nothing another
    process writes can slip in between this transaction's reads and its writes; a plain BEGIN
    would fail with SQLITE_BUSY at the first write instead, without waiting."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, one at a time.

    sqlite3's executescript() would COMMIT whatever transaction is open first; running the
    statements one by one keeps a migration and its schema_migrations row in one transaction.
    sqlite3.complete_statement knows about string literals, comments and trigger bodies."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    leftover = [ln for ln in buffer.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise ValueError(f"SQL script ends with an unterminated statement: {leftover[0]!r}")


def _prepare_file(path: Path) -> None:
    """Create the database's directory (0700) and the file itself (0600) if they are missing.

    SQLite creates its -wal and -shm files with the database file's permissions, so creating
    the file ourselves keeps all three private whatever the umask: payloads may be secret."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))


# --- the store ---------------------------------------------------------------------------


class SQLiteStore(Store):
    kind = "sqlite"

    def __init__(
        self,
        path: Path | str,
        clock: Clock = utcnow,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ):
        """`synchronous`: "FULL" (the default) fsyncs the WAL at every commit, so a job whose
        submit returned survives a power failure or a kernel crash, at the price of one fsync
        per write transaction (claims and finishes are batched, so that is per batch, not per
        job).  "NORMAL" syncs only at checkpoints: still safe against corruption and against a
        crash of the process, but the last transactions before a power failure may be lost --
        an acknowledged submit could vanish.  A job daemon's promise is that it does not lose
        acknowledged jobs, so FULL is the default and NORMAL an explicit choice for throughput.

        `busy_timeout`: seconds to wait for another process's write lock before Unavailable."""
        super().__init__()
        synchronous = synchronous.upper()
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous: expected FULL or NORMAL, got {synchronous!r}")
        self.path = Path(path)
        self._clock = clock
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None  # touched only on the executor's thread
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobd-sqlite")
        self._closed = False

    # --- running work on the database thread -------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on the database thread and return its result."""
        if self._closed:
            raise Unavailable(f"the SQLite store {self.path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._call, fn, args)
        except RuntimeError as exc:
            if self._closed:  # closed while this call was on its way to the thread
                raise Unavailable(f"the SQLite store {self.path} is closed") from exc
            raise

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(self._connection(), *args)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        except UnicodeEncodeError as exc:  # e.g. a lone surrogate that came in through JSON
            raise InvalidParams(f"text that is not valid Unicode: {exc}") from None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        try:
            _prepare_file(self.path)
        except OSError as exc:
            raise Unavailable(f"cannot create the SQLite database {self.path}: {exc}") from exc
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,  # sets SQLite's busy_timeout
            isolation_level=None,  # autocommit: we issue BEGIN IMMEDIATE / COMMIT ourselves
            cached_statements=256,
        )
        try:
            mode = self._enable_wal(conn)
            if mode.lower() != "wal":
                log.warning(
                    "SQLite database %s: WAL mode refused (journal_mode=%s)", self.path, mode
                )
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch the file to WAL (a no-op once it is: the mode is stored in the file).

        The first switch needs an exclusive lock, and SQLite answers SQLITE_BUSY at once,
        without calling the busy handler, when another connection holds any lock -- two
        processes opening a new file together (`jobd migrate` and `jobd run` on a first boot)
        would see "database is locked".  So wait here, up to busy_timeout, as BEGIN does."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                return str(mode)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

    def _translate(self, exc: sqlite3.Error) -> JobdError:
        """A driver error as jobd's error tree: the database cannot be used right now
        (Unavailable), or a bug (JobdError, internal_error)."""
        if not isinstance(exc, sqlite3.OperationalError) and type(exc) is not sqlite3.DatabaseError:
            return JobdError(f"SQLite error on {self.path}: {exc}")
        if _is_busy(exc):
            message = (
                f"SQLite database {self.path} is locked: another process held its write lock"
                f" for more than {self._busy_timeout:g}s ({exc})"
            )
        elif "no such table" in str(exc):
            message = (
                f"SQLite database {self.path} has no jobd schema yet; run `jobd migrate` ({exc})"
            )
        else:
            message = f"SQLite database {self.path} is unavailable: {exc}"
        return Unavailable(message)

    # --- life cycle ---------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(lambda conn: None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_conn)
        finally:
            # Everything queued before close has run by now; this only joins the idle thread.
            self._executor.shutdown(wait=True)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall())

    # --- migrations -----------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        return await self._run(self._migrate)

    async def pending_migrations(self) -> list[str]:
        return await self._run(self._pending_migrations)

    def _migrate(self, conn: sqlite3.Connection) -> list[str]:
        """Apply each missing migration in its own transaction, together with its
        schema_migrations row; the check that it is missing is made under the write lock, so
        two processes migrating at once apply each migration once."""
        conn.execute(SCHEMA_MIGRATIONS)
        applied = []
        for migration in migrations.load(DIALECT):
            with write_transaction(conn):
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                ).fetchone()
                if done:
                    continue
                try:
                    for statement in statements(migration.sql):
                        conn.execute(statement)
                except sqlite3.Error as exc:
                    if _is_busy(exc):
                        raise
                    raise JobdError(f"SQLite migration {migration.name} failed: {exc}") from exc
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _ts(self._clock())),
                )
            applied.append(migration.name)  # the caller reports it (jobd run logs, migrate prints)
        return applied

    def _pending_migrations(self, conn: sqlite3.Connection) -> list[str]:
        done: set[int] = set()
        if conn.execute(HAS_SCHEMA_MIGRATIONS).fetchone():
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        return [m.name for m in migrations.load(DIALECT) if m.version not in done]

    # --- clients' operations ----------------------------------------------------------------

    async def submit_many(self, specs: Sequence[NewJob]) -> list[Submitted]:
        validate_specs(specs)
        if not specs:
            return []
        out = await self._run(self._submit_many, list(specs))
        for queue in {s.job.queue for s in out if s.created}:
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
                rows.append(_insert_row(job))
                out.append(Submitted(job, created=True))
            conn.executemany(INSERT_JOB, rows)
        return out

    def _jobs_by_key(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        for chunk in _chunks(keys):
            for row in conn.execute(_select_in("idempotency_key", len(chunk)), tuple(chunk)):
                job = _job(row)
                found[job.idempotency_key] = job  # type: ignore[index]
        return found

    def _jobs_by_id(self, conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, Job]:
        found: dict[int, Job] = {}
        for chunk in _chunks(ids):
            for row in conn.execute(_select_in("id", len(chunk)), tuple(chunk)):
                found[row[0]] = _job(row)
        return found

    async def get(self, job_id: int) -> Job:
        return await self._run(self._get, job_id)

    def _get(self, conn: sqlite3.Connection, job_id: int) -> Job:
        row = conn.execute(SELECT_BY_ID, (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found", id=job_id)
        return _job(row)

    async def list(
        self, filters: JobFilter = JobFilter(), limit: int = 100, cursor: str | None = None
    ) -> Page:
        limit = check_limit(limit)
        before = decode_cursor(cursor) if cursor else None
        where, params = _list_conditions(filters, before)
        sql = f"SELECT {_COLUMNS} FROM jobs{where} ORDER BY id DESC LIMIT ?"
        # One row more than asked tells whether there is a next page.
        matched = await self._run(self._select_jobs, sql, (*params, limit + 1))
        more = len(matched) > limit
        jobs = matched[:limit]
        return Page(jobs, encode_cursor(jobs[-1].id) if more else None)

    def _select_jobs(
        self, conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]
    ) -> list[Job]:
        return [_job(row) for row in conn.execute(sql, params)]

    async def request_cancel(self, job_id: int) -> Job:
        job = await self._run(self._change, job_id, lambda j, now: j.request_cancel(now))
        if job.state is State.RUNNING:
            self._notify(Notification(NotificationKind.CANCEL, job_id=job.id))
        else:
            self._notify(Notification(NotificationKind.FINISHED, job_id=job.id))
        return job

    async def retry(self, job_id: int) -> Job:
        job = await self._run(self._change, job_id, lambda j, now: j.operator_retry(now))
        self._notify(Notification(NotificationKind.SUBMITTED, queue=job.queue))
        return job

    def _change(
        self, conn: sqlite3.Connection, job_id: int, change: Callable[[Job, datetime], Job]
    ) -> Job:
        with write_transaction(conn):
            job = self._get(conn, job_id)
            try:
                job = change(job, self._clock())
            except IllegalTransition as exc:
                raise Conflict(str(exc), id=job_id, state=exc.current.value) from None
            conn.execute(UPDATE_JOB, _update_row(job))
        return job

    async def counts(self) -> Counts:
        rows = await self._run(lambda conn: conn.execute(COUNTS).fetchall())
        return Counts([CountRow(q, t, _STATES[s], n) for q, t, s, n in rows])

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
    ) -> list[Job]:
        if limit < 1 or (queues is not None and not queues) or (types is not None and not types):
            return []  # nothing can match: no need to take the write lock
        filters, params = "", []
        for column, values, op in (
            ("queue", queues, "IN"),
            ("type", types, "IN"),
            ("queue", exclude_queues or None, "NOT IN"),
        ):
            if values is not None:
                values = list(dict.fromkeys(values))
                filters += f" AND {column} {op} ({_placeholders(len(values))})"
                params.extend(values)
        sql = CLAIM_CANDIDATES.format(filters=filters)
        return await self._run(self._claim, node, limit, lease, sql, params)

    def _claim(
        self,
        conn: sqlite3.Connection,
        node: str,
        limit: int,
        lease: float,
        sql: str,
        filter_params: list[str],
    ) -> list[Job]:
        with write_transaction(conn):
            now = self._clock()
            rows = conn.execute(sql, (_ts(now), *filter_params, limit)).fetchall()
            until = lease_until(now, lease)
            claimed = [_job(row).claim(node, until, now) for row in rows]
            conn.executemany(
                CLAIM_UPDATE,
                [
                    (
                        j.state.value,
                        j.attempts,
                        j.lease_owner,
                        _ts(until),
                        _ts(now),
                        _ts(now),
                        j.id,
                    )
                    for j in claimed
                ],
            )
        return claimed

    async def heartbeat(
        self, node: str, lease: float, job_ids: Collection[int] | None = None
    ) -> list[int]:
        ids = None if job_ids is None else json.dumps(sorted(int(i) for i in job_ids))
        return await self._run(self._heartbeat, node, lease, ids)

    def _heartbeat(
        self, conn: sqlite3.Connection, node: str, lease: float, ids: str | None
    ) -> list[int]:
        with write_transaction(conn):
            now = self._clock()
            conn.execute(HEARTBEAT, (_ts(lease_until(now, lease)), node, ids))
            return [job_id for (job_id,) in conn.execute(CANCELS_OF_NODE, (node, ids))]

    async def finish(self, node: str, outcomes: Sequence[Outcome]) -> dict[int, State]:
        if not outcomes:
            return {}
        applied = await self._run(self._finish, node, list(outcomes))
        self._notify_finished(applied)
        return applied

    def _finish(
        self, conn: sqlite3.Connection, node: str, outcomes: list[Outcome]
    ) -> dict[int, State]:
        """Fenced like the memory store: an outcome applies only while (id, attempt, node)
        still owns the job, checked on the rows as they are under the write lock."""
        changed: dict[int, Job] = {}
        with write_transaction(conn):
            now = self._clock()
            jobs = self._jobs_by_id(conn, list(dict.fromkeys(o.job_id for o in outcomes)))
            for outcome in outcomes:
                job = jobs.get(outcome.job_id)
                if job is None or not owns(job, node, outcome.attempt):
                    continue
                job = outcome_applied(job, outcome, now)
                jobs[job.id] = changed[job.id] = job
            conn.executemany(UPDATE_JOB, [_update_row(j) for j in changed.values()])
        return {job_id: job.state for job_id, job in changed.items()}

    async def recover_expired(self) -> list[Job]:
        recovered = await self._run(self._recover_expired)
        self._notify_finished({j.id: j.state for j in recovered})
        return recovered

    def _recover_expired(self, conn: sqlite3.Connection) -> list[Job]:
        with write_transaction(conn):
            now = self._clock()
            expired = sorted(
                (_job(row) for row in conn.execute(EXPIRED, (_ts(now),))), key=lambda j: j.id
            )
            recovered = [job.recover(now) for job in expired]
            conn.executemany(UPDATE_JOB, [_update_row(j) for j in recovered])
        return recovered

    async def prune(self, older_than: timedelta, batch: int = 1000) -> int:
        """One transaction, and one trip to the database thread, per batch: the supervisor's
        own claims and finishes get the thread (and other processes the write lock) between
        batches instead of waiting behind a long delete."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidParams("batch: must be a positive integer")
        cutoff = _ts(self._clock() - older_than)
        total = 0
        while True:
            deleted = await self._run(self._prune_batch, cutoff, batch)
            total += deleted
            if deleted < batch:
                return total

    def _prune_batch(self, conn: sqlite3.Connection, cutoff: float, batch: int) -> int:
        with write_transaction(conn):
            return conn.execute(PRUNE, (cutoff, batch)).rowcount

    def _notify_finished(self, states: dict[int, State]) -> None:
        for job_id, state in states.items():
            kind = NotificationKind.FINISHED if state.terminal else NotificationKind.SUBMITTED
            self._notify(Notification(kind, job_id=job_id))


def _list_conditions(filters: JobFilter, before: int | None) -> tuple[str, list[Any]]:
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
        add(f"state IN ({_placeholders(len(states))})", *states)
    if filters.type is not None:
        add("type = ?", filters.type)
    if filters.queue is not None:
        add("queue = ?", filters.queue)
    if filters.created_after is not None:
        add("created_at > ?", _ts(filters.created_after))
    if filters.created_before is not None:
        add("created_at < ?", _ts(filters.created_before))
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params
