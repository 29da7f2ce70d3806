"""The PostgreSQL store's connections: the pool its operations borrow from, how each
connection is set up, and how a database that cannot be reached becomes Unavailable.

Apart from the operations because it is state of its own (the pool, the backends it opened,
whether the database is known to be down) that none of the SQL needs to know about."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from jobd.errors import InvalidParams, Unavailable

Connection = psycopg.AsyncConnection[dict[str, Any]]

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


@dataclass(frozen=True)
class SessionTimeouts:
    """What each connection's session tells the server and the kernel, so that a connection
    that hangs is found out in seconds (database.statement_timeout, database.network_timeout;
    docs/adr/0022).  0 turns one off; both are off unless given.

    - the server cancels a statement running longer than `statement`, and ends a session
      idle inside a transaction for that long (its locks would block everyone else);
    - TCP keepalives probe an idle connection after a third of `network`, and the kernel gives
      up on one whose data goes unacknowledged for `network` (tcp_user_timeout).

    These cannot see a hang behind something that still acknowledges packets (a userspace
    proxy, a stuck server process): there the caller's deadline is what ends the wait."""

    statement: float = 0.0  # none unless configured: `jobd migrate` may run long DDL
    network: float = 0.0

    def libpq(self) -> dict[str, Any]:
        """The libpq connection parameters (keepalives, tcp_user_timeout)."""
        if self.network <= 0:
            return {}
        idle = max(1, math.ceil(self.network / 3))
        return {
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": max(1, math.ceil(self.network / 6)),
            "keepalives_count": 3,
            "tcp_user_timeout": math.ceil(self.network * 1000),
        }

    def settings(self) -> str:
        """The SET statements of each new session (milliseconds; 0: no limit)."""
        ms = math.ceil(self.statement * 1000)
        return f"SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}"


NO_SESSION_TIMEOUTS = SessionTimeouts()


def describe(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"store unavailable: {describe(exc)}")


class ConnectionPool:
    """Pooled autocommit connections to one database, each set to jobd's schema."""

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        min_size: int,
        max_size: int,
        connect_timeout: float,
        acquire_timeout: float,
        session: SessionTimeouts = NO_SESSION_TIMEOUTS,
        application_name: str = "jobd",
    ):
        self.url = url
        self.schema = schema
        self._min_size = min_size
        self._max_size = max(max_size, min_size)
        self._connect_timeout = connect_timeout
        self._acquire_timeout = acquire_timeout
        self._session = session
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._own_backends: dict[int, float] = {}  # pid of each pooled connection -> born
        self._siblings: list[ConnectionPool] = []  # this process's other pools (share_echoes)
        self._application_name = application_name
        self._down: str | None = None  # why the database could not be reached, until it can

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": max(2, math.ceil(self._connect_timeout)),
            "application_name": self._application_name,
            **self._session.libpq(),
        }

    def is_own_backend(self, pid: int) -> bool:
        """Whether `pid` is the server process of one of this pool's connections (so a
        notification it sent is our own echo, or one of a sibling pool's)."""
        return pid in self._own_backends or any(pid in s._own_backends for s in self._siblings)

    def share_echoes(self, sibling: ConnectionPool) -> None:
        """`sibling` is another pool of this process (the control server's, beside the
        supervisor's): a NOTIFY one of its connections sent is an echo here too, since the
        store it belongs to has announced it to its own listeners already."""
        self._siblings.append(sibling)

    async def open(self) -> None:
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self.url,
            min_size=self._min_size,
            max_size=self._max_size,
            kwargs=self.connect_kwargs(),
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
            raise unavailable(exc) from exc
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

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
        submit spent 220 ms compiling.

        And the session's timeouts (SessionTimeouts)."""
        await conn.execute(
            sql.SQL(
                "SET search_path TO {}; SET TIME ZONE 'UTC'; SET enable_sort = off; SET jit = off;"
                + self._session.settings()
            ).format(sql.Identifier(self.schema))
        )
        now = time.monotonic()
        self._own_backends[conn.info.backend_pid] = now
        for pid, born in list(self._own_backends.items()):
            if now - born > 2 * _MAX_LIFETIME:
                del self._own_backends[pid]

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
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
            self._down = describe(exc)
            raise unavailable(exc) from exc
        except psycopg.OperationalError as exc:
            self._down = describe(exc)
            raise unavailable(exc) from exc
        except psycopg.DataError as exc:  # a value the database cannot hold, e.g. a NUL byte
            raise InvalidParams(f"rejected by the database: {describe(exc)}") from exc
        self._down = None
