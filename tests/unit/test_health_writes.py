"""Health sees writes that fail: a database that answers pings but refuses writes (a full
disk, a read-only database) makes `health` degraded, naming the error, until writes work."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobd.control import Operations
from jobd.domain import NewJob, State
from jobd.errors import Unavailable
from jobd.jobspec import JobSpec
from jobd.metrics import Metrics
from jobd.protocol import NoParams
from jobd.store import Outcome, OutcomeKind
from jobd.store.memory import MemoryStore
from jobd.supervisor.job_events import JobEvents
from jobd.supervisor.store_health import StoreHealth
from jobd.supervisor.writeback import WriteBack
from tests.eventually import eventually
from tests.unit.test_control import FakeSupervisor, make_registry

DISK_FULL = "store unavailable: could not extend file: No space left on device"


class FullStore(MemoryStore):
    """Answers every read and ping; refuses every write while `full`."""

    def __init__(self) -> None:
        super().__init__()
        self.full = True

    def _refuse(self) -> None:
        if self.full:
            raise Unavailable(DISK_FULL)

    async def submit_many(self, specs: Any) -> Any:
        self._refuse()
        return await super().submit_many(specs)

    async def finish(self, node: str, outcomes: Any, starts: Any = ()) -> Any:
        self._refuse()
        return await super().finish(node, outcomes, starts)


async def test_failing_result_writes_keep_health_degraded_though_pings_answer() -> None:
    store = FullStore()
    store.full = False
    job = (await store.submit(NewJob("echo", {}))).job
    (claimed,) = await store.claim("n", 1, lease=30)
    store.full = True
    health = StoreHealth(heartbeat_seconds=10)
    writeback = WriteBack(
        lambda batch, starts: store.finish("n", batch, starts),
        JobEvents(Metrics(), verbose=False),
        health,
    )
    writer = asyncio.create_task(writeback.run())
    writeback.record(Outcome(job.id, claimed.attempts, OutcomeKind.COMPLETED), claimed)

    async def failing() -> list[str] | None:
        return health.failing_writes() or None

    assert await eventually(failing, 5, "a failed write") == [f"write results: {DISK_FULL}"]
    await store.ping()
    health.fine()  # what the probe does when the ping answers
    assert health.answering()
    assert health.failing_writes() == [f"write results: {DISK_FULL}"]

    store.full = False

    async def written() -> bool:
        return (await store.get(job.id)).state is State.COMPLETED and not health.failing_writes()

    await eventually(written, 10, "the write to go through")
    writeback.close()
    await writer


async def test_health_names_the_supervisors_failing_writes() -> None:
    sup = FakeSupervisor(MemoryStore(), make_registry())
    ops = Operations(sup, store_timeout=0.5)
    sup.store_write_errors = [f"write results: {DISK_FULL}"]
    health = await ops.health(NoParams())
    assert health["status"] == "degraded" and health["store"] == "ok"
    assert health["problems"] == [f"store refuses writes: write results: {DISK_FULL}"]


@pytest.mark.parametrize(
    "refusal", [Unavailable(DISK_FULL), RuntimeError("cannot execute INSERT in a read-only tx")]
)
async def test_a_refused_submit_degrades_health_until_a_submit_is_stored(
    refusal: Exception,
) -> None:
    class Refusing(MemoryStore):
        refuse = True

        async def submit_many(self, specs: Any) -> Any:
            if self.refuse:
                raise refusal
            return await super().submit_many(specs)

    store = Refusing()
    ops = Operations(FakeSupervisor(store, make_registry()), store_timeout=0.5)
    with pytest.raises(type(refusal)):
        await ops.submit(JobSpec(type="echo", payload={}))
    health = await ops.health(NoParams())
    assert health["status"] == "degraded"
    assert f"store refuses writes: submit: {refusal}" in health["problems"]
    store.refuse = False
    await ops.submit(JobSpec(type="echo", payload={}))
    assert (await ops.health(NoParams()))["status"] == "ok"
