"""The PostgreSQL store's LISTEN connection: other sessions' NOTIFYs as Notifications.

One dedicated connection per store, outside the pool (a pooled connection would stop
listening when it went back).  Kept apart from the operations because it is a task with a
life of its own: it reconnects after a failure, and drops the echo of this process's own
NOTIFYs, which the store has already announced to its listeners directly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import psycopg
from psycopg import sql

from jobd.store.base import Notification, NotificationKind
from jobd.store.postgres.connections import (
    Connection,
    ConnectionPool,
    describe,
    unavailable,
)
from jobd.store.postgres.queues import QUEUES_PAYLOAD

log = logging.getLogger(__name__)


class NotificationListener:
    """LISTENs on the store's submit and cancel channels and hands each notification that
    another session sent to `deliver`."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        submit_channel: str,
        cancel_channel: str,
        check_interval: float,
        deliver: Callable[[Notification], None],
    ):
        self._pool = pool
        self._submit_channel = submit_channel
        self._cancel_channel = cancel_channel
        self._check_interval = check_interval
        self._deliver_to_store = deliver
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> Connection:
        """A connection listening on both channels (Unavailable if the server cannot be
        reached): made before the pool so that a wrong address fails fast and precisely."""
        kwargs = {**self._pool.connect_kwargs(), "keepalives_idle": 30, "keepalives_interval": 10}
        try:
            conn = await psycopg.AsyncConnection.connect(self._pool.url, **kwargs)
            for channel in (self._submit_channel, self._cancel_channel):
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            raise unavailable(exc) from exc
        return conn

    def start(self, conn: Connection) -> None:
        self._task = asyncio.create_task(
            self._listen(conn), name=f"jobd-listen-{self._pool.schema}"
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _listen(self, conn: Connection | None) -> None:
        """The LISTEN connection's life: deliver notifications until it fails, then reconnect
        with capped exponential backoff.  After a reconnect, listeners get a SUBMITTED with
        no queue: notifications sent while we were away are lost, so look for work."""
        failures = 0
        while True:
            try:
                if conn is None:
                    conn = await self.connect()
                    log.info("notification listener reconnected")
                    self._deliver(Notification(NotificationKind.SUBMITTED))
                failures = 0
                await self._receive(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep listening whatever went wrong; say what it was
                failures += 1
                log.warning("notification listener lost its connection: %s", describe(exc))
            finally:
                if conn is not None:
                    # A broken connection may fail to close cleanly; it is gone either way.
                    with contextlib.suppress(Exception):
                        await conn.close()
                    conn = None
            await asyncio.sleep(min(30.0, 0.1 * 2**failures) * (0.5 + random.random() / 2))

    async def _receive(self, conn: Connection) -> None:
        while True:
            async for notify in conn.notifies(timeout=self._check_interval):
                if not self._pool.is_own_backend(notify.pid):
                    self._deliver(self._notification(notify))
            # Quiet for a while: make sure the connection is still there (keepalives
            # notwithstanding, a silent network partition is only found by talking).
            await conn.execute("SELECT 1")

    def _notification(self, notify: psycopg.Notify) -> Notification:
        if notify.channel == self._cancel_channel:
            if notify.payload == QUEUES_PAYLOAD:  # a queue was paused or resumed
                return Notification(NotificationKind.QUEUES)
            job_id = int(notify.payload) if notify.payload.isdigit() else None
            return Notification(NotificationKind.CANCEL, job_id=job_id)
        return Notification(NotificationKind.SUBMITTED, queue=notify.payload or None)

    def _deliver(self, notification: Notification) -> None:
        try:
            self._deliver_to_store(notification)
        except Exception:  # a listener's bug must not stop notifications for the others
            log.exception("notification listener raised on %s", notification)
