"""The tick computation of schedules, with the time passed in: cron and intervals, time zones,
both daylight-saving transitions, catch-up policies and windows, and the property that no tick
is enqueued twice whatever the nodes' up and down periods."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobd.schedules import Schedule, ScheduleError, parse_schedule, plan_ticks
from jobd.schedules.catchup import CATCH_UP_ALL_MAX, ON_TIME
from jobd.schedules.ticks import count_ticks, latest_tick, newest_ticks, next_tick

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def schedule(**fields: Any) -> Schedule:
    return parse_schedule("s", {"type": "echo", **fields})


def berlin(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold).astimezone(UTC)  # type: ignore[misc]


def ticks_from(s: Schedule, start: datetime, count: int) -> list[datetime]:
    out = []
    for _ in range(count):
        start = next_tick(s, start)
        out.append(start)
    return out


# --- intervals ----------------------------------------------------------------------------


def test_every_is_anchored_to_the_unix_epoch() -> None:
    s = schedule(every="7s")
    tick = next_tick(s, T0 + timedelta(seconds=0.5))
    assert tick.timestamp() % 7 == 0 and tick > T0
    assert latest_tick(s, tick) == tick
    assert next_tick(s, tick) == tick + timedelta(seconds=7)


def test_every_ticks_are_the_same_on_every_node_whatever_its_start() -> None:
    s = schedule(every="1m")
    assert next_tick(s, T0 + timedelta(seconds=1)) == next_tick(s, T0 + timedelta(seconds=59))


def test_interval_listing_and_counting() -> None:
    s = schedule(every="10s")
    assert newest_ticks(s, T0, T0 + timedelta(seconds=35), 2) == [
        T0 + timedelta(seconds=20),
        T0 + timedelta(seconds=30),
    ]
    assert count_ticks(s, T0, T0 + timedelta(seconds=35), 100) == 3
    assert count_ticks(s, T0, T0 + timedelta(days=365), 1000) == 1000


# --- cron and time zones --------------------------------------------------------------------


def test_cron_in_utc_by_default() -> None:
    s = schedule(cron="0 2 * * *")
    assert next_tick(s, T0) == T0 + timedelta(hours=2)
    assert latest_tick(s, T0 + timedelta(hours=2)) == T0 + timedelta(hours=2)


def test_cron_in_a_time_zone() -> None:
    s = schedule(cron="0 2 * * *", timezone="Europe/Berlin")
    assert next_tick(s, T0) == datetime(2026, 1, 1, 1, tzinfo=UTC)  # 02:00 CET


def test_a_repeated_local_hour_fires_once() -> None:
    """25 October 2026: Berlin's clocks go from 03:00 CEST back to 02:00 CET."""
    s = schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    ticks = ticks_from(s, berlin(2026, 10, 24, 12), 3)
    assert ticks == [
        berlin(2026, 10, 25, 2, 30),  # the first 02:30 (CEST) only
        berlin(2026, 10, 26, 2, 30),
        berlin(2026, 10, 27, 2, 30),
    ]


def test_an_hourly_schedule_fires_in_both_copies_of_a_repeated_hour() -> None:
    s = schedule(cron="0 * * * *", timezone="Europe/Berlin")
    ticks = ticks_from(s, berlin(2026, 10, 25, 1, 30), 3)
    assert ticks == [
        berlin(2026, 10, 25, 2, 0),
        berlin(2026, 10, 25, 2, 0, fold=1),
        berlin(2026, 10, 25, 3, 0),
    ]
    assert [b - a for a, b in itertools.pairwise(ticks)] == [timedelta(hours=1)] * 2


def test_a_tick_in_a_skipped_local_hour_fires_right_after_the_gap() -> None:
    """29 March 2026: Berlin's clocks go from 02:00 CET to 03:00 CEST; 02:30 does not exist."""
    s = schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    ticks = ticks_from(s, berlin(2026, 3, 28, 12), 3)
    assert ticks == [
        berlin(2026, 3, 29, 3, 0),  # fires at 03:00 CEST: it does not vanish
        berlin(2026, 3, 30, 2, 30),
        berlin(2026, 3, 31, 2, 30),
    ]


