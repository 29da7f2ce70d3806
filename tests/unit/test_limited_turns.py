"""A limited queue's own claim runs only while it may give something, and the node's claim is
one statement leaving it out while none may (jobd.supervisor.limited_turns, docs/adr/0032):
counted on the memory store, whose claims are wrapped to record each call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from jobd.domain import Job, NewJob
from jobd.handlers import Registry
from jobd.handlers.registration import HandlerSpec
from jobd.queue_limits import FleetLimits, Rate
from jobd.store import Outcome, OutcomeKind
from jobd.store.memory import MemoryStore
from jobd.store.queues import LimitedClaim
from jobd.supervisor.claims import Claims
from jobd.supervisor.pacing import Pacing
from jobd.supervisor.settings import SupervisorSettings
from jobd.supervisor.store_health import StoreHealth


class CountingStore(MemoryStore):
    """The memory store, with each claim statement it is asked for recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.limited: list[str] = []  # the queue of each claim_limited
        self.own: list[str] = []  # the queue of each claim of one queue
        self.rest: list[list[str] | None] = []  # exclude_queues of each other claim

    async def claim_limited(self, node: str, queue: str, limit: int, **kw: Any) -> LimitedClaim:
        self.limited.append(queue)
        return await super().claim_limited(node, queue, limit, **kw)

    async def claim(self, node: str, limit: int, **kw: Any) -> list[Job]:
        if kw.get("queues"):
            self.own.extend(kw["queues"])
        else:
            self.rest.append(kw.get("exclude_queues"))
        return await super().claim(node, limit, **kw)


def claims_on(store: CountingStore, **settings: Any) -> Claims:
    registry = Registry()
    registry.register(HandlerSpec("noop", lambda payload: None))
    return Claims(
        store,
        "n1",
        SupervisorSettings(**settings),
        registry,
        StoreHealth(10.0),
        Pacing(),
    )


async def take(claims: Claims, wanted: int, held: Sequence[Job] = ()) -> list[Job]:
    claims.work_hint.set()  # as after a claim that got all it asked for
    jobs = await claims.take(wanted, lambda: held)
    assert jobs is not None
    return jobs


async def test_an_empty_limited_queue_costs_one_claim_until_a_submit_names_it() -> None:
    store = CountingStore()
    fleet = {"api": FleetLimits(global_concurrency=3, rate=Rate(10, 1.0))}
    claims = claims_on(store, fleet_limits=fleet)
    await store.submit_many([NewJob("noop")] * 50)
    assert len(await take(claims, 5)) == 5
    assert store.limited == ["api"]
    for _ in range(5):
        assert len(await take(claims, 5)) == 5
    assert store.limited == ["api"]  # not once more: it had nothing to give
    assert store.rest[-1] == ["api"]

    await store.submit_many([NewJob("noop", queue="other")])  # names another queue
    await take(claims, 5)
    assert store.limited == ["api"]
    await store.submit_many([NewJob("noop", queue="api")])
    jobs = await take(claims, 5)
    assert store.limited == ["api", "api"] and "api" in {j.queue for j in jobs}


async def test_with_the_limited_queues_empty_the_claim_is_one_statement() -> None:
    store = CountingStore()
    await store.set_queue_paused("held", True, reason=None, actor="test")
    claims = claims_on(
        store,
        fleet_limits={"api": FleetLimits(global_concurrency=3)},
        queue_limits={"slow": 2},
    )
    await store.submit_many([NewJob("noop")] * 20)
    await take(claims, 4)
    assert store.limited == ["api"] and store.own == ["slow"]
    jobs = await take(claims, 4)  # both limited queues are empty: left out of one statement
    assert len(jobs) == 4
    assert store.limited == ["api"] and store.own == ["slow"]
    assert store.rest[-1] == ["api", "held", "slow"]

    await store.submit_many([NewJob("noop", queue="slow")])  # it may have work now
    jobs = await take(claims, 4)
    assert store.own == ["slow", "slow"] and "slow" in {j.queue for j in jobs}


