"""When a node asks the store for a schedule's due ticks: twice after each tick, by its clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobd.schedules import parse_schedule
from jobd.supervisor.schedules import ASK_AGAIN, ASK_FIRST, next_ask

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_every_ask_follows_a_tick_twice_in_order() -> None:
    schedule = parse_schedule("s", {"every": "10s", "type": "echo"})
    asks, at = [], T0 - timedelta(seconds=1)
    for _ in range(4):
        at = next_ask(schedule, at)
        asks.append(at)
    assert asks == [
        T0 + ASK_FIRST,
        T0 + ASK_AGAIN,
        T0 + timedelta(seconds=10) + ASK_FIRST,
        T0 + timedelta(seconds=10) + ASK_AGAIN,
    ]


def test_a_cron_schedule_is_asked_after_its_ticks() -> None:
    schedule = parse_schedule("c", {"cron": "0 2 * * *", "type": "echo"})
    at = next_ask(schedule, T0)
    assert at == datetime(2026, 3, 2, 2, 0, tzinfo=UTC) + ASK_FIRST
    assert next_ask(schedule, at) == at - ASK_FIRST + ASK_AGAIN