def test_ticks_across_dst_are_strictly_increasing() -> None:
    s = schedule(cron="*/20 1-3 * * *", timezone="Europe/Berlin")
    for start in (berlin(2026, 3, 28, 0), berlin(2026, 10, 24, 0)):
        ticks = ticks_from(s, start, 40)
        assert ticks == sorted(set(ticks))


# --- definitions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"cron": "61 * * * *"}, "cron", "not a valid cron expression"),
        ({"cron": "* * * *"}, "cron", "5 fields"),
        ({"cron": "* * * * *", "every": "1s"}, "cron", "exactly one"),
        ({}, "cron", "exactly one"),
        ({"every": "0.5s"}, "every", "whole number"),
        ({"every": "soon"}, "every", "duration"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"every": "1s", "timezone": "UTC"}, "timezone", "cron only"),
        ({"every": "1s", "catch_up": "some"}, "catch_up", "skip | once | all"),
        ({"every": "1s", "overlap": "never"}, "overlap", "allow | skip"),
        ({"every": "1s", "catch_up_window": "0s"}, "catch_up_window", "positive"),
        ({"every": "1s", "priority": "high"}, "priority", "integer"),
        ({"every": "1s", "max_attempts": 0}, "max_attempts", "between 1 and 1000"),
        ({"every": "1s", "payload": [1]}, "payload", "JSON object"),
        ({"every": "1s", "colour": "red"}, "colour", "unknown field"),
    ],
)
def test_a_bad_definition_names_the_schedule_and_the_field(
    fields: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        schedule(**fields)
    assert (caught.value.name, caught.value.field) == ("s", field)
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"schedule s.{field}: ")


def test_a_definition_without_a_type_names_the_type() -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule("nightly", {"cron": "0 2 * * *"})
    assert caught.value.field == "type"


def test_the_definition_hash_follows_the_definition() -> None:
    a = schedule(every="1m", payload={"x": 1})
    assert a.definition_hash == schedule(every="60s", payload={"x": 1}).definition_hash
    assert a.definition_hash != schedule(every="1m", payload={"x": 2}).definition_hash
    assert a.spec_text == "every 60s"


# --- catch-up -------------------------------------------------------------------------------


def test_a_new_schedule_starts_at_its_next_tick() -> None:
    s = schedule(every="10s")
    plan = plan_ticks(s, None, T0 + timedelta(seconds=15))
    assert plan.enqueue == () and plan.settled == T0 + timedelta(seconds=10)
    assert plan.missed == 0


def test_an_on_time_tick_is_enqueued_and_settled() -> None:
    s = schedule(every="10s", catch_up="skip")
    now = T0 + timedelta(seconds=10.2)
    plan = plan_ticks(s, T0, now)
    assert plan.enqueue == (T0 + timedelta(seconds=10),)
    assert (plan.missed, plan.settled) == (0, T0 + timedelta(seconds=10))
    assert plan_ticks(s, plan.settled, now) == plan_ticks(s, plan.settled, now)
    assert plan_ticks(s, plan.settled, now).enqueue == ()


def test_a_node_a_little_late_loses_no_tick() -> None:
    s = schedule(every="1s", catch_up="skip")
    plan = plan_ticks(s, T0, T0 + timedelta(seconds=ON_TIME))
    assert plan.enqueue == tuple(T0 + timedelta(seconds=n) for n in range(1, int(ON_TIME) + 1))


def outage(policy: str, window: str = "1d") -> Any:
    """All nodes down from T0 to T0 + 10 minutes, for a one-minute schedule."""
    s = schedule(every="1m", catch_up=policy, catch_up_window=window)
    return plan_ticks(s, T0, T0 + timedelta(minutes=10, seconds=30))


def test_catch_up_skip_resumes_at_the_next_tick() -> None:
    plan = outage("skip")
    assert plan.enqueue == ()
    assert (plan.missed, plan.settled) == (10, T0 + timedelta(minutes=10))


def test_catch_up_once_runs_once_for_the_missed_period() -> None:
    plan = outage("once")
    assert plan.enqueue == (T0 + timedelta(minutes=10),)
    assert plan.missed == 9


