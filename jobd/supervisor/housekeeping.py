"""The supervisor's periodic store work: heartbeats of this node's leases and of its row in the
nodes table (and, alongside, the asks of its schedules: jobd.supervisor.schedules), recovery
of any node's expired leases, the store's maintenance and the pruning of old finished jobs and
of dead nodes' rows, and a ping when nothing else has come back from the store for a while (so
its health is always known)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

from jobd.errors import Unavailable
from jobd.store import Store
from jobd.supervisor.fleet import FleetMember
from jobd.supervisor.job_events import JobEvents, job_fields
from jobd.supervisor.schedules import ScheduleMetrics, ScheduleRunner
from jobd.supervisor.settings import SupervisorSettings
from jobd.supervisor.store_health import PROBE_INTERVAL, StoreHealth

log = logging.getLogger("jobd.supervisor")

MAINTENANCE_INTERVAL = 5.0  # seconds between the store's maintenance checks


class Housekeeping:
    def __init__(
        self,
        store: Store,
        node: str,
        settings: SupervisorSettings,
        health: StoreHealth,
        events: JobEvents,
        fleet: FleetMember,
        *,
        held: Callable[[], Iterable[int]],
        cancel: Callable[[int], object],
        work_found: Callable[[], None],
    ):
        self.store = store
        self.node = node
        self.settings = settings
        self.health = health
        self.events = events
        self.fleet = fleet
        self._held = held  # ids of the jobs whose leases are ours to renew
        self._cancel = cancel  # stop a job this node runs
        self._work_found = work_found  # a recovered job may be claimed
        self.schedules = ScheduleRunner(
            store,
            settings.schedules,
            settings.default_max_attempts,
            ScheduleMetrics(events.metrics.registry),
            trouble=health.trouble,
        )

    async def heartbeat_loop(self) -> None:
        """The node's row at once (the fleet learns what it runs), then every heartbeat the
        leases and the row.  The schedules are asked for as long as the node beats: a node
        the fleet no longer sees alive does not enqueue either."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.schedules.run(), name="jobd-schedules")
            await self._beat()

    async def _beat(self) -> None:
        while True:
            try:
                await self.fleet.beat()
            except Unavailable as exc:
                self.health.trouble("heartbeat", exc)
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self.renew_leases()
            except Unavailable as exc:
                self.health.trouble("heartbeat", exc)

    async def probe_loop(self) -> None:
        """Ping the store when nothing has come back from it for PROBE_INTERVAL."""
        while True:
            quiet_for = PROBE_INTERVAL - self.health.silent_for()
            if quiet_for > 0:
                await asyncio.sleep(quiet_for)
                continue
            try:
                await self.store.ping()
                self.health.fine()
            except Unavailable as exc:
                self.health.trouble("ping", exc)
                await asyncio.sleep(PROBE_INTERVAL)

    async def renew_leases(self) -> None:
        """Extend the leases of the jobs this node holds (running, queued in a worker, claimed,
        or with a result waiting to be written).  Only those: one the database gave it whose
        claim answer never arrived must expire and be recovered, not be renewed for ever."""
        held = set(self._held())
        to_cancel = await self.store.heartbeat(self.node, self.settings.lease_seconds, held)
        self.health.fine()
        for job_id in to_cancel:
            self._cancel(job_id)

    async def recovery_loop(self) -> None:
        interval = max(min(self.settings.lease_seconds / 2, 10.0), 0.2)
        while True:
            try:
                # Our own leases first: after an outage longer than the lease they have run
                # out too, and this node must not take back -- and then discard the results
                # of -- the jobs it is running or holds results for.  (Other nodes' live jobs
                # are spared by the grace StoreHealth keeps once the store is back.)
                await self.renew_leases()
                if self.health.may_recover(time.monotonic()):
                    await self._recover()
            except Unavailable as exc:
                self.health.trouble("recover leases", exc)
            await asyncio.sleep(interval)

    async def _recover(self) -> None:
        for job in await self.store.recover_expired():
            self.events.recovered(job)
            log.warning(
                "recovered a job whose lease expired",
                extra={**job_fields(job), "from": "running", "to": job.state.value},
            )
            self._work_found()

    async def prune_loop(self) -> None:
        """The store's maintenance every few seconds (PostgreSQL vacuums the jobs table when
        dead rows pile up), pruning of finished jobs past their result_ttl or the retention and
        of dead nodes' rows every jobs.prune_interval (a minute by default)."""
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                if await self.store.maintain():
                    log.debug("store maintenance done")
                if time.monotonic() - last_prune >= self.settings.prune_interval:
                    last_prune = time.monotonic()
                    await self._prune()
            except Unavailable as exc:
                self.health.trouble("maintenance", exc)

    async def _prune(self) -> None:
        # jobs.retention 0: the jobs that set no result_ttl are kept for ever; those that set
        # one still go once it has passed (it overrides the retention either way, ADR 0033).
        retention = self.settings.retention
        pruned = await self.store.prune(timedelta(seconds=retention) if retention > 0 else None)
        if pruned:
            log.info("pruned finished jobs", extra={"count": pruned})
        gone = await self.fleet.prune()
        if gone:
            log.info("pruned the rows of dead nodes", extra={"count": gone})