async def test_a_full_queue_is_claimed_again_once_one_of_its_jobs_here_ends() -> None:
    store = CountingStore()
    claims = claims_on(
        store, fleet_limits={"api": FleetLimits(global_concurrency=1)}, queue_limits={"slow": 1}
    )
    await store.submit_many([NewJob("noop", queue="api")] * 3)
    await store.submit_many([NewJob("noop", queue="slow")] * 3)
    held = await take(claims, 4)  # one of each: the global room and this node's
    assert sorted(j.queue for j in held) == ["api", "slow"]  # held by the node from now on
    assert store.limited == ["api"] and store.own == ["slow"]
    for _ in range(3):
        assert await take(claims, 4, held) == []
    assert store.limited == ["api"] and store.own == ["slow"]  # both full: no statement

    api = next(j for j in held if j.queue == "api")
    done = Outcome(api.id, api.attempts, OutcomeKind.COMPLETED, token=api.lease_token)
    await store.finish("n1", [done])
    held.remove(api)  # it ended here
    claims.work_hint.clear()
    claims.written()  # its end is written, as the write-back tells
    assert claims.work_hint.is_set()  # the room it freed is claimed on the next turn
    jobs = await take(claims, 4, held)
    assert [j.queue for j in jobs] == ["api"]
    assert store.limited == ["api", "api"] and store.own == ["slow"]  # slow is still full


async def test_a_drained_queue_is_looked_at_again_after_a_poll_interval_or_a_reading() -> None:
    store = CountingStore()
    claims = claims_on(store, queue_limits={"slow": 2}, poll_interval=0.05)
    await take(claims, 4)
    await take(claims, 4)
    assert store.own == ["slow"]
    claims.turns.read_again()  # the heartbeat's reading of the queues
    await take(claims, 4)
    assert store.own == ["slow", "slow"]
    # Jobs due later become claimable without a notification: once the poll interval has
    # passed, the queue is looked at again.
    deadline = time.monotonic() + 5.0
    while len(store.own) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        await take(claims, 4)
    assert store.own == ["slow", "slow", "slow"]


async def test_a_full_queue_opens_when_its_jobs_end_is_written_or_after_a_poll_interval() -> None:
    """Its job's end counts until it is written (the database counts the job running until
    then): a claim between the end and the write finds no room, and the queue opens once the
    write is accounted; a queue full of other nodes' jobs is looked at within a poll interval."""
    store = CountingStore()
    fleet = {"api": FleetLimits(global_concurrency=1)}
    claims = claims_on(store, fleet_limits=fleet, poll_interval=0.05)
    await store.submit_many([NewJob("noop", queue="api")] * 3)
    held: list[Job] = []  # the node's: running, then ended with its end not yet written
    held += await take(claims, 4, held)
    assert [j.queue for j in held] == ["api"] and store.limited == ["api"]  # now full
    [job] = held
    assert await take(claims, 4, held) == []
    assert store.limited == ["api"]  # full: no statement while its job is held
    claims.work_hint.clear()
    claims.written()  # a write-back came back, not with this job's end
    assert not claims.work_hint.is_set()
    done = Outcome(job.id, job.attempts, OutcomeKind.COMPLETED, token=job.lease_token)
    await store.finish("n1", [done])
    held.clear()
    claims.written()  # the write-back that carried it is accounted
    assert claims.work_hint.is_set()
    assert [j.queue for j in await take(claims, 4)] == ["api"]

    # Full of a job this node does not hold: looked at again once a poll interval has passed.
    before = len(store.limited)
    assert await take(claims, 4) == []
    assert len(store.limited) == before + 1
    deadline = time.monotonic() + 5.0
    while len(store.limited) < before + 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        await take(claims, 4)
    assert len(store.limited) == before + 2
