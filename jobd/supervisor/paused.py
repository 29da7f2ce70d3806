"""The queues the fleet has paused, as this node knows them (docs/adr/0030): read from the
store before the node's first claim, again before a claim once a heartbeat interval has
passed, and at once when a pause or resume is announced (NotificationKind.QUEUES); the claims
leave these queues out.  The same reading brings the queues' runtime limits (`also`:
jobd.supervisor.fleet_limits).  The claim statement pays nothing for it: the set rides on the
exclusion it already has (`exclude_queues`).

The `jobd_queue_paused` gauge shows the set as this node last read it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge

from jobd.errors import Unavailable
from jobd.store import Notification, NotificationKind, Store
from jobd.store.queues import QueueRecord

log = logging.getLogger("jobd.supervisor")


class PausedQueues:
    def __init__(
        self,
        store: Store,
        *,
        heartbeat: float,
        also: Callable[[list[QueueRecord]], None] | None = None,
    ):
        self.store = store
        self.heartbeat = heartbeat
        #: Told every reading of the queues' rows (the runtime limits ride on them).
        self.also = also
        self.names: frozenset[str] = frozenset()
        #: False until the set has been read once: no claim before that, or a node that
        #: starts while a queue is paused could claim from it.
        self.known = False
        self._read_at = -float("inf")  # monotonic
        self._stale = False  # a notification said the set changed
        self._tasks: set[asyncio.Task[None]] = set()
        self.gauge: Gauge | None = None
        store.add_listener(self._on_notification)

    def export(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "jobd_queue_paused",
            "1 for each queue paused for the whole fleet, as of this node's last reading.",
            ["queue"],
            registry=registry,
        )

    def due(self, now: float) -> bool:
        return not self.known or self._stale or now - self._read_at >= self.heartbeat

    async def refresh(self) -> None:
        """Read the paused queues again (raises Unavailable)."""
        self._stale = False
        records = await self.store.queue_records()
        if self.also is not None:
            self.also(records)
        names = frozenset(r.name for r in records if r.paused)
        before, self.names, self.known = self.names, names, True
        self._read_at = time.monotonic()
        if names != before:
            log.info("paused queues: %s", ", ".join(sorted(names)) or "none")
            if self.gauge is not None:
                self.gauge.clear()
                for name in names:
                    self.gauge.labels(name).set(1)

    def _on_notification(self, n: Notification) -> None:
        """A pause or resume: read the set now, not at the next claim (which may be long in
        coming on a busy node whose workers are all taken)."""
        if n.kind is not NotificationKind.QUEUES:
            return
        self._stale = True
        try:
            task = asyncio.get_running_loop().create_task(self._refresh_quietly())
        except RuntimeError:  # no loop running: the next claim reads it
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Unavailable as exc:  # _stale stays: the next claim reads it
            self._stale = True
            log.warning("could not read the paused queues: %s", exc.message)
