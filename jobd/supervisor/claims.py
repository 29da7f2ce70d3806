"""Claiming: when (new work may exist, or a poll interval has passed since a claim came back
short; not while the store is away), and the claim itself: one statement for the node's free
slots, or, with queue concurrency limits (`queues.<name>.concurrency`), one per limited queue
within its limit on this node and one for every other queue."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable

from jobd.domain import Job, State
from jobd.errors import Unavailable
from jobd.handlers import Registry
from jobd.store import Outcome, Start, Store
from jobd.supervisor.pacing import Pacing
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
            )
        except Unavailable as exc:
            self.health.write_failed("claim", exc)
            return None
        self._came_back()
        return jobs

    def may_ride(self) -> bool:
        """Whether a claim may ride on a write-back: one statement claims for the node (no
        queue concurrency limits, which take one per limited queue)."""
        return not self.settings.queue_limits

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
) -> list[Job]:
    """Up to `wanted` jobs leased to `node`; `held`: the jobs the node holds already, which
    count against their queue's limit (asked for only when there are limits)."""
    if not limits:
        return await store.claim(node, wanted, lease=lease, types=types)
    jobs: list[Job] = []
    running = Counter(job.queue for job in held())
    for queue, limit in limits.items():
        room = min(limit - running[queue], wanted - len(jobs))
        if room > 0:
            jobs += await store.claim(node, room, lease=lease, queues=[queue], types=types)
    room = wanted - len(jobs)
    if room > 0:
        jobs += await store.claim(node, room, lease=lease, types=types, exclude_queues=list(limits))
    return jobs
