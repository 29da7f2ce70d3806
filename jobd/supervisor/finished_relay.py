"""FINISHED notifications carried from the supervisor's store to the control server's, on the
control server's thread (docs/adr/0036).

Under `jobd run` on PostgreSQL the supervisor's writes and the control server's requests use
two stores, each on a thread of its own.  A finish is announced by the store that wrote it
(PostgreSQL sends no NOTIFY for it), so the control server's `wait` hears of it only through
this relay.  Jobs finish by the thousand a second under a backlog: the relay gathers them and
crosses once per batch (a finish's announcements come in one burst), not once per job, since
each crossing costs a wake-up write and a hand-over of the interpreter lock."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable

from jobd.store import Notification, NotificationKind


class FinishedRelay:
    """A store listener (on the supervisor's store's thread) that delivers each FINISHED to
    `deliver` on `loop` (the control server's), in batches; only those of the jobs `wanted`
    says a `wait` is waiting for, once the control server has said how to tell."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, deliver: Callable[[Iterable[Notification]], None]
    ):
        self._loop = loop
        self._deliver = deliver
        self._lock = threading.Lock()
        self._pending: list[Notification] = []
        #: Whether a `wait` waits for a job.  Read on this thread, while the control server's
        #: adds and removes waits: one that begins after the check reads the job after the
        #: finish was committed, so it needs no notification.  Under a backlog nobody waits,
        #: and the control thread is no longer woken for every write-back (ADR 0040).
        self.wanted: Callable[[int], bool] = lambda job_id: True

    def __call__(self, notification: Notification) -> None:
        if notification.kind is not NotificationKind.FINISHED:
            return  # the control server acts on nothing else (the supervisor hears the rest)
        if notification.job_id is not None and not self.wanted(notification.job_id):
            return
        with self._lock:
            self._pending.append(notification)
            first = len(self._pending) == 1
        if first:  # one crossing for all that arrive before the other loop's next turn
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        self._deliver(pending)
