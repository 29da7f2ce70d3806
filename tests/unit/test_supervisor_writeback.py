"""The write-back's batches as the store sees them (jobd.supervisor.writeback.WriteBack): what
goes in which write, and in what order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from jobd.domain import Job, NewJob, State
from jobd.metrics import Metrics
from jobd.store import Outcome, OutcomeKind, Start, create_store
from jobd.store.base import Store
from jobd.supervisor.job_events import JobEvents
from jobd.supervisor.store_health import StoreHealth
from jobd.supervisor.writeback import WriteBack
from tests.eventually import eventually

NODE = "node-1"
AT = datetime(2030, 1, 1, tzinfo=UTC)


class Writes:
    """The store's finish, recording each write's outcomes and starts."""

    def __init__(self, store: Store):
        self.store = store
        self.calls: list[tuple[list[Outcome], list[Start]]] = []

    async def finish(self, outcomes: list[Outcome], starts: list[Start]) -> dict[int, State]:
        self.calls.append((outcomes, starts))
        return await self.store.finish(NODE, outcomes, starts)


async def claimed_job() -> tuple[Store, Job]:
    store = create_store("memory://")
    await store.open()
    await store.migrate()
    await store.submit(NewJob("echo", {}))
    [job] = await store.claim(NODE, 1, lease=30)
    return store, job


async def turns(n: int = 5) -> None:
    """Let the write-back's task run (it takes a batch as soon as it is woken)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_short_jobs_outcome_carries_its_start_in_one_write() -> None:
    """A start with nothing else to write waits for the job's outcome: one write, the outcome
    carrying the start, instead of the start's write and the outcome's queued behind it."""
    store, job = await claimed_job()
    writes = Writes(store)
    writeback = WriteBack(writes.finish, JobEvents(Metrics(), False), StoreHealth(10.0))
    running = asyncio.create_task(writeback.run())
    writeback.started(job, AT)
    await turns()  # the write-back is awake with the start alone
    writeback.record(Outcome(job.id, job.attempts, OutcomeKind.COMPLETED, result={}), job)
    writeback.close()
    await running
    [(outcomes, starts)] = writes.calls
    assert starts == [] and [o.started_at for o in outcomes] == [AT]
    done = await store.get(job.id)
    assert (done.state, done.started_at) == (State.COMPLETED, AT)
    await store.close()


async def test_a_start_alone_is_written_once_the_delay_is_up() -> None:
    store, job = await claimed_job()
    writes = Writes(store)
    writeback = WriteBack(
        writes.finish, JobEvents(Metrics(), False), StoreHealth(10.0), start_delay=0.01
    )
    running = asyncio.create_task(writeback.run())
    writeback.started(job, AT)
    await eventually(lambda: writes.calls, timeout=5)
    assert writes.calls == [([], [Start(job.id, job.attempts, job.lease_token, AT)])]
    assert (await store.get(job.id)).started_at == AT
    writeback.close()
    await running
    await store.close()
