"""When a schedule ticks: every instant is a timezone-aware UTC datetime.

`every: N` ticks at the multiples of N seconds since the Unix epoch, so every node computes the
same ticks whatever its start time.  A cron expression is evaluated by `cronsim` in the
schedule's time zone; across daylight saving it behaves as cron does: on the day a local hour
repeats, a schedule naming that hour fires once (its first occurrence; a schedule firing every
hour or more often fires in both); on the day an hour is skipped, a tick that falls in the gap
fires at the first instant after it (02:30 Europe/Berlin becomes 03:00).

Pure: the times are passed in.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from cronsim import CronSim

from jobd.schedules.definition import Schedule

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TINY = timedelta(microseconds=1)


def next_tick(schedule: Schedule, after: datetime) -> datetime:
    """The first tick strictly after `after`."""
    if schedule.every is not None:
        return _at(_index_at_or_before(schedule.every, after) + 1, schedule.every)
    return next(_cron_from(schedule, after, reverse=False))


def latest_tick(schedule: Schedule, at: datetime) -> datetime | None:
    """The last tick at or before `at` (None: a cron expression that never matched before)."""
    if schedule.every is not None:
        return _at(_index_at_or_before(schedule.every, at), schedule.every)
    return next(_cron_from(schedule, at + _TINY, reverse=True), None)


def newest_ticks(schedule: Schedule, after: datetime, until: datetime, most: int) -> list[datetime]:
    """The newest `most` ticks in (after, until], oldest first."""
    if schedule.every is not None:
        last = _index_at_or_before(schedule.every, until)
        first = max(_index_at_or_before(schedule.every, after) + 1, last - most + 1)
        return [_at(index, schedule.every) for index in range(first, last + 1)]
    backwards = itertools.takewhile(
        lambda tick: tick > after, _cron_from(schedule, until + _TINY, reverse=True)
    )
    return list(reversed(list(itertools.islice(backwards, most))))


def count_ticks(schedule: Schedule, after: datetime, until: datetime, cap: int) -> int:
    """How many ticks fall in (after, until], counting no further than `cap`."""
    if schedule.every is not None:
        span = _index_at_or_before(schedule.every, until) - _index_at_or_before(
            schedule.every, after
        )
        return min(max(span, 0), cap)
    forwards = itertools.takewhile(
        lambda tick: tick <= until, _cron_from(schedule, after, reverse=False)
    )
    return sum(1 for _ in itertools.islice(forwards, cap))


def _index_at_or_before(every: int, at: datetime) -> int:
    return math.floor((at - _EPOCH) / timedelta(seconds=every))


def _at(index: int, every: int) -> datetime:
    return _EPOCH + timedelta(seconds=index * every)


def _cron_from(schedule: Schedule, start: datetime, *, reverse: bool) -> Iterator[datetime]:
    assert schedule.cron is not None
    local = start.astimezone(schedule.zone)
    for tick in CronSim(schedule.cron, local, reverse=reverse):
        yield tick.astimezone(UTC)