def test_catch_up_all_runs_every_missed_tick() -> None:
    plan = outage("all")
    assert plan.enqueue == tuple(T0 + timedelta(minutes=n) for n in range(1, 11))
    assert plan.missed == 0


def test_missed_ticks_outside_the_window_are_skipped() -> None:
    plan = outage("all", window="3m")
    assert plan.enqueue == tuple(T0 + timedelta(minutes=n) for n in (8, 9, 10))
    assert plan.missed == 7
    assert outage("once", window="10s").enqueue == ()


def test_catch_up_all_is_capped_after_a_long_outage() -> None:
    s = schedule(every="1s", catch_up="all", catch_up_window="1d")
    now = T0 + timedelta(hours=10)
    plan = plan_ticks(s, T0, now)
    assert len(plan.enqueue) == CATCH_UP_ALL_MAX + int(ON_TIME) + 1
    assert plan.enqueue[-1] == now and plan.settled == now
    assert plan.missed == 36000 - len(plan.enqueue)


def test_a_long_outage_of_a_cron_schedule_is_one_run_by_default() -> None:
    s = schedule(cron="0 * * * *", timezone="Europe/Berlin")
    plan = plan_ticks(s, T0, T0 + timedelta(hours=24, minutes=30))
    assert plan.enqueue == (T0 + timedelta(hours=24),)
    assert plan.missed == 23


# --- the property: no tick twice -------------------------------------------------------------

SCHEDULES = st.one_of(
    st.integers(min_value=1, max_value=7200).map(lambda n: {"every": n}),
    st.sampled_from(
        [
            {"cron": "*/5 * * * *"},
            {"cron": "30 2 * * *", "timezone": "Europe/Berlin"},
            {"cron": "0 * * * *", "timezone": "America/New_York"},
            {"cron": "15 1-3 * * 0", "timezone": "Europe/London"},
        ]
    ),
).flatmap(
    lambda when: st.fixed_dictionaries(
        {
            "catch_up": st.sampled_from(["skip", "once", "all"]),
            "catch_up_window": st.sampled_from(["10s", "5m", "1h", "1d", "30d"]),
        }
    ).map(lambda rest: {**when, **rest})
)
# A node's life: (seconds it stays down, seconds it stays up, seconds between its looks).
LIVES = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3 * 86400),
        st.integers(min_value=0, max_value=7200),
        st.integers(min_value=1, max_value=900),
    ),
    min_size=1,
    max_size=4,
)
NODES = st.lists(LIVES, min_size=1, max_size=3)
# DST weekends of 2026 in Europe and the US are within reach of these starts.
STARTS = st.sampled_from(
    [
        T0,
        datetime(2026, 3, 7, tzinfo=UTC),
        datetime(2026, 3, 28, tzinfo=UTC),
        datetime(2026, 10, 24, tzinfo=UTC),
    ]
)


def looks(start: datetime, lives: list[tuple[int, int, int]]) -> list[datetime]:
    """The instants at which one node asks the store, over its up periods."""
    out, at = [], start
    for down, up, every in lives:
        at += timedelta(seconds=down)
        out.extend(at + timedelta(seconds=s) for s in range(0, up + 1, every))
        at += timedelta(seconds=up)
    return out


@settings(max_examples=150, deadline=None)
@given(fields=SCHEDULES, nodes=NODES, start=STARTS)
def test_no_tick_is_enqueued_twice_for_any_up_and_down_periods(
    fields: dict[str, Any], nodes: list[list[tuple[int, int, int]]], start: datetime
) -> None:
    s = schedule(**fields)
    # The store serialises the nodes' looks on the schedule's row: replay them in time order.
    instants = sorted(at for lives in nodes for at in looks(start, lives))
    last: datetime | None = None
    enqueued: list[datetime] = []
    for now in instants:
        plan = plan_ticks(s, last, now)
        assert all(tick <= now for tick in plan.enqueue)
        assert last is None or all(tick > last for tick in plan.enqueue)
        assert all(latest_tick(s, tick) == tick for tick in plan.enqueue)
        enqueued.extend(plan.enqueue)
        if plan.settled is not None:
            assert last is None or plan.settled > last
            last = plan.settled
    assert enqueued == sorted(set(enqueued))
