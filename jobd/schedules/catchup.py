"""Which ticks to enqueue now: the one decision every node makes, inside the store's transaction
and by the database's clock, from the schedule's last recorded tick.

A tick is *on time* while it is at most ON_TIME seconds old: it is enqueued whatever the
policy, so a busy node that wakes a little late loses nothing.  Older ticks were *missed* (no
node was up, or none could reach the database): those older than the schedule's
`catch_up_window` are skipped, and the others are dealt with by its `catch_up` policy -- `skip`
enqueues none, `once` the latest, `all` each of the latest CATCH_UP_ALL_MAX.  Every tick not
enqueued is counted as missed.  The plan always settles the newest tick, so the next plan
starts after it: a tick is planned once, however many nodes ask and whenever they were down.

Pure: the times are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from jobd.schedules.definition import CatchUp, Schedule
from jobd.schedules.ticks import count_ticks, latest_tick, newest_ticks

#: Seconds a tick may be late and still count as on time.
ON_TIME = 5.0
#: The most missed ticks `catch_up: all` enqueues at once (the newest of them).
CATCH_UP_ALL_MAX = 100
#: How far the missed ticks are counted (a long outage of a one-second schedule).
COUNT_CAP = 1_000_000
#: How many of the newest ticks are looked at: the on-time ones and CATCH_UP_ALL_MAX more.
_LOOK_BACK = CATCH_UP_ALL_MAX + int(ON_TIME) + 1


@dataclass(frozen=True, slots=True)
class TickPlan:
    enqueue: tuple[datetime, ...]  # the ticks to submit a job for, oldest first
    missed: int  # ticks passed over without a job
    settled: datetime | None  # the new last tick; None: nothing to record


def plan_ticks(schedule: Schedule, last_tick: datetime | None, now: datetime) -> TickPlan:
    """What to do at `now` for a schedule whose last recorded tick is `last_tick` (None: the
    schedule was never seen; it starts at its next tick, catching nothing up)."""
    if last_tick is None:
        return TickPlan((), 0, latest_tick(schedule, now) or now)
    recent = newest_ticks(schedule, last_tick, now, _LOOK_BACK)
    if not recent:
        return TickPlan((), 0, None)
    on_time = tuple(tick for tick in recent if now - tick <= timedelta(seconds=ON_TIME))
    window_start = now - timedelta(seconds=schedule.catch_up_window)
    late = [tick for tick in recent[: len(recent) - len(on_time)] if tick >= window_start]
    enqueue = (*_caught_up(schedule.catch_up, late), *on_time)
    total = count_ticks(schedule, last_tick, now, COUNT_CAP)
    return TickPlan(enqueue, max(total - len(enqueue), 0), recent[-1])


def _caught_up(policy: CatchUp, late: list[datetime]) -> list[datetime]:
    if policy is CatchUp.SKIP or not late:
        return []
    if policy is CatchUp.ONCE:
        return late[-1:]
    return late[-CATCH_UP_ALL_MAX:]
