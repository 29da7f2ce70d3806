"""Claiming: when (new work may exist, or a poll interval has passed since a claim came back
short; not while the store is away), and the claim itself: one statement for the node's free
slots, or, with queue limits, one per limited queue and one for every other queue: within its
limit on this node (`queues.<name>.concurrency`), or within its fleet-wide limits
(`global_concurrency`, `rate`: `Store.claim_limited`, docs/adr/0032).  A limited queue's own
claim runs only while it may give something (jobd.supervisor.limited_turns); while none may,
the other queues' claim leaves it out.  A claim goes on its own, beside the write-back in
flight, never with it (docs/adr/0039)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from jobd.domain import Job
from jobd.errors import Unavailable
from jobd.handlers import Registry
from jobd.queue_limits import FleetLimits
from jobd.store import Notification, NotificationKind, Store
from jobd.store.queues import LimitedClaim, QueueRecord
from jobd.supervisor.fleet_limits import FleetLimitsView
from jobd.supervisor.limited_turns import LimitedTurns
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
            store, heartbeat=settings.heartbeat_seconds, also=self._queues_read
        )
        #: The limited queues left out of the claims while they have nothing to give.
        self.turns = LimitedTurns(settings.poll_interval, self.work_hint.set)
        #: The jobs the node holds, as the last claim was given them (the dispatch's view).
        self._held: Callable[[], Iterable[Job]] = tuple
        #: Called when a rate's window opens for a queue it held back (the loop's wake).
        self.wake: Callable[[], None] = lambda: None
        store.add_listener(self._heard)

    def _queues_read(self, records: list[QueueRecord]) -> None:
        self.limits.update(records)
        self.turns.read_again()

    def _heard(self, n: Notification) -> None:
        if n.kind is NotificationKind.SUBMITTED:
            self.turns.named(n.queue)

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
        self._held = held
        try:
            jobs = await claim(
                self.store,
                self.node,
                wanted,
                lease=self.settings.lease_seconds,
                types=types,
                limits=self.settings.queue_limits,
                held=held,
                left_out=self._left_out(time.monotonic()),
                fleet=self.limits.limits,
                on_limited=self.limits.claimed,
                turns=self.turns,
            )
        except Unavailable as exc:
            self.health.write_failed("claim", exc)
            return None
        self._came_back()
        return jobs

    def written(self) -> None:
        """A write-back came back: a full limited queue whose job's end it wrote opens (the
        work hint is set for it, and the loop woken)."""
        if not self.work_hint.is_set():
            self.turns.left_out(time.monotonic(), self._held)
            if self.work_hint.is_set():
                self.wake()

    def _left_out(self, now: float) -> frozenset[str]:
        """The queues no claim takes from now: paused, their rate's window closed, or limited
        with nothing to give (jobd.supervisor.limited_turns)."""
        return self.paused.names | self.limits.closed(now) | self.turns.left_out(now, self._held)

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
    left_out: frozenset[str] = frozenset(),
    fleet: Mapping[str, FleetLimits] | None = None,
    on_limited: Callable[[str, LimitedClaim], None] | None = None,
    turns: LimitedTurns | None = None,
) -> list[Job]:
    """Up to `wanted` jobs leased to `node`, none of the `left_out` queues (paused, or limited
    with nothing to give); `held`: the jobs the node holds already, which count against their
    queue's limit on this node (asked for only when there are limits); `fleet`: the queues with
    fleet-wide limits, each claimed by `Store.claim_limited` (whose answer goes to
    `on_limited`); `turns` is told what each limited queue's claim found."""
    fleet = fleet or {}
    if not limits and not fleet:
        exclude = sorted(left_out) or None
        return await store.claim(node, wanted, lease=lease, types=types, exclude_queues=exclude)
    jobs: list[Job] = []
    running = Counter(job.queue for job in held())
    for queue in sorted(set(limits) | set(fleet)):
        room = wanted - len(jobs)
        if queue in left_out or room <= 0:
            continue
        if queue in limits:
            if limits[queue] <= running[queue]:
                if turns is not None:
                    turns.full(queue, running[queue])
                continue
            room = min(room, limits[queue] - running[queue])
        if queue in fleet:
            result = await store.claim_limited(
                node, queue, room, lease=lease, types=types, limits=fleet[queue]
            )
            if on_limited is not None:
                on_limited(queue, result)
            got = result.jobs
            if turns is not None:
                turns.answered_limited(queue, room, result, running[queue] + len(got))
        else:
            got = await store.claim(node, room, lease=lease, queues=[queue], types=types)
            if turns is not None:
                turns.answered(queue, room, len(got))
        jobs += got
    room = wanted - len(jobs)
    if room > 0:
        exclude = sorted(set(limits) | set(fleet) | left_out)
        jobs += await store.claim(node, room, lease=lease, types=types, exclude_queues=exclude)
    return jobs
