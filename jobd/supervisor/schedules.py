"""This node's part in running the fleet's schedules: at each tick, ask the store to enqueue
what is due (jobd.store.schedules: the store decides, once per tick, whichever node asks).

Every node asks, none leads (docs/adr/0026-periodic-jobs.md).  A node asks at its start (the
catch-up after an outage) and then twice per tick by its own clock: just after the tick, and
again ASK_AGAIN later, so a node whose clock runs a little ahead of the database's still finds
the tick due (a late ask is on time up to jobd.schedules.catchup.ON_TIME).  Asking costs one
short transaction per schedule; the claim path never waits for it.

A schedule's row records the hash of the definition that last wrote it: an ask that finds
another hash there learns that a node defines the schedule differently (a deploy half done).
Each node goes on enqueueing by its own definition, still once per tick; the difference is
logged once per pair of definitions and shown in `health` while asks keep finding it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter

from jobd.clock import utcnow
from jobd.errors import Unavailable
from jobd.schedules import Schedule
from jobd.schedules.ticks import latest_tick, next_tick
from jobd.store import Store
from jobd.store.schedules import TickResult

log = logging.getLogger("jobd.schedules")

#: After a tick (by this node's clock): the first ask, and the second.
ASK_FIRST = timedelta(seconds=0.05)
ASK_AGAIN = timedelta(seconds=0.5)
#: How long `health` shows a difference of definitions after an ask last found it: an ask
#: that finds this node's own hash proves nothing (this node may have written it last), so a
#: difference fades instead of being cleared.
DIFFERENCE_SHOWN = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Difference:
    """Another node's definition of a schedule, as this node's asks found it."""

    other: str  # the other definition's hash
    seen: datetime  # when an ask last found it


class ScheduleMetrics:
    """The schedules' counters, by schedule name."""

    def __init__(self, registry: CollectorRegistry):
        def counter(name: str, text: str) -> Counter:
            return Counter(name, text, ["schedule"], registry=registry)

        self.enqueued = counter("jobd_schedule_ticks_enqueued", "Jobs created by schedules.")
        self.missed = counter(
            "jobd_schedule_ticks_missed",
            "Ticks passed over after an outage (catch-up policy or window).",
        )
        self.overlap = counter(
            "jobd_schedule_ticks_skipped_overlap",
            "Ticks not run because the previous run was pending or running (overlap: skip).",
        )

    def count(self, name: str, result: TickResult) -> None:
        if result.jobs:
            self.enqueued.labels(name).inc(len(result.jobs))
        if result.missed:
            self.missed.labels(name).inc(result.missed)
        if result.overlap_skipped:
            self.overlap.labels(name).inc(result.overlap_skipped)


class ScheduleRunner:
    def __init__(
        self,
        store: Store,
        schedules: Sequence[Schedule],
        default_max_attempts: int,
        metrics: ScheduleMetrics,
        *,
        trouble: Callable[[str, Unavailable], None],
        clock: Callable[[], datetime] = utcnow,
    ):
        self.store = store
        self.schedules = tuple(schedules)
        self.default_max_attempts = default_max_attempts
        self.metrics = metrics
        self._trouble = trouble  # the store did not answer (counted against its health)
        self._clock = clock
        #: Schedules whose definition differs on another node, by name.
        self.differing: dict[str, Difference] = {}
        self._logged: set[tuple[str, str]] = set()  # (schedule, other hash) logged already

    async def run(self) -> None:
        if not self.schedules:
            return
        asked = self._clock()
        for schedule in self.schedules:
            await self.ask(schedule)
        while True:
            wake, due = self._next_asks(asked)
            await asyncio.sleep(max((wake - self._clock()).total_seconds(), 0.0))
            asked = wake
            for schedule in due:
                await self.ask(schedule)

    async def ask(self, schedule: Schedule) -> None:
        try:
            result = await self.store.enqueue_ticks(schedule, self.default_max_attempts)
        except Unavailable as exc:
            self._trouble(f"schedule {schedule.name}", exc)
            return
        except Exception:  # a fault of this ask only: the node and its other schedules go on
            log.exception(
                "schedule ask failed; asked again at its next tick",
                extra={"schedule": schedule.name},
            )
            return
        self.metrics.count(schedule.name, result)
        self._report(schedule, result)

    def _next_asks(self, after: datetime) -> tuple[datetime, list[Schedule]]:
        """The next instant some schedule is to be asked, and which are."""
        asks = {schedule.name: next_ask(schedule, after) for schedule in self.schedules}
        wake = min(asks.values())
        return wake, [schedule for schedule in self.schedules if asks[schedule.name] == wake]

    def _report(self, schedule: Schedule, result: TickResult) -> None:
        name = schedule.name
        if result.missed:
            log.warning(
                "schedule ticks missed",
                extra={"schedule": name, "count": result.missed, "catch_up": schedule.catch_up},
            )
        if result.overlap_skipped:
            log.info(
                "schedule ticks skipped: its previous run is still pending or running",
                extra={"schedule": name, "count": result.overlap_skipped, "overlap": "skip"},
            )
        for job in result.jobs:
            log.info(
                "schedule enqueued a job",
                extra={"schedule": name, "job_id": job.id, "tick": job.run_at.isoformat()},
            )
        if result.other_definition is not None:
            self._differs(schedule, result.other_definition)

    def _differs(self, schedule: Schedule, other: str) -> None:
        self.differing[schedule.name] = Difference(other, self._clock())
        if (schedule.name, other) in self._logged:
            return
        self._logged.add((schedule.name, other))
        log.warning(
            "schedule defined differently on another node; each enqueues by its own",
            extra={
                "schedule": schedule.name,
                "definition": schedule.definition_hash,
                "other_definition": other,
                "spec": schedule.spec_text,
            },
        )

    def warnings(self) -> list[str]:
        """The schedules an ask found defined differently within DIFFERENCE_SHOWN, for
        `health`."""
        since = self._clock() - DIFFERENCE_SHOWN
        return [
            f"schedule {name}: defined differently on another node (definition {d.other}"
            f" there, {self._hash(name)} here, last seen {d.seen:%Y-%m-%dT%H:%M:%SZ});"
            " each node enqueues by its own definition until they agree"
            for name, d in sorted(self.differing.items())
            if d.seen >= since
        ]

    def _hash(self, name: str) -> str:
        return next(s.definition_hash for s in self.schedules if s.name == name)


def next_ask(schedule: Schedule, after: datetime) -> datetime:
    """The first ask of `schedule` strictly after `after`: ASK_FIRST and ASK_AGAIN after each
    of its ticks."""
    recent = latest_tick(schedule, after)
    candidates = [] if recent is None else [recent + ASK_FIRST, recent + ASK_AGAIN]
    following = next_tick(schedule, after - ASK_AGAIN)
    candidates += [following + ASK_FIRST, following + ASK_AGAIN]
    upcoming = next_tick(schedule, following)
    candidates += [upcoming + ASK_FIRST]
    return min(point for point in candidates if point > after)
