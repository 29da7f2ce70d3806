"""Claiming: when (new work may exist, or a poll interval has passed since a claim came back
short; not while the store is away), and the claim itself: one statement for the node's free
slots, or, with queue limits, one per limited queue and one for every other queue: within its
limit on this node (`queues.<name>.concurrency`), or within its fleet-wide limits
(`global_concurrency`, `rate`: `Store.claim_limited`, docs/adr/0032)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from jobd.domain import Job, State
from jobd.errors import Unavailable
from jobd.handlers import Registry
from jobd.queue_limits import FleetLimits
from jobd.store import Outcome, Start, Store
from jobd.store.queues import LimitedClaim
from jobd.supervisor.fleet_limits import FleetLimitsView
from jobd.supervisor.pacing import Pacing
from jobd.supervisor.paused import PausedQueues
from jobd.supervisor.settings import SupervisorSettings
from jobd.supervisor.store_health import StoreHealth


class Claims:
    def __init__(
        self,
        store: Store,
        node: str,
        settings: SupervisorSettings,
        registry: Registry,
        health: StoreHealth,
        pacing: Pacing,
    ):
        self.store = store
        self.node = node
        self.settings = settings
        self.registry = registry
        self.health = health
        self.pacing = pacing
        self.work_hint = asyncio.Event()  # new pending work may exist
        self._last_empty = -float("inf")  # none yet (monotonic time may start near 0)
        self._started = 0.0
        #: The queues' fleet-wide limits here (jobd.supervisor.fleet_limits).
        self.limits = FleetLimitsView(settings.fleet_limits, self._window_opened)
        #: The queues no node claims from (jobd.supervisor.paused).
        self.paused = PausedQueues(
            store, heartbeat=settings.heartbeat_seconds, also=self.limits.update
        )
        #: Called when a rate's window opens for a queue it held back (the loop's wake).
        self.wake: Callable[[], None] = lambda: None

    def _window_opened(self) -> None:
        self.work_hint.set()
        self.wake()

    def due(self, wanted: int) -> bool:
        """Whether to claim `wanted` jobs now; if so, the claim counts as begun."""
        now = time.monotonic()
        if wanted <= 0 or not self.health.may_claim(now):
            return False
        if not self.work_hint.is_set() and now - self._last_empty < self.settings.poll_interval:
            return False
        self.work_hint.clear()
        self._started = now
        return True

    async def take(self, wanted: int, held: Callable[[], Iterable[Job]]) -> list[Job] | None:
        """Up to `wanted` jobs, if a claim is due (None: it was not, or the store failed)."""
        if not self.due(wanted):
            return None
        if self.paused.due(time.monotonic()):  # never before knowing them, then every heartbeat
            try:
                await self.paused.refresh()
            except Unavailable as exc:
                if not self.paused.known:
                    self.health.write_failed("claim", exc)
                    return None
        # Only the types this node runs: in a mixed fleet a job of another type waits, pending,
        # for a node that runs it (ADR 0023).
        types = self.registry.types()
        try:
            jobs = await claim(
                self.store,
                self.node,
                wanted,
                lease=self.settings.lease_seconds,
                types=types,
                limits=self.settings.queue_limits,
                held=held,
                paused=self.paused.names | self.limits.closed(time.monotonic()),
                fleet=self.limits.limits,
                on_limited=self.limits.claimed,
            )
        except Unavailable as exc:
            self.health.write_failed("claim", exc)
            return None
        self._came_back()
        return jobs

    def may_ride(self) -> bool:
        """Whether a claim may ride on a write-back: one statement claims for the node (no
        queue limits, which take one claim per limited queue), and the paused queues need no
        reading first (they ride on it as its exclusion)."""
        if self.settings.queue_limits or self.limits.limits:
            return False
        return not self.paused.due(time.monotonic())

    async def with_write(
        self, outcomes: list[Outcome], starts: list[Start], wanted: int
    ) -> tuple[dict[int, State], list[Job] | None]:
        """Write `outcomes` and `starts` back and claim `wanted` jobs in the same call (the
        claim is due: see `due`): the state of each applied outcome, and the jobs claimed (None
        if the claim failed).  Raises as the write alone would."""
        try:
            exchanged = await self.store.finish_and_claim(
                self.node,
                outcomes,
                starts,
                limit=wanted,
                lease=self.settings.lease_seconds,
                types=self.registry.types(),
                exclude_queues=sorted(self.paused.names) or None,
            )
        except Unavailable as exc:
            self.health.write_failed("claim", exc)
            raise
        if exchanged.claim_error is not None:
            self.health.write_failed("claim", exchanged.claim_error)
            return exchanged.applied, None
        self._came_back()
        return exchanged.applied, exchanged.claimed

    def _came_back(self) -> None:
        self.health.wrote("claim")
        self.pacing.claim_took(time.monotonic() - self._started)

    def answered(self, wanted: int, got: int) -> bool:
        """Once the claimed jobs are handed out: True if the claim got all it asked for, so
        more is waiting (claim again on the next turn)."""
        self.pacing.backlog = got == wanted
        if self.pacing.backlog:
            self.work_hint.set()
        else:
            self._last_empty = self._started
        return self.pacing.backlog


async def claim(
    store: Store,
    node: str,
    wanted: int,
    *,
    lease: float,
    types: list[str] | None,
    limits: dict[str, int],
    held: Callable[[], Iterable[Job]],
    paused: frozenset[str] = frozenset(),
    fleet: Mapping[str, FleetLimits] | None = None,
    on_limited: Callable[[str, LimitedClaim], None] | None = None,
) -> list[Job]:
    """Up to `wanted` jobs leased to `node`, none of the `paused` queues; `held`: the jobs the
    node holds already, which count against their queue's limit on this node (asked for only
    when there are such limits); `fleet`: the queues with fleet-wide limits, each claimed by
    `Store.claim_limited` (whose answer goes to `on_limited`)."""
    fleet = fleet or {}
    if not limits and not fleet:
        exclude = sorted(paused) or None
        return await store.claim(node, wanted, lease=lease, types=types, exclude_queues=exclude)
    jobs: list[Job] = []
    running = Counter(job.queue for job in held()) if limits else Counter[str]()
    for queue in sorted(set(limits) | set(fleet)):
        if queue in paused:
            continue
        room = wanted - len(jobs)
        if queue in limits:
            room = min(room, limits[queue] - running[queue])
        if room <= 0:
            continue
        if queue in fleet:
            result = await store.claim_limited(
                node, queue, room, lease=lease, types=types, limits=fleet[queue]
            )
            if on_limited is not None:
                on_limited(queue, result)
            jobs += result.jobs
        else:
            jobs += await store.claim(node, room, lease=lease, queues=[queue], types=types)
    room = wanted - len(jobs)
    if room > 0:
        exclude = sorted(set(limits) | set(fleet) | paused)
        jobs += await store.claim(node, room, lease=lease, types=types, exclude_queues=exclude)
    return jobs
