"""The fleet-wide limits of the queues as this node applies them (docs/adr/0032): its file's
`global_concurrency` and `rate` with the runtime values an operator set over them (read with
the paused queues: at the first claim, every heartbeat, and at once on the QUEUES
notification).  A queue with such a limit is claimed by `Store.claim_limited`, apart; every
other queue keeps the one-statement claim, the limited ones excluded from it.

A claim the rate held back tells when the window opens: the queue is left out of the claims
until then, and the node looks again at that moment (`wake`), so a rate-limited backlog
costs one claim per window and node, not a poll.

Gauges `jobd_queue_global_concurrency` and `jobd_queue_rate_limit` (starts per second) show
the limits in force here; `jobd_queue_limit_held_back_total` counts claimable jobs a limited
claim left for lack of room, by the limit that bound it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from jobd.queue_limits import FleetLimits
from jobd.store.queues import LimitedClaim, QueueRecord

log = logging.getLogger("jobd.supervisor")

#: Seconds past a window's opening to claim again: the window is reckoned on the database's
#: clock from the claim's answer, which arrives a little after it was decided.
WINDOW_MARGIN = 0.005


class FleetLimitsView:
    def __init__(self, file: dict[str, FleetLimits], wake: Callable[[], None]):
        self.file = dict(file)
        self.runtime: dict[str, FleetLimits] = {}
        self.wake = wake
        self.limits = {name: limits for name, limits in self.file.items() if limits}
        self._closed: dict[str, float] = {}  # queue -> monotonic time its window opens
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.global_gauge: Gauge | None = None
        self.rate_gauge: Gauge | None = None
        self.held_back: Counter | None = None

    def export(self, registry: CollectorRegistry) -> None:
        self.global_gauge = Gauge(
            "jobd_queue_global_concurrency",
            "The most jobs of the queue running at once across the fleet, as this node applies it.",
            ["queue"],
            registry=registry,
        )
        self.rate_gauge = Gauge(
            "jobd_queue_rate_limit",
            "The most starts of the queue per second across the fleet, as this node applies it.",
            ["queue"],
            registry=registry,
        )
        self.held_back = Counter(
            "jobd_queue_limit_held_back",
            "Claimable jobs a claim of this node left pending for lack of room under a limit.",
            ["queue", "limit"],
            registry=registry,
        )
        self._show()

    def update(self, records: Iterable[QueueRecord]) -> None:
        """The runtime limits as the store has them now."""
        runtime = {r.name: r.runtime_limits for r in records if r.runtime_limits}
        if runtime == self.runtime:
            return
        self.runtime = runtime
        names = set(self.file) | set(runtime)
        limits = {
            n: self.file.get(n, FleetLimits()).over(runtime.get(n, FleetLimits())) for n in names
        }
        self.limits = {n: lim for n, lim in limits.items() if lim}
        log.info("fleet-wide queue limits: %s", describe(self.limits) or "none")
        self._show()

    def closed(self, now: float) -> frozenset[str]:
        """The queues whose rate window is known to be spent until later."""
        return frozenset(q for q, opens in self._closed.items() if opens > now)

    def claimed(self, queue: str, result: LimitedClaim) -> None:
        """What a limited claim of `queue` said: count what it held back, and if the rate
        bound it, leave the queue out until its window opens and look again then."""
        if result.held_back and self.held_back is not None and result.bound is not None:
            self.held_back.labels(queue, result.bound).inc(result.held_back)
        if result.opens_in is None or not result.held_back:
            return
        opens = time.monotonic() + result.opens_in + WINDOW_MARGIN
        self._closed[queue] = opens
        if queue in self._timers:
            self._timers.pop(queue).cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the next poll claims it
            return
        self._timers[queue] = loop.call_at(
            loop.time() + result.opens_in + WINDOW_MARGIN, self._opened, queue
        )

    def _opened(self, queue: str) -> None:
        self._timers.pop(queue, None)
        self._closed.pop(queue, None)
        self.wake()

    def _show(self) -> None:
        if self.global_gauge is None or self.rate_gauge is None:
            return
        self.global_gauge.clear()
        self.rate_gauge.clear()
        for name, limits in self.limits.items():
            if limits.global_concurrency is not None:
                self.global_gauge.labels(name).set(limits.global_concurrency)
            if limits.rate is not None:
                self.rate_gauge.labels(name).set(limits.rate.count / limits.rate.period)


def describe(limits: dict[str, FleetLimits]) -> str:
    parts = []
    for name in sorted(limits):
        lim = limits[name]
        given = [
            *([f"global_concurrency {lim.global_concurrency}"] if lim.global_concurrency else []),
            *([f"rate {lim.rate}"] if lim.rate else []),
        ]
        parts.append(f"{name} ({', '.join(given)})")
    return "; ".join(parts)
