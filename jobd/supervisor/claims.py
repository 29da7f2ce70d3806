"""Claiming: when (new work may exist, or a poll interval has passed since a claim came back
short; not while the store is away), and the claim itself: one statement for the node's free
slots, or, with queue concurrency limits (`queues.<name>.concurrency`), one per limited queue
within its limit on this node and one for every other queue."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable

from jobd.domain import Job
from jobd.errors import Unavailable
from jobd.handlers import Registry
from jobd.store import Store
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
        #: The queues no node claims from (jobd.supervisor.paused).
        self.paused = PausedQueues(store, heartbeat=settings.heartbeat_seconds)
        self._last_empty = -float("inf")  # none yet (monotonic time may start near 0)
        self._started = 0.0

    async def take(self, wanted: int, held: Callable[[], Iterable[Job]]) -> list[Job] | None:
        """Up to `wanted` jobs, if a claim is due (None: it was not, or the store failed)."""
        now = time.monotonic()
        if wanted <= 0 or not self.health.may_claim(now):
            return None
        if not self.work_hint.is_set() and now - self._last_empty < self.settings.poll_interval:
            return None
        self.work_hint.clear()
        if self.paused.due(now):  # never before knowing them, then at every heartbeat
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
                paused=self.paused.names,
            )
        except Unavailable as exc:
            self.health.write_failed("claim", exc)
            return None
        self.health.wrote("claim")
        self.pacing.claim_took(time.monotonic() - now)
        self._started = now
        return jobs

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
) -> list[Job]:
    """Up to `wanted` jobs leased to `node`, none of the `paused` queues; `held`: the jobs the
    node holds already, which count against their queue's limit (asked for only when there
    are limits)."""
    if not limits:
        exclude = sorted(paused) or None
        return await store.claim(node, wanted, lease=lease, types=types, exclude_queues=exclude)
    jobs: list[Job] = []
    running = Counter(job.queue for job in held())
    for queue, limit in limits.items():
        if queue in paused:
            continue
        room = min(limit - running[queue], wanted - len(jobs))
        if room > 0:
            jobs += await store.claim(node, room, lease=lease, queues=[queue], types=types)
    room = wanted - len(jobs)
    if room > 0:
        exclude = [*limits, *sorted(paused)]
        jobs += await store.claim(node, room, lease=lease, types=types, exclude_queues=exclude)
    return jobs
