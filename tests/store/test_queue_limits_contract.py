"""The store contract for fleet-wide queue limits (docs/adr/0032), on memory, SQLite and
PostgreSQL alike: a limited claim takes at most the global concurrency's room and the rate's
room in its window, the runtime limits apply over the node's and are kept with the pause,
and a claim the limits held back says so and when the rate's window opens."""

from __future__ import annotations

import asyncio
import time

import pytest

from jobd.domain import NewJob
from jobd.queue_limits import FleetLimits, Rate
from jobd.store import NotificationKind, Outcome, OutcomeKind, Store
from jobd.store.queues import LimitChange

NONE = FleetLimits()


async def submit(store: Store, n: int, queue: str = "api") -> list[int]:
    specs = [NewJob("echo", {"n": i}, queue=queue) for i in range(n)]
    return [s.job.id for s in await store.submit_many(specs)]


async def claim(store: Store, n: int, limits: FleetLimits, node: str = "a", queue: str = "api"):  # type: ignore[no-untyped-def]
    return await store.claim_limited(node, queue, n, lease=30, types=None, limits=limits)


def away_from_a_minute_boundary() -> None:
    """Rate tests count in one window of a minute: start them well inside one."""
    into = time.time() % 60
    if into > 55:
        time.sleep(60.5 - into)


async def test_a_global_concurrency_bounds_the_running_jobs_of_every_node(store: Store) -> None:
    await submit(store, 5)
    first = await claim(store, 10, FleetLimits(global_concurrency=2))
    assert len(first.jobs) == 2
    assert (first.held_back, first.bound, first.opens_in) == (3, "global_concurrency", None)
    other = await claim(store, 10, FleetLimits(global_concurrency=2), node="b")
    assert other.jobs == [] and other.held_back == 3
    job = first.jobs[0]
    await store.finish("a", [Outcome(job.id, 1, OutcomeKind.COMPLETED, result=None)])
    again = await claim(store, 10, FleetLimits(global_concurrency=2), node="b")
    assert len(again.jobs) == 1


async def test_a_limited_claim_takes_only_its_queue(store: Store) -> None:
    await submit(store, 2, "other")
    result = await claim(store, 10, FleetLimits(global_concurrency=5))
    assert result.jobs == [] and result.held_back == 0


async def test_a_rate_counts_claims_in_its_window_and_tells_when_the_next_opens(
    store: Store,
) -> None:
    away_from_a_minute_boundary()
    await submit(store, 10)
    limits = FleetLimits(rate=Rate(3, 60.0))
    first = await claim(store, 2, limits)
    second = await claim(store, 5, limits, node="b")
    assert (len(first.jobs), len(second.jobs)) == (2, 1)
    assert second.bound == "rate" and second.held_back == 4
    assert second.opens_in is not None and 0 < second.opens_in <= 60
    third = await claim(store, 5, limits)
    assert third.jobs == [] and third.bound == "rate"


async def test_both_limits_take_the_smaller_room(store: Store) -> None:
    away_from_a_minute_boundary()
    await submit(store, 10)
    result = await claim(store, 10, FleetLimits(global_concurrency=4, rate=Rate(2, 60.0)))
    assert len(result.jobs) == 2 and result.bound == "rate"


async def test_the_runtime_limits_apply_over_the_nodes_and_reset_gives_them_back(
    store: Store,
) -> None:
    heard = []
    store.add_listener(heard.append)
    await submit(store, 6)
    record = await store.set_queue_limits(
        "api", LimitChange(global_concurrency=1), actor="uid:1000"
    )
    assert (record.global_concurrency, record.rate, record.limits_changed_by) == (
        1,
        None,
        "uid:1000",
    )
    assert record.limits_changed_at is not None and not record.paused
    assert any(n.kind is NotificationKind.QUEUES for n in heard)
    result = await claim(store, 10, FleetLimits(global_concurrency=3))
    assert len(result.jobs) == 1 and result.limits == FleetLimits(global_concurrency=1)
    reset = await store.set_queue_limits("api", LimitChange(reset=True), actor="uid:1000")
    assert reset.runtime_limits == NONE
    result = await claim(store, 10, FleetLimits(global_concurrency=3))
    assert len(result.jobs) == 2  # 3 running now


async def test_a_limit_change_keeps_what_it_does_not_name_and_the_pause(store: Store) -> None:
    await store.set_queue_paused("api", True, reason="down", actor="x")
    await store.set_queue_limits("api", LimitChange(rate=Rate(10, 1.0)))
    record = await store.set_queue_limits("api", LimitChange(global_concurrency=4))
    assert record.runtime_limits == FleetLimits(4, Rate(10, 1.0))
    assert record.paused and record.reason == "down"
    record = await store.set_queue_limits("api", LimitChange(rate=Rate(5, 60.0), reset=True))
    assert record.runtime_limits == FleetLimits(rate=Rate(5, 60.0))
    resumed = await store.set_queue_paused("api", False)
    assert resumed.paused is False
    (kept,) = await store.queue_records()
    assert kept.runtime_limits == FleetLimits(rate=Rate(5, 60.0))


async def test_a_limit_may_be_set_before_the_queue_has_jobs(store: Store) -> None:
    record = await store.set_queue_limits("later", LimitChange(global_concurrency=2))
    assert record.name == "later" and record.global_concurrency == 2
    assert [r.name for r in await store.queue_records()] == ["later"]


async def test_a_node_without_limits_of_its_own_obeys_the_runtime_ones(store: Store) -> None:
    await submit(store, 3)
    await store.set_queue_limits("api", LimitChange(global_concurrency=2))
    assert len((await claim(store, 10, NONE)).jobs) == 2


async def test_concurrent_claims_from_many_nodes_never_overshoot(store: Store) -> None:
    await submit(store, 40)
    limits = FleetLimits(global_concurrency=7)
    results = await asyncio.gather(
        *(claim(store, 5, limits, node=f"n{i}") for i in range(8)), return_exceptions=True
    )
    claims = [r for r in results if not isinstance(r, BaseException)]
    assert claims, results
    assert sum(len(r.jobs) for r in claims) == 7


@pytest.mark.parametrize("period", [1.0, 60.0])
async def test_concurrent_claims_share_one_window(store: Store, period: float) -> None:
    if period == 60.0:
        away_from_a_minute_boundary()
    await submit(store, 40)
    limits = FleetLimits(rate=Rate(6, period))
    results = await asyncio.gather(*(claim(store, 4, limits, node=f"n{i}") for i in range(6)))
    taken = sum(len(r.jobs) for r in results)
    assert taken <= 6 * (2 if period == 1.0 else 1)  # a 1 s run may span two windows
    assert taken >= 6 or period == 1.0
