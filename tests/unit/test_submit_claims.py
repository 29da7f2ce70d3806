"""A claim sent with a submit (jobd.supervisor.submit_claims, docs/adr/0042): asked for only
when the supervisor would claim at once anyway, and what it took handed out as a claim's.
A supervisor on the memory store with one worker that is a real pipe: the test holds the
worker's end."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import pytest

from jobd import pipe
from jobd.domain import NewJob, State
from jobd.errors import Unavailable
from jobd.handlers import Registry
from jobd.handlers.registration import HandlerSpec
from jobd.store import ClaimRequest
from jobd.store.memory import MemoryStore
from jobd.supervisor.loop import Supervisor
from jobd.supervisor.settings import SupervisorSettings
from jobd.supervisor.submit_claims import SubmitClaims
from jobd.workers import WorkerProcess


@pytest.fixture
def pipes() -> Iterator[tuple[Connection, Connection]]:
    """(the supervisor's end, the worker's end) of the one worker's pipe."""
    ours, theirs = multiprocessing.Pipe()
    yield ours, theirs
    ours.close()
    theirs.close()


async def supervisor(ours: Connection, **settings: Any) -> Supervisor:
    registry = Registry()
    registry.register(HandlerSpec("noop", lambda ctx, payload: None))
    sup = Supervisor(MemoryStore(), registry, SupervisorSettings(workers=1, **settings))
    sup.workers[1] = WorkerProcess(1, multiprocessing.Process(), ours, ready=True)
    await sup.claims.paused.refresh()  # read once, as before the supervisor's first claim
    return sup


def request(sup: Supervisor, spec: NewJob) -> ClaimRequest | None:
    return SubmitClaims(sup, lambda fn: fn()).request(spec)


async def test_an_idle_node_asks_for_what_its_own_claim_would(
    pipes: tuple[Connection, Connection],
) -> None:
    sup = await supervisor(pipes[0])
    claim = request(sup, NewJob("noop"))
    assert claim == ClaimRequest(sup.node, 1, 30.0, types=["noop"], exclude_queues=None)


@pytest.mark.parametrize(
    "spec",
    [
        NewJob("noop", idempotency_key="k"),
        NewJob("noop", after=(1,)),
        NewJob("noop", run_at=datetime.now(UTC) + timedelta(hours=1)),
    ],
    ids=["keyed", "with-parents", "later"],
)
async def test_no_claim_for_a_job_the_claim_would_not_take_at_once(
    pipes: tuple[Connection, Connection], spec: NewJob
) -> None:
    assert request(await supervisor(pipes[0]), spec) is None


async def test_no_claim_when_the_supervisor_would_not_claim_now(
    pipes: tuple[Connection, Connection],
) -> None:
    sup = await supervisor(pipes[0])
    sup.workers[1].assigned[99] = (await sup.store.submit(NewJob("noop"))).job  # busy
    assert request(sup, NewJob("noop")) is None
    sup.workers[1].assigned.clear()
    sup.claimed.append((await sup.store.submit(NewJob("noop"))).job)  # claimed, waiting
    assert request(sup, NewJob("noop")) is None
    sup.claimed.clear()
    sup.draining = True
    assert request(sup, NewJob("noop")) is None
    sup.draining = False
    sup.claims.paused.known = False  # not read yet: a queue may be paused
    assert request(sup, NewJob("noop")) is None
    sup.claims.paused.known = True
    assert request(sup, NewJob("noop")) is not None
    sup.health.trouble("claim", Unavailable("store unavailable: down"))  # claims pause
    assert request(sup, NewJob("noop")) is None


async def test_no_claim_for_queues_with_limits(pipes: tuple[Connection, Connection]) -> None:
    sup = await supervisor(pipes[0], queue_limits={"reports": 1})
    assert request(sup, NewJob("noop")) is None


async def test_a_submit_with_a_claim_hands_the_job_to_the_idle_worker(
    pipes: tuple[Connection, Connection],
) -> None:
    ours, theirs = pipes
    sup = await supervisor(ours)
    submitted = await SubmitClaims(sup, lambda fn: fn()).submit(
        sup.store, NewJob("noop"), lambda s: None
    )
    assert submitted.job.state is State.PENDING  # the answer: the job as inserted
    assert theirs.poll(10)
    message = pipe.receive_from_supervisor(theirs)
    assert isinstance(message, pipe.Run)
    assert [r.job_id for r in message.jobs] == [submitted.job.id]
    assert list(sup.workers[1].assigned) == [submitted.job.id]
    assert (await sup.store.get(submitted.job.id)).lease_owner == sup.node


async def test_the_submit_is_told_before_its_claim_is_posted(
    pipes: tuple[Connection, Connection],
) -> None:
    """The control server posts the job's `submitted` event when told; posted after the
    claim, the supervisor could hand the job out and hear that it had started first, and a
    subscriber saw `started` before `submitted`."""
    sup = await supervisor(pipes[0])
    order: list[str] = []
    claims = SubmitClaims(sup, lambda fn: order.append("claim posted"))
    with_claim = await claims.submit(sup.store, NewJob("noop"), lambda s: order.append("told"))
    assert order == ["told", "claim posted"]
    assert with_claim.created
    order.clear()
    sup.draining = True  # no claim with this one
    alone = await claims.submit(sup.store, NewJob("noop"), lambda s: order.append(s.job.id))
    assert order == [alone.job.id]


async def test_jobs_taken_while_the_drain_began_are_given_back(
    pipes: tuple[Connection, Connection],
) -> None:
    sup = await supervisor(pipes[0])
    claim = request(sup, NewJob("noop"))
    assert claim is not None
    answer = await sup.store.submit_claiming(NewJob("noop"), claim)
    sup.draining = True
    sup.dispatch.took(answer.claimed)
    assert not sup.claimed and not sup.workers[1].assigned
    assert list(sup.writeback.held()) == [answer.submitted.job.id]  # released, to be written
